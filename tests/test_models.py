"""The model loader and the tiny offline SDXL: real structure, real tokenizer, clear refusals."""

from __future__ import annotations

import os

import pytest
import torch

from sdxlab.models import (
    ModelLoadError,
    Placement,
    choose_placement,
    clip_vocabulary,
    load_pipeline,
    tiny_sdxl,
)


@pytest.fixture(scope="module")
def tiny_pipe(tiny_model_dir):
    return load_pipeline(tiny_model_dir, device="cpu")


def test_tiny_model_is_built_once_and_reused(tiny_model_dir):
    weights = next(tiny_model_dir.glob("unet/*.safetensors"))
    built_at = weights.stat().st_mtime_ns
    assert tiny_sdxl() == tiny_model_dir
    assert weights.stat().st_mtime_ns == built_at


def test_tiny_model_has_sdxl_structure(tiny_pipe):
    from diffusers import StableDiffusionXLPipeline

    assert isinstance(tiny_pipe, StableDiffusionXLPipeline)
    unet, te1, te2 = tiny_pipe.unet.config, tiny_pipe.text_encoder.config, tiny_pipe.text_encoder_2.config
    assert unet.addition_embed_type == "text_time"
    # cross-attention reads both encoders' hidden states side by side, as in SDXL (768 + 1280 = 2048)
    assert unet.cross_attention_dim == te1.hidden_size + te2.hidden_size
    # added conditioning: pooled text_encoder_2 projection plus six time ids (1280 + 6 * 256 = 2816)
    assert unet.projection_class_embeddings_input_dim == te2.projection_dim + 6 * unet.addition_time_embed_dim
    # the pretrained toy: 4x latent downsampling (SDXL: 8x) with its own measured latent scale, 4 latent channels
    assert 2 ** (len(tiny_pipe.vae.config.block_out_channels) - 1) == 4
    assert tiny_pipe.vae.config.latent_channels == unet.in_channels == 4
    assert 0.1 < tiny_pipe.vae.config.scaling_factor < 10
    assert tiny_pipe.scheduler.config.prediction_type == "v_prediction"


def test_tiny_model_carries_the_shipped_pretrained_weights(tiny_pipe):
    from sdxlab import models, tiny_base

    fresh = models.build_tiny_pipeline()
    tiny_base.load_base(fresh.vae, fresh.unet)
    for name, module in (("unet", tiny_pipe.unet), ("vae", tiny_pipe.vae)):
        stored = dict(getattr(fresh, name).state_dict())
        for key, value in module.state_dict().items():
            torch.testing.assert_close(value, stored[key], msg=f"{name}.{key}")


def test_tiny_model_uses_the_real_clip_tokenizer(tiny_pipe):
    vocabulary, merges = clip_vocabulary()
    assert len(vocabulary) == 49408 and len(merges) == 48894
    for tokenizer in (tiny_pipe.tokenizer, tiny_pipe.tokenizer_2):
        assert tokenizer.model_max_length == 77
        # ids of OpenAI's CLIP tokenizer: <start> a photo of <end>
        assert tokenizer("a photo of").input_ids == [49406, 320, 1125, 539, 49407]
    assert tiny_pipe.tokenizer_2.pad_token == "!"  # SDXL's second tokenizer pads with "!"


def test_load_pipeline_draws_the_same_image_for_a_seed_and_another_for_another_seed(tiny_pipe, tiny_model_dir):
    import numpy as np

    def draw(pipe, seed):
        generator = torch.Generator().manual_seed(seed)
        return pipe(
            "a photo of sks person", num_inference_steps=2, height=64, width=64, generator=generator, output_type="np"
        ).images[0]

    first = draw(tiny_pipe, 0)
    assert first.shape == (64, 64, 3) and np.isfinite(first).all()
    np.testing.assert_array_equal(draw(tiny_pipe, 0), first)  # the same pipeline, the same seed
    np.testing.assert_array_equal(draw(load_pipeline(tiny_model_dir, device="cpu"), 0), first)  # a fresh load too
    assert np.abs(draw(tiny_pipe, 1) - first).mean() > 1e-3  # another seed, another picture


