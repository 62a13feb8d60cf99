"""The sample stage's library: prompts, PNG parameters, LoRA loading and scales, seeds, sample files, the playground.

Everything runs on the tiny random-weight SDXL with LoRA files made here (random, non-zero LoRA weights, so a
LoRA visibly changes the output). Pixel values are noise: the tests compare images with each other, never
with fixed numbers.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from sdxlab.layout import RunLayout
from sdxlab.models import ModelLoadError, load_pipeline
from sdxlab.sample import (
    CSV_COLUMNS,
    Sampler,
    fill_subject,
    format_parameters,
    lora_scale_grid,
    parse_parameters,
    prompt_seed_grid,
    read_parameters,
    read_samples,
    save_samples,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STEPS = 3  # enough denoising steps to exercise the scheduler; the tiny model does not need more
TOKENS = ["<s0>", "<s1>"]


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def max_difference(first, second) -> int:
    return int(np.abs(pixels(first) - pixels(second)).max())


@pytest.fixture(scope="module")
def lora_files(tmp_path_factory, tiny_model_dir):
    """A LoRA on the tiny UNet and first text encoder, exported by the trainer's exporter in both formats, plus embeddings."""
    from peft import LoraConfig, get_peft_model_state_dict

    from sdxlab.train.export import export_lora

    pipe = load_pipeline("tiny")
    unet_config = LoraConfig(
        r=4, lora_alpha=4, init_lora_weights="gaussian", target_modules=["to_q", "to_k", "to_v", "to_out.0"]
    )
    text_config = LoraConfig(
        r=4, lora_alpha=8, init_lora_weights="gaussian", target_modules=["q_proj", "k_proj", "v_proj", "out_proj"]
    )
    pipe.unet.add_adapter(unet_config)
    pipe.text_encoder.add_adapter(text_config)
    generator = torch.Generator().manual_seed(0)
    for name, parameter in [*pipe.unet.named_parameters(), *pipe.text_encoder.named_parameters()]:
        if "lora_B" in name:  # peft starts lora_B at zero (a no-op LoRA); make it matter
            parameter.data = torch.randn(parameter.shape, generator=generator) * 0.3
    embeddings = {"clip_l": torch.randn(2, 32, generator=generator), "clip_g": torch.randn(2, 64, generator=generator)}
    folder = tmp_path_factory.mktemp("lora")
    files = export_lora(
        folder,
        "subject",
        get_peft_model_state_dict(pipe.unet),
        text_encoder_lora=get_peft_model_state_dict(pipe.text_encoder),
        embeddings=embeddings,
        unet_lora_config=unet_config,
        text_encoder_lora_config=text_config,
        unet_config=pipe.unet.config,
    )
    return files


@pytest.fixture(scope="module")
def sampler(tiny_model_dir) -> Sampler:
    """One loaded tiny pipeline shared by the tests (each test loads or unloads the LoRA it needs)."""
    return Sampler(load_pipeline("tiny"), subject_token="sks", class_word="person", model="tiny")


@pytest.fixture(scope="module")
def base_images(sampler):
    sampler.unload_lora()
    return sampler.generate(["a photo of {subject}"], [1, 2], steps=STEPS, progress=False)


# --- prompts ---------------------------------------------------------------------------------------------------


def test_fill_subject_expands_placeholder_and_token():
    assert fill_subject("a photo of {subject}", "sks", "person") == "a photo of sks person"
    assert fill_subject("{subject} person at the beach", "sks", "person") == "sks person at the beach"
    assert fill_subject("a photo of sks person", "sks", "person") == "a photo of sks person"
    assert (
        fill_subject("a photo of sks person, asks nothing", "sks", "person", TOKENS)
        == "a photo of <s0><s1> person, asks nothing"
    )
    assert fill_subject("{subject} and {subject}", "sks", "person", TOKENS) == "<s0><s1> person and <s0><s1> person"
    assert fill_subject("a red car", "sks", "person", TOKENS) == "a red car"
    once = fill_subject("a photo of {subject}, sks smiling", "sks", "woman", TOKENS)
    assert fill_subject(once, "sks", "woman", TOKENS) == once  # stored prompts re-create their images


