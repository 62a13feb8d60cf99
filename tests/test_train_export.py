"""The exported LoRA files: what diffusers, AUTOMATIC1111 and ComfyUI will find in them.

A peft LoRA with random non-zero weights is put on the tiny SDXL (UNet and both text encoders), exported, and
loaded back into fresh pipelines through diffusers' own `load_lora_weights`, from both the diffusers file and
the kohya file. The kohya key names are also checked against the layout kohya's sd-scripts and the WebUIs use
for the real SDXL-base-1.0 UNet.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from sdxlab.models import load_architecture, load_pipeline
from sdxlab.train.export import (
    cost_line,
    export_lora,
    load_embeddings,
    lora_pair_count,
    read_metadata,
    sgm_module_name,
    to_kohya,
    training_metadata,
)

PROMPT = "a photo of sks person"
UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
TRAIN_CONFIG = {"train_steps": 500, "learning_rate": 1e-4, "rank": 4, "resolution": 128, "subject_token": "sks"}


def lora_configs():
    from peft import LoraConfig

    # alpha != rank and a per-module alpha, so a file that lost the scaling would give different pictures
    unet = LoraConfig(
        r=4, lora_alpha=8, alpha_pattern={"to_k": 2}, target_modules=UNET_TARGETS, init_lora_weights="gaussian"
    )
    text = LoraConfig(r=2, lora_alpha=3, target_modules=TEXT_TARGETS, init_lora_weights="gaussian")
    return unet, text


def generate(pipe) -> np.ndarray:
    generator = torch.Generator().manual_seed(0)
    return pipe(PROMPT, num_inference_steps=2, height=128, width=128, generator=generator, output_type="np").images


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir):
    """A tiny pipeline with a random LoRA on all three models, its pictures, and the exported files."""
    from peft import get_peft_model_state_dict

    pipe = load_pipeline(tiny_model_dir, device="cpu")
    unet_config, text_config = lora_configs()
    pipe.unet.add_adapter(unet_config)
    pipe.text_encoder.add_adapter(text_config)
    pipe.text_encoder_2.add_adapter(text_config)
    torch.manual_seed(1)
    with torch.no_grad():  # peft starts B at zero (no effect); random B makes the LoRA change the output
        for model in (pipe.unet, pipe.text_encoder, pipe.text_encoder_2):
            for name, parameter in model.named_parameters():
                if "lora_B" in name:
                    parameter.normal_(0, 0.05)
    embeddings = {
        "clip_l": torch.randn(2, pipe.text_encoder.config.hidden_size),
        "clip_g": torch.randn(2, pipe.text_encoder_2.config.hidden_size),
    }
    state_dicts = [get_peft_model_state_dict(model) for model in (pipe.unet, pipe.text_encoder, pipe.text_encoder_2)]
    out_dir = tmp_path_factory.mktemp("lora")
    files = export_lora(
        out_dir,
        "me",
        *state_dicts,
        embeddings=embeddings,
        metadata=training_metadata(TRAIN_CONFIG, dataset_hash="d41d8cd9", comment="test export"),
        unet_lora_config=unet_config,
        text_encoder_lora_config=text_config,
        text_encoder_2_lora_config=text_config,
        unet_config=pipe.unet.config,
    )
    return {
        "files": files,
        "images": generate(pipe),
        "state_dicts": state_dicts,
        "embeddings": embeddings,
        "out_dir": out_dir,
        "unet_config": pipe.unet.config,
    }


@pytest.fixture(scope="module")
def base_images(tiny_model_dir):
    return generate(load_pipeline(tiny_model_dir, device="cpu"))


def test_diffusers_file_reproduces_the_trained_lora(trained, base_images, tiny_model_dir):
    pipe = load_pipeline(tiny_model_dir, device="cpu")
    pipe.load_lora_weights(str(trained["files"].diffusers))
    images = generate(pipe)
    assert np.abs(images - base_images).max() > 0.05, "the LoRA file did not change the pictures"
    np.testing.assert_allclose(images, trained["images"], atol=1e-5)


def test_diffusers_file_has_peft_keys_for_all_three_models(trained):
    keys = load_file(str(trained["files"].diffusers)).keys()
    assert {key.split(".")[0] for key in keys} == {"unet", "text_encoder", "text_encoder_2"}
    assert all(re.search(r"\.lora_[AB]\.weight$", key) for key in keys)
    # text encoder 1 in the CLIP layout every loader knows, whatever transformers version trained it
    assert all(key.startswith("text_encoder.text_model.") for key in keys if key.startswith("text_encoder."))


def test_kohya_file_has_webui_keys_and_the_same_pairs(trained):
    files = trained["files"]
    tensors = load_file(str(files.kohya))
    modules = {key.split(".")[0] for key in tensors}
    for module in modules:
        assert module.startswith(("lora_unet_", "lora_te1_", "lora_te2_")), module
        assert "." not in module
        assert {f"{module}.lora_down.weight", f"{module}.lora_up.weight", f"{module}.alpha"} <= tensors.keys()
    assert len(tensors) == 3 * len(modules)
    expected_pairs = sum(len(state_dict) // 2 for state_dict in trained["state_dicts"])
    assert lora_pair_count(files.kohya) == lora_pair_count(files.diffusers) == expected_pairs
    # the UNet in the original (SGM) layout, as kohya's sd-scripts names SDXL LoRAs
    assert "lora_unet_input_blocks_3_1_transformer_blocks_0_attn1_to_q" in modules
    assert "lora_unet_output_blocks_0_1_transformer_blocks_0_ff_net_0_proj" in modules
    assert "lora_te1_text_model_encoder_layers_0_self_attn_q_proj" in modules
    assert "lora_te2_text_model_encoder_layers_2_self_attn_out_proj" in modules
    # kohya's scale is alpha / rank: one alpha per model (peft's lora_alpha); the module with its own alpha
    # (to_k: 2 instead of 8) carries the difference in its up weights
    unet_alphas = {tensors[f"{module}.alpha"].item() for module in modules if module.startswith("lora_unet_")}
    assert unet_alphas == {8}
    assert tensors["lora_te2_text_model_encoder_layers_0_self_attn_v_proj.alpha"].item() == 3
    peft_unet = trained["state_dicts"][0]
    to_k = "mid_block.attentions.0.transformer_blocks.0.attn1.to_k.lora_B.weight"
    torch.testing.assert_close(
        tensors["lora_unet_middle_block_1_transformer_blocks_0_attn1_to_k.lora_up.weight"], peft_unet[to_k] * 2 / 8
    )


def test_kohya_file_gives_the_same_pictures_as_the_diffusers_file(trained, base_images, tiny_model_dir):
    pipe = load_pipeline(tiny_model_dir, device="cpu")
    pipe.load_lora_weights(str(trained["files"].kohya))
    images = generate(pipe)
    assert np.abs(images - base_images).max() > 0.05
    np.testing.assert_allclose(images, trained["images"], atol=1e-4)


def test_files_carry_the_training_configuration(trained):
    for path in (trained["files"].diffusers, trained["files"].kohya, trained["files"].embeddings):
        metadata = read_metadata(path)
        assert json.loads(metadata["sdxlab_config"]) == TRAIN_CONFIG
        assert metadata["sdxlab_dataset_hash"] == "d41d8cd9"
        assert metadata["ss_base_model_version"] == "sdxl_base_v1-0"
        assert metadata["ss_network_dim"] == "4"
        assert metadata["ss_network_alpha"] == "8"
        assert metadata["ss_training_comment"] == "test export"
        assert metadata["ss_max_train_steps"] == "500"
    # diffusers' own adapter metadata survives next to ours
    adapter = json.loads(read_metadata(trained["files"].diffusers)["lora_adapter_metadata"])
    assert adapter["unet.lora_alpha"] == 8


def test_embeddings_round_trip_into_both_text_encoders(trained, tiny_model_dir):
    pipe = load_pipeline(tiny_model_dir, device="cpu")
    tokens = ["<s0>", "<s1>"]
    for _ in range(2):  # loading twice (a notebook cell run again) overwrites instead of failing
        load_embeddings(pipe, trained["files"].embeddings, tokens)
    for key, tokenizer, text_encoder in (
        ("clip_l", pipe.tokenizer, pipe.text_encoder),
        ("clip_g", pipe.tokenizer_2, pipe.text_encoder_2),
    ):
        ids = tokenizer.convert_tokens_to_ids(tokens)
        assert tokenizer("<s0><s1>", add_special_tokens=False).input_ids == ids
        rows = text_encoder.get_input_embeddings().weight[ids]
        torch.testing.assert_close(rows, trained["embeddings"][key])


def test_every_file_of_one_export_loads_and_agrees(trained, tiny_model_dir):
    files = trained["files"]
    paths = [files.diffusers, files.kohya, files.embeddings]
    metadata = [read_metadata(path) for path in paths]
    assert len({m["sdxlab_export_id"] for m in metadata}) == 1  # one export id: they belong together
    assert len({m["sdxlab_config"] for m in metadata}) == 1 and len({m["sdxlab_dataset_hash"] for m in metadata}) == 1
    diffusers, kohya, embeddings = (load_file(str(path)) for path in paths)
    # the same LoRA in both layouts: every peft pair has its kohya pair, with the same down weights
    peft_unet = trained["state_dicts"][0]
    assert (
        lora_pair_count(files.kohya)
        == lora_pair_count(files.diffusers)
        == sum(len(s) // 2 for s in trained["state_dicts"])
    )
    for key, value in peft_unet.items():
        torch.testing.assert_close(diffusers[f"unet.{key}"], value)
    to_q = "mid_block.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight"
    torch.testing.assert_close(
        kohya["lora_unet_middle_block_1_transformer_blocks_0_attn1_to_q.lora_down.weight"], peft_unet[to_q]
    )
    for key in ("clip_l", "clip_g"):
        torch.testing.assert_close(embeddings[key], trained["embeddings"][key])


def _export_changed(trained, out_dir):
    changed = [{key: value * 2 for key, value in state.items()} for state in trained["state_dicts"]]
    embeddings = {key: value + 1 for key, value in trained["embeddings"].items()}
    return export_lora(out_dir, "me", *changed, embeddings=embeddings, unet_config=trained["unet_config"])


@pytest.mark.parametrize("failing", ["_kohya", "_emb"])
def test_failed_export_leaves_every_previous_file_whole(trained, monkeypatch, failing):
    import safetensors.torch

    out_dir = trained["out_dir"]
    before = {path.name: path.read_bytes() for path in out_dir.iterdir()}
    assert {"me.safetensors", "me_kohya.safetensors", "me_emb.safetensors"} <= set(before)
    real_save_file = safetensors.torch.save_file

    def save_half_then_fail(tensors, filename, metadata=None):
        if failing in str(filename):
            with open(filename, "wb") as handle:
                handle.write(b"half a file")
            raise OSError("disk full")
        return real_save_file(tensors, filename, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", save_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        _export_changed(trained, out_dir)
    after = {path.name: path.read_bytes() for path in out_dir.iterdir()}
    assert set(after) == set(before), f"stray files left behind: {set(after) - set(before)}"
    for name, data in before.items():  # not one file of the failed export replaced its predecessor
        assert after[name] == data, f"{name} was replaced by a failed export"


def test_export_failing_while_files_are_renamed_into_place_puts_the_old_ones_back(trained, monkeypatch):
    import os

    out_dir = trained["out_dir"]
    before = {path.name: path.read_bytes() for path in out_dir.iterdir()}
    real_replace = os.replace
    placed = []

    def replace_then_fail(source, target):
        if str(target).endswith("me_kohya.safetensors") and str(source).endswith("/me_kohya.safetensors"):
            raise OSError("device went away")
        placed.append(target)
        return real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace_then_fail)
    with pytest.raises(OSError, match="device went away"):
        _export_changed(trained, out_dir)
    assert any(str(target).endswith("me.safetensors") for target in placed)  # the diffusers file had been swapped
    after = {path.name: path.read_bytes() for path in out_dir.iterdir()}
    assert after == before


def test_non_finite_weights_are_refused_before_anything_is_written(trained, tmp_path):
    broken = dict(trained["state_dicts"][0])
    first_key = next(iter(broken))
    broken[first_key] = torch.full_like(broken[first_key], float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        export_lora(tmp_path, "broken", broken, unet_config=trained["unet_config"])
    assert list(tmp_path.iterdir()) == []


def test_sdxl_names_follow_the_kohya_and_webui_layout():
    # The table of SDXL-base-1.0 block names used by kohya's sd-scripts and AUTOMATIC1111.
    sdxl = load_architecture()["unet"]
    expected = {
        "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q": "input_blocks.4.1.transformer_blocks.0.attn1.to_q",
        "down_blocks.2.attentions.1.transformer_blocks.9.attn2.to_out.0": "input_blocks.8.1.transformer_blocks.9.attn2.to_out.0",
        "down_blocks.1.attentions.1.proj_in": "input_blocks.5.1.proj_in",
        "mid_block.attentions.0.transformer_blocks.3.ff.net.2": "middle_block.1.transformer_blocks.3.ff.net.2",
        "up_blocks.0.attentions.2.transformer_blocks.0.attn1.to_k": "output_blocks.2.1.transformer_blocks.0.attn1.to_k",
        "up_blocks.1.attentions.0.proj_out": "output_blocks.3.1.proj_out",
        "down_blocks.0.resnets.1.conv1": "input_blocks.2.0.in_layers.2",
        "down_blocks.0.downsamplers.0.conv": "input_blocks.3.0.op",
        "mid_block.resnets.1.time_emb_proj": "middle_block.2.emb_layers.1",
        "up_blocks.2.resnets.2.conv_shortcut": "output_blocks.8.0.skip_connection",
        "up_blocks.1.upsamplers.0.conv": "output_blocks.5.2.conv",
        "time_embedding.linear_2": "time_embed.2",
        "add_embedding.linear_1": "label_emb.0.0",
        "conv_in": "input_blocks.0.0",
        "conv_out": "out.2",
    }
    assert {module: sgm_module_name(module, sdxl) for module in expected} == expected


def test_full_size_sdxl_kohya_names_read_back_by_diffusers():
    """Every attention module of the real SDXL UNet, renamed to kohya keys, maps back to itself in diffusers' reader."""
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from diffusers.utils.state_dict_utils import convert_unet_state_dict_to_peft

    with torch.device("meta"):  # the real architecture without allocating 2.6 B parameters
        unet = UNet2DConditionModel.from_config(load_architecture()["unet"])
    modules = [
        name
        for name, module in unet.named_modules()
        if isinstance(module, torch.nn.Linear)
        and re.search(r"(to_[qkv]|to_out\.0|proj_in|proj_out|ff\.net\.0\.proj|ff\.net\.2)$", name)
    ]
    # 70 transformer blocks with 8 attention and 2 feed-forward projections each, 11 attentions with proj_in/out
    assert len(modules) == 70 * 10 + 11 * 2
    peft_state = {}
    for name in modules:
        peft_state[f"{name}.lora_A.weight"] = torch.zeros(1, 1)
        peft_state[f"{name}.lora_B.weight"] = torch.zeros(1, 1)
    kohya, _ = to_kohya({"unet": peft_state}, {"unet": None}, unet.config)
    read_back, alphas = StableDiffusionXLPipeline.lora_state_dict(kohya, unet_config=unet.config)
    read_back = convert_unet_state_dict_to_peft({key.removeprefix("unet."): value for key, value in read_back.items()})
    assert set(read_back) == set(peft_state)
    assert len(alphas) == len(modules)


def test_cost_line_names_time_and_price():
    assert cost_line(3600, 2.0) == "Training took 60 min 0 s; at $2.00 per GPU hour that is $2.00."
    assert "gpu_price_per_hour" in cost_line(95, None) and "1 min 35 s" in cost_line(95, None)