def test_placement_defaults_on_cpu_and_fp16_vae_guard():
    placement = choose_placement("cpu")
    assert placement.dtype == torch.float32
    # SDXL's VAE overflows to NaN (black images) in fp16, so fp16 pipelines keep it in fp32
    assert Placement(torch.device("cuda"), torch.float16).vae_dtype == torch.float32
    assert Placement(torch.device("cuda"), torch.bfloat16).vae_dtype == torch.bfloat16


@pytest.mark.parametrize("name", ["model.ckpt", "model.bin", "weights.pt"])
def test_pickle_files_are_refused_with_the_reason(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"not really a pickle")
    with pytest.raises(ModelLoadError, match="arbitrary code.*allow_pickle=True"):
        load_pipeline(path)


def test_missing_path_gives_one_clear_line(tmp_path):
    with pytest.raises(ModelLoadError) as error:
        load_pipeline(tmp_path / "no-such-folder")
    message = str(error.value)
    assert "does not exist" in message and "\n" not in message


def test_incomplete_folder_names_what_is_missing(tmp_path):
    (tmp_path / "model_index.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="not a complete diffusers SDXL folder"):
        load_pipeline(tmp_path)


def test_unreachable_hub_id_says_how_to_pass_a_local_path(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # as on a machine without a network: fail fast, never download
    with pytest.raises(ModelLoadError) as error:
        load_pipeline("nobody-here/no-such-sdxl-model")
    message = str(error.value)
    assert "nobody-here/no-such-sdxl-model" in message and "local" in message and "\n" not in message


def test_cache_location_follows_environment(monkeypatch, tmp_path):
    from sdxlab.models import cache_dir

    monkeypatch.setenv("SDXLAB_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path
    assert os.fspath(cache_dir()) == str(tmp_path)


def _copy_with_pickle_component(tiny_model_dir, target, component):
    """A link copy of the tiny model in which `component` holds only a (fake) pickle weight file."""
    import shutil

    shutil.copytree(tiny_model_dir, target, copy_function=os.link)
    for weights in (target / component).glob("*.safetensors"):
        weights.unlink()
    (target / component / "diffusion_pytorch_model.bin").write_bytes(b"pickle payload")
    return target


@pytest.mark.parametrize("component", ["unet", "vae", "text_encoder", "text_encoder_2"])
def test_folder_with_pickle_only_weights_names_the_component_and_allow_pickle(tmp_path, tiny_model_dir, component):
    folder = _copy_with_pickle_component(tiny_model_dir, tmp_path / "model", component)
    with pytest.raises(ModelLoadError) as error:
        load_pipeline(folder, device="cpu")
    message = str(error.value)
    assert component in message and "pickle" in message and "allow_pickle=True" in message
    assert "network" not in message and "hub" not in message and "\n" not in message


def test_single_file_config_folder_is_rebuilt_when_incomplete(monkeypatch, tmp_path):
    from sdxlab import models

    monkeypatch.setenv("SDXLAB_CACHE", str(tmp_path))
    half = tmp_path / "sdxl-base-config"
    (half / "unet").mkdir(parents=True)
    (half / "model_index.json").write_text("{}")  # what an interrupted first use of an older version left
    folder = models._single_file_config()
    for relative in models.SDXL_CONFIG_FILES:
        assert (tmp_path / "sdxl-base-config" / relative).is_file(), relative
    assert '"_class_name": "StableDiffusionXLPipeline"' in (half / "model_index.json").read_text()
    assert folder == str(half)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sdxl-base-config"]


def test_interrupted_single_file_config_build_leaves_nothing_behind(monkeypatch, tmp_path):
    from sdxlab import models

    monkeypatch.setenv("SDXLAB_CACHE", str(tmp_path))
    real = models.write_clip_tokenizer
    calls = []

    def interrupted(folder, pad_token):
        calls.append(folder)
        if len(calls) == 2:  # the first tokenizer is written, the second never is
            raise KeyboardInterrupt
        real(folder, pad_token)

    monkeypatch.setattr(models, "write_clip_tokenizer", interrupted)
    with pytest.raises(KeyboardInterrupt):
        models._single_file_config()
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(models, "write_clip_tokenizer", real)
    models._single_file_config()  # the next use builds it whole
    assert (tmp_path / "sdxl-base-config" / "tokenizer_2" / "vocab.json").is_file()