# --- parameters in PNGs ------------------------------------------------------------------------------------------


def test_parameters_text_round_trip_keeps_awkward_values(tmp_path):
    from PIL import Image

    params = {
        "prompt": "sks person: portrait, 50mm\nsecond line «ü»",
        "negative_prompt": 'blurry, "bad" hands',
        "seed": 4294967295,
        "steps": 7,
        "guidance": 6.5,
        "width": 64,
        "height": 96,
        "scheduler": "dpmpp_2m_karras",
        "lora_scale": 0.7,
        "lora_file": "lora/subject, v2.safetensors",
        "checkpoint": "step_000100",
        "model": "C:\\models\\sdxl.safetensors",
        "batch_size": 3,
        "batch_pos": 2,
    }
    text = format_parameters(params)
    assert "Sampler: DPM++ 2M, Schedule type: Karras" in text and "CFG scale: 6.5" in text
    target = tmp_path / "image.png"
    from sdxlab.sample import write_png

    write_png(target, Image.new("RGB", (8, 8)), params)
    parsed = read_parameters(target)
    assert {key: parsed[key] for key in params} == params


def test_parses_what_automatic1111_writes():
    text = (
        "masterpiece, a photo of a cat\nNegative prompt: lowres, bad anatomy\n"
        "Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 123, Size: 512x768, "
        'Model hash: 31e35c80fc, Model: sd_xl_base_1.0, Lora hashes: "me: 8a9b", Version: v1.7.0'
    )
    parsed = parse_parameters(text)
    assert parsed["prompt"] == "masterpiece, a photo of a cat"
    assert parsed["negative_prompt"] == "lowres, bad anatomy"
    assert (parsed["steps"], parsed["guidance"], parsed["seed"]) == (20, 7.0, 123)
    assert (parsed["width"], parsed["height"], parsed["scheduler"]) == (512, 768, "dpmpp_2m_karras")
    assert parsed["extra"]["Model hash"] == "31e35c80fc" and parsed["extra"]["Lora hashes"] == "me: 8a9b"
    assert parse_parameters(text.replace("DPM++ 2M Karras", "DPM++ 2M SDE"))["scheduler"] is None


# A faithful re-implementation of how AUTOMATIC1111 reads a picture's parameters back: the regexes and steps of
# `parse_generation_parameters` (modules/infotext_utils.py) and of the Lora extension's `infotext_pasted`
# (extensions-builtin/Lora/scripts/lora_script.py), which turns `<lora:NAME:` into the file found by its hash.
A1111_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
A1111_IMAGE_SIZE = re.compile(r"^(\d+)x(\d+)$")
A1111_LORA = re.compile("<lora:([^:]+):")
A1111_EXTRA_NETWORK = re.compile(r"<(\w+):([^>]+)>")  # modules/extra_networks.py: what is applied from a prompt


def a1111_parse(text: str) -> dict:
    res, prompt, negative, done_with_prompt = {}, "", "", False
    *lines, lastline = text.strip().split("\n")
    if len(A1111_PARAM.findall(lastline)) < 3:
        lines.append(lastline)
        lastline = ""
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            done_with_prompt = True
            line = line[16:].strip()
        if done_with_prompt:
            negative += ("" if negative == "" else "\n") + line
        else:
            prompt += ("" if prompt == "" else "\n") + line
    res["Prompt"], res["Negative prompt"] = prompt, negative
    for key, value in A1111_PARAM.findall(lastline):
        if value[0] == '"' and value[-1] == '"':
            value = json.loads(value)
        size = A1111_IMAGE_SIZE.match(value)
        if size is not None:
            res[f"{key}-1"], res[f"{key}-2"] = size.group(1), size.group(2)
        else:
            res[key] = value
    res.setdefault("Schedule type", "Automatic")
    return res


def a1111_paste_loras(res: dict, files_by_short_hash: dict[str, str]) -> str:
    """The prompt after A1111's Lora extension replaced each `<lora:alias:` by the name of the file with that hash."""
    hashes = [item.strip().split(":", 1) for item in res.get("Lora hashes", "").split(",") if item.strip()]
    hashes = {name.strip().replace(",", ""): value.strip() for name, value in hashes}

    def replace(match):
        found = files_by_short_hash.get(hashes.get(match.group(1), ""))
        return f"<lora:{found}:" if found else match.group(0)

    return A1111_LORA.sub(replace, res["Prompt"])


def addnet_hash(path: Path) -> str:
    """sha256 of a safetensors file's bytes after its header: kohya's and A1111's LoRA hash."""
    data = path.read_bytes()
    return hashlib.sha256(data[8 + int.from_bytes(data[:8], "little") :]).hexdigest()


def test_automatic1111_reads_back_the_lora_tag_and_hash_and_the_schedule(sampler, lora_files, tmp_path):
    from PIL import Image

    sampler.load_lora(lora_files.diffusers)
    made = sampler.generate(
        ["a portrait of {subject}"],
        [5],
        steps=STEPS,
        lora_scale=0.7,
        scheduler="dpmpp_2m",
        negative_prompt="blurry",
        progress=False,
    )
    made += sampler.generate(
        ["a portrait of {subject}"],
        [5],
        steps=STEPS,
        lora_scale=0.7,
        scheduler="dpmpp_2m_karras",
        negative_prompt="blurry",
        progress=False,
    )
    rows = save_samples(made, tmp_path, name="batch")
    plain, karras = (a1111_parse(Image.open(tmp_path / file).info["parameters"]) for file in rows["file"])
    # The LoRA is named as the file A1111 loads (the kohya file beside the diffusers one) with the weight used...
    kohya_name = lora_files.kohya.stem
    assert plain["Prompt"] == f"a portrait of sks person <lora:{kohya_name}:0.7>"
    assert [match.groups() for match in A1111_EXTRA_NETWORK.finditer(plain["Prompt"])] == [
        ("lora", f"{kohya_name}:0.7")
    ]
    # ...and A1111's hash of that file, so A1111 finds it under whatever name it was saved.
    short_hash = addnet_hash(lora_files.kohya)[:12]
    assert plain["Lora hashes"] == f"{kohya_name}: {short_hash}"
    assert a1111_paste_loras(plain, {short_hash: "me_v1"}) == "a portrait of sks person <lora:me_v1:0.7>"
    # The schedule actually used, never left to A1111 1.9's Karras default for DPM++ 2M.
    assert (plain["Sampler"], plain["Schedule type"]) == ("DPM++ 2M", "Uniform")
    assert (karras["Sampler"], karras["Schedule type"]) == ("DPM++ 2M", "Karras")
    assert (plain["Steps"], plain["Seed"], plain["CFG scale"], plain["Negative prompt"]) == (
        str(STEPS),
        "5",
        "5.0",
        "blurry",
    )
    assert (plain["Size-1"], plain["Size-2"]) == tuple(str(side) for side in sampler.native_size)
    assert "Model hash" not in plain  # the tiny model is a diffusers folder: A1111 has no checkpoint to match
    # sdxlab itself reads its own prompt back without the tag, and the scheduler from the schedule type.
    stored = read_parameters(tmp_path / rows["file"][0])
    assert stored["prompt"] == "a portrait of sks person" and stored["scheduler"] == "dpmpp_2m"
    assert (stored["lora_name"], stored["lora_hash"]) == (kohya_name, short_hash)
    assert read_parameters(tmp_path / rows["file"][1])["scheduler"] == "dpmpp_2m_karras"


def test_a_kohya_or_foreign_lora_is_named_and_hashed_as_itself(sampler, lora_files, tmp_path):
    from safetensors.torch import load_file, save_file

    sampler.load_lora(lora_files.kohya)
    params = sampler.generate(["{subject}"], [1], steps=1, progress=False)[0].params
    assert (params["lora_name"], params["lora_hash"]) == (lora_files.kohya.stem, addnet_hash(lora_files.kohya)[:12])
    # A file that carries kohya's precomputed `sshs_model_hash` is known to A1111 by that hash.
    tagged = tmp_path / "tagged.safetensors"
    save_file(load_file(str(lora_files.kohya)), str(tagged), metadata={"sshs_model_hash": "f" * 64})
    sampler.load_lora(tagged)
    params = sampler.generate(["{subject}"], [1], steps=1, progress=False)[0].params
    assert (params["lora_name"], params["lora_hash"]) == ("tagged", "f" * 12)
    sampler.unload_lora()
    params = sampler.generate(["{subject}"], [1], steps=1, progress=False)[0].params
    text = format_parameters(params)
    assert "<lora:" not in text and "Lora hashes" not in text


def test_model_hash_is_a1111s_short_hash_of_a_single_checkpoint_file(sampler, tmp_path):
    checkpoint = tmp_path / "my_sdxl.safetensors"
    checkpoint.write_bytes(b"not really weights, but hashed the same way" * 1000)
    assert (
        Sampler(sampler.pipe, model=str(checkpoint)).model_hash
        == hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:10]
    )
    assert Sampler(sampler.pipe, model="tiny").model_hash is None  # a diffusers folder
    assert Sampler(sampler.pipe, model="stabilityai/stable-diffusion-xl-base-1.0").model_hash is None  # a hub id
    params = {
        "prompt": "x",
        "seed": 1,
        "steps": 2,
        "guidance": 5.0,
        "width": 64,
        "height": 64,
        "scheduler": "euler",
        "model": str(checkpoint),
        "model_hash": "0123456789",
    }
    parsed = a1111_parse(format_parameters(params))
    assert (
        parsed["Model hash"] == "0123456789"
        and parse_parameters(format_parameters(params))["model_hash"] == "0123456789"
    )


def test_png_parameters_recreate_the_image_exactly(sampler, lora_files, tmp_path):
    from PIL import Image

    sampler.load_lora(lora_files.diffusers)
    made = sampler.generate(
        ["a portrait of {subject}, soft light"],
        [7, 8],
        negative_prompt="blurry",
        steps=STEPS,
        guidance=6.0,
        lora_scale=0.7,
        scheduler="dpmpp_2m_karras",
        batch_size=2,
        progress=False,
    )
    rows = save_samples(made, tmp_path, name="batch")
    assert list(read_samples(tmp_path).columns) == CSV_COLUMNS
    for row, original in zip(rows.itertuples(), made, strict=True):
        params = read_parameters(tmp_path / row.file)
        assert params["lora_file"] == str(lora_files.diffusers) and params["lora_scale"] == 0.7
        assert (
            params["prompt"] == row.prompt
            and f"{row.prompt} <lora:" in Image.open(tmp_path / row.file).info["parameters"]
        )
        assert (params["batch_size"], params["batch_pos"]) == (2, row.Index)
        again = sampler.recreate(params)
        assert max_difference(again.image, original.image) == 0
        assert max_difference(Image.open(tmp_path / row.file).convert("RGB"), original.image) == 0


def test_recreate_refuses_an_image_made_with_another_lora(sampler, lora_files, base_images):
    sampler.load_lora(lora_files.diffusers)
    with pytest.raises(ValueError, match="made with LoRA 'none'"):
        sampler.recreate(base_images[0].params)


# --- seeds and batches -------------------------------------------------------------------------------------------


def test_images_do_not_depend_on_batch_size(sampler, lora_files):
    sampler.load_lora(lora_files.diffusers)
    prompts, seeds = ["a photo of {subject}", "{subject} in the snow"], [3, 4, 5]
    one_by_one = sampler.generate(prompts, seeds, steps=STEPS, batch_size=1, progress=False)
    batched = sampler.generate(prompts, seeds, steps=STEPS, batch_size=4, progress=False)
    assert [item.params["seed"] for item in batched] == [3, 4, 5, 3, 4, 5]
    for single, together in zip(one_by_one, batched, strict=True):
        assert max_difference(single.image, together.image) <= 1  # float rounding only, never another picture
    assert max_difference(batched[0].image, batched[1].image) > 10  # a different seed is a different picture


# --- LoRA files and scales -----------------------------------------------------------------------------------


@pytest.mark.parametrize("layout_name", ["diffusers", "kohya"])
def test_both_lora_formats_load_and_change_the_output(sampler, lora_files, base_images, layout_name):
    sampler.load_lora(getattr(lora_files, layout_name))
    with_lora = sampler.generate(["a photo of {subject}"], [1, 2], steps=STEPS, progress=False)
    assert max_difference(with_lora[0].image, base_images[0].image) > 10
    sampler.load_lora(lora_files.diffusers if layout_name == "kohya" else lora_files.kohya)
    other_format = sampler.generate(["a photo of {subject}"], [1, 2], steps=STEPS, progress=False)
    assert max_difference(with_lora[0].image, other_format[0].image) <= 1  # the same LoRA in either layout


def test_scale_zero_is_the_base_model_and_sweeps_do_not_drift(sampler, lora_files, base_images):
    sampler.load_lora(lora_files.kohya)
    prompt_seed = (["a photo of {subject}"], [1, 2])
    first_full = sampler.generate(*prompt_seed, steps=STEPS, lora_scale=1.0, progress=False)
    for scale in (0.4, 0.0, 0.7, 1.0, 0.0):
        result = sampler.generate(*prompt_seed, steps=STEPS, lora_scale=scale, progress=False)
    assert max_difference(result[0].image, base_images[0].image) == 0
    assert result[0].params["lora_scale"] == 0.0
    again_full = sampler.generate(*prompt_seed, steps=STEPS, lora_scale=1.0, progress=False)
    assert max_difference(again_full[0].image, first_full[0].image) == 0  # fused weights restored exactly


def test_fused_and_unfused_lora_give_the_same_images(sampler, lora_files):
    sampler.load_lora(lora_files.diffusers)
    fused = sampler.generate(["a photo of {subject}"], [1], steps=STEPS, lora_scale=0.6, progress=False)
    sampler.fuse_lora = False
    try:
        unfused = sampler.generate(["a photo of {subject}"], [1], steps=STEPS, lora_scale=0.6, progress=False)
    finally:
        sampler.fuse_lora = True
    assert max_difference(fused[0].image, unfused[0].image) <= 1


def test_pickle_lora_is_refused_unless_allowed(sampler, lora_files, tmp_path, base_images):
    from safetensors.torch import load_file

    pickled = tmp_path / "subject.bin"
    torch.save(load_file(str(lora_files.diffusers)), pickled)
    with pytest.raises(ModelLoadError, match="pickle-based files .* can run arbitrary code"):
        sampler.load_lora(pickled)
    sampler.load_lora(pickled, allow_pickle=True)
    with_lora = sampler.generate(["a photo of {subject}"], [1], steps=STEPS, progress=False)
    assert max_difference(with_lora[0].image, base_images[0].image) > 10


def test_a_missing_or_foreign_lora_file_gets_one_clear_sentence(sampler, tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        sampler.load_lora(tmp_path / "nope.safetensors")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelLoadError, match="not a .safetensors file"):
        sampler.load_lora(tmp_path / "notes.txt")


def test_bad_settings_are_refused_before_any_work(sampler):
    with pytest.raises(ValueError, match="multiples of 8"):
        sampler.generate(["x"], [1], width=100, steps=1, progress=False)
    with pytest.raises(ValueError, match="Unknown scheduler 'ddim'"):
        sampler.generate(["x"], [1], scheduler="ddim", steps=1, progress=False)
    with pytest.raises(TypeError, match="list of prompts"):
        sampler.generate("x", [1], steps=1, progress=False)


def test_cuda_graphs_are_refused_off_the_gpu_and_the_wrapper_falls_back_to_eager(sampler, base_images):
    from sdxlab.sample.cuda_graphs import GraphedUNet

    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA graphs need the pipeline on a CUDA GPU"):
            sampler.enable_cuda_graphs()
    sampler.unload_lora()
    wrapper = GraphedUNet(sampler.pipe.unet)
    wrapper.install()  # on the CPU every call takes the eager path: same pictures
    try:
        again = sampler.generate(["a photo of {subject}"], [1, 2], steps=STEPS, progress=False)
    finally:
        wrapper.uninstall()
    assert "forward" not in vars(sampler.pipe.unet) and wrapper.graphs == {}
    assert max_difference(again[0].image, base_images[0].image) == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need an NVIDIA GPU")
def test_cuda_graph_replay_matches_eager_on_the_gpu(lora_files):
    gpu = Sampler(load_pipeline("tiny", device="cuda", dtype="fp32"), model="tiny")
    gpu.load_lora(lora_files.diffusers)
    eager = gpu.generate(["a photo of {subject}"], [1, 2], steps=STEPS, lora_scale=0.8, batch_size=2, progress=False)
    gpu.enable_cuda_graphs()
    graphed = gpu.generate(["a photo of {subject}"], [1, 2], steps=STEPS, lora_scale=0.8, batch_size=2, progress=False)
    rescaled = gpu.generate(["a photo of {subject}"], [1, 2], steps=STEPS, lora_scale=0.0, batch_size=2, progress=False)
    gpu.disable_cuda_graphs()
    base = gpu.generate(["a photo of {subject}"], [1, 2], steps=STEPS, lora_scale=0.0, batch_size=2, progress=False)
    assert max_difference(graphed[0].image, eager[0].image) <= 1
    assert max_difference(rescaled[0].image, base[0].image) <= 1  # a new LoRA scale re-captures the graphs


# --- loading a run -----------------------------------------------------------------------------------------------


def test_from_run_without_training_uses_the_base_model_and_says_so(tmp_path):
    layout = RunLayout.for_run("untrained", tmp_path)
    untrained = Sampler.from_run(layout, model="tiny", device="cpu")
    assert untrained.lora is None
    assert "No trained LoRA" in untrained.describe() and "train stage has not run" in untrained.describe()
    image = untrained.generate(["a photo of {subject}"], [1], steps=1, lora_scale=1.0, progress=False)[0]
    assert image.params["lora_file"] == "" and image.params["lora_scale"] == 0.0


def test_from_run_loads_the_trained_lora_and_pivotal_tokens(tmp_path, lora_files, base_images):
    layout = RunLayout.for_run("trained", tmp_path)
    layout.ensure(layout.lora)
    for path in (lora_files.diffusers, lora_files.kohya, lora_files.embeddings):
        (layout.lora / path.name).write_bytes(path.read_bytes())
    config = {
        "model": "tiny",
        "subject_token": "sks",
        "class_word": "person",
        "lora_name": "subject",
        "lora_file": lora_files.diffusers.name,
        "kohya_file": lora_files.kohya.name,
        "embeddings_file": lora_files.embeddings.name,
        "tokens": TOKENS,
    }
    (layout.lora / "train_config.json").write_text(json.dumps(config))
    trained = Sampler.from_run(layout, device="cpu")
    assert trained.lora is not None and trained.tokens == TOKENS
    assert trained.fill("a photo of {subject}") == "a photo of <s0><s1> person"
    made = trained.generate(["a photo of {subject}"], [1], steps=STEPS, lora_scale=0.0, progress=False)[0]
    assert made.params["lora_file"] == f"lora/{lora_files.diffusers.name}" and made.params["checkpoint"] == "final"
    assert made.params["prompt"] == "a photo of <s0><s1> person"
    # at scale 0 only the trained tokens differ from the base model's prompt, and they change the picture
    assert max_difference(made.image, base_images[0].image) > 10
    kohya = Sampler.from_run(layout, device="cpu", lora_file=lora_files.kohya.name)
    assert kohya.lora.label == f"lora/{lora_files.kohya.name}" and kohya.tokens == TOKENS


def test_training_checkpoints_are_sampled_and_the_final_lora_comes_back(sampler, lora_files, tmp_path):
    from sdxlab.sample import checkpoint_grid, checkpoint_loras, generate_per_checkpoint

    layout = RunLayout.for_run("checkpoints", tmp_path)
    layout.ensure(layout.lora)
    (layout.lora / "train_config.json").write_text(
        json.dumps({"lora_name": "subject", "lora_file": "subject.safetensors"})
    )
    for step, source in ((20, lora_files.kohya), (100, lora_files.diffusers)):
        folder = layout.ensure(layout.lora / "checkpoints" / f"step_{step:06d}")
        (folder / "subject.safetensors").write_bytes(source.read_bytes())
        (folder / "checkpoint.json").write_text("{}")
    layout.ensure(layout.lora / "checkpoints" / "step_000200")  # unfinished: no checkpoint.json, never sampled
    found = checkpoint_loras(layout, "all")
    assert [path.parent.name for path in found] == ["step_000020", "step_000100"]
    assert checkpoint_loras(layout, []) == []
    with pytest.raises(ValueError, match="No checkpoint step_000300 .* available: step_000020, step_000100"):
        checkpoint_loras(layout, ["step_000300"])

    sampler.load_lora(lora_files.diffusers)
    final = sampler.generate(["a photo of {subject}"], [1], steps=STEPS, progress=False)
    over_training = generate_per_checkpoint(sampler, found, ["a photo of {subject}"], [1], steps=STEPS, progress=False)
    assert [item.params["checkpoint"] for item in over_training] == ["step_000020", "step_000100"]
    assert sampler.lora.path == lora_files.diffusers  # the sampler's own LoRA is back
    assert max_difference(over_training[1].image, final[0].image) <= 1  # step_000100 holds the same weights
    grid = checkpoint_grid(over_training[::-1] + final)
    assert [axis.get_title().split("\n")[0] for axis in grid.axes if axis.get_title()] == [
        "step_000020",
        "step_000100",
        "final",
    ]


# --- sample files and grids --------------------------------------------------------------------------------------


def test_saving_a_set_again_replaces_only_that_set(base_images, tmp_path):
    save_samples(base_images, tmp_path, name="batch")
    save_samples(base_images[:1], tmp_path, name="sweep")
    save_samples(base_images[1:], tmp_path, name="batch")
    index = read_samples(tmp_path)
    assert sorted(index["file"]) == ["batch_000_seed2.png", "sweep_000_seed1.png"]
    assert sorted(path.name for path in tmp_path.glob("*.png")) == sorted(index["file"])
    assert index["negative_prompt"].tolist() == ["", ""]  # empty stays empty, not NaN
    with pytest.raises(ValueError, match="plain word"):
        save_samples(base_images, tmp_path, name="my_set")


def test_grids_are_labelled_with_prompts_seeds_and_scales(base_images):
    from sdxlab.sample.sampler import GeneratedImage

    grid = prompt_seed_grid(base_images, title="prompts × seeds")
    titles = [axis.get_title() for axis in grid.axes if axis.get_title()]
    assert titles == ["a photo of sks person\nseed 1", "a photo of sks person\nseed 2"]
    sweep = [
        GeneratedImage(item.image, {**item.params, "lora_scale": scale}) for scale in (1.0, 0.0) for item in base_images
    ]
    grid = lora_scale_grid(sweep, title="sweep")
    titles = [axis.get_title() for axis in grid.axes if axis.get_title()]
    assert titles[:2] == ["LoRA scale 0\nseed 1", "LoRA scale 1\nseed 1"]  # weaker to stronger, one row per seed
    assert grid._suptitle.get_text() == "sweep"


# --- the playground ----------------------------------------------------------------------------------------------


@pytest.fixture()
def playground(sampler, lora_files, tmp_path):
    from sdxlab.sample.playground import Playground

    sampler.load_lora(lora_files.diffusers)
    return Playground(sampler, prompt="a photo of {subject}", steps=2, images=2, save_to=tmp_path / "playground")


def test_generate_click_shows_images_saves_them_and_grows_the_history(playground, tmp_path):
    seen_while_running = []
    real_generate = playground.sampler.generate

    def watching_generate(*args, **kwargs):
        seen_while_running.append((playground.busy, playground.generate_button.disabled))
        return real_generate(*args, **kwargs)

    playground.sampler.generate = watching_generate
    try:
        playground.generate_button.click()
        playground.seed.value = 40
        playground.generate_button.click()
    finally:
        del playground.sampler.generate
    assert seen_while_running == [(True, True), (True, True)]
    assert not playground.busy and not playground.generate_button.disabled
    assert len(playground.history) == 2 and len(playground.history_strip.children) == 2
    assert len(playground.output.children) == 2  # the latest click's two pictures
    assert playground.progress.value == playground.progress.max == 2 * 2
    assert "Done" in playground.status.value
    saved = read_samples(tmp_path / "playground")
    assert sorted(saved["seed"]) == [0, 1, 40, 41]


def test_empty_prompt_is_an_error_in_the_panel(playground):
    playground.prompt.value = "   "
    assert playground.generate() is None
    assert "sdxlab-error" in playground.status.value and "Type a prompt" in playground.status.value
    assert playground.history == [] and not playground.generate_button.disabled


def test_out_of_memory_is_a_sentence_in_the_panel_not_a_traceback(playground, monkeypatch):
    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(playground.sampler, "generate", out_of_memory)
    playground.generate_button.click()
    assert "Out of GPU memory" in playground.status.value and "fewer images" in playground.status.value
    assert not playground.busy and not playground.generate_button.disabled and playground.history == []


def test_history_entry_loads_its_settings_back_and_last_seed_is_reusable(playground):
    playground.seed_mode.value = "random"
    playground.guidance.value = 3.5
    first = playground.generate()
    used_seed = first[0].params["seed"]
    playground.prompt.value, playground.guidance.value, playground.steps.value = "something else", 9.0, 5
    playground.image_count.value = 1
    playground.reuse_seed_button.click()
    assert (playground.seed.value, playground.seed_mode.value) == (used_seed, "fixed")
    playground.seed.value = 3
    playground.history_strip.children[-1].children[1].click()  # the oldest card's "load" button
    assert playground.prompt.value == "a photo of {subject}"
    assert (playground.guidance.value, playground.steps.value, playground.image_count.value) == (3.5, 2, 2)
    assert (playground.seed.value, playground.seed_mode.value) == (used_seed, "fixed")
    again = playground.generate()
    assert max_difference(again[0].image, first[0].image) == 0


def test_without_a_frontend_the_playground_prints_a_clear_note(sampler, capsys):
    from sdxlab.sample.playground import NO_FRONTEND_MESSAGE, has_live_frontend, show_playground

    assert not has_live_frontend()  # pytest has no kernel, hence no frontend
    playground = show_playground(sampler, prompt="x")
    assert NO_FRONTEND_MESSAGE in capsys.readouterr().out
    assert playground._repr_mimebundle_()["text/plain"] == NO_FRONTEND_MESSAGE
    assert "sdxlab-generate" in playground.generate_button._dom_classes


def test_samples_folder_name_is_the_layout_s(tmp_path):
    assert RunLayout.for_run("x", tmp_path).samples == Path(tmp_path) / "x" / "samples"
