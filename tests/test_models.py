"""The model loader and the tiny offline SDXL: real structure, real tokenizer, clear refusals."""

from __future__ import annotations

import os

import pytest
import torch

from sdxlab.models import (
    TINY_RESOLUTION,
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
    # SDXL's VAE class with fewer levels (2x instead of 8x downsampling, so a 128 px face survives), its latent
    # scaling factor measured on the pretraining pictures as SDXL's 0.13025 was; the UNet's native size fits it
    assert type(tiny_pipe.vae).__name__ == "AutoencoderKL" and tiny_pipe.vae.config.latent_channels == unet.in_channels == 4
    assert unet.sample_size * tiny_pipe.vae_scale_factor == TINY_RESOLUTION
    assert 0.2 < tiny_pipe.vae.config.scaling_factor < 5


def test_tiny_model_carries_the_pretrained_weights_not_random_ones(tiny_pipe):
    from sdxlab.models import build_tiny_pipeline

    fresh = build_tiny_pipeline(seed=0)
    for name in ("unet", "vae"):
        trained, random = getattr(tiny_pipe, name).state_dict(), getattr(fresh, name).state_dict()
        assert trained.keys() == random.keys()
        changed = sum(not torch.allclose(trained[key].float(), random[key].float()) for key in trained)
        assert changed > 0.9 * len(trained), f"the {name} looks untrained"
    # the text encoders stay random (the docs say so): exactly the freshly built ones
    assert all(torch.equal(a, b) for a, b in zip(tiny_pipe.text_encoder.state_dict().values(),
                                                 fresh.text_encoder.state_dict().values(), strict=True))


def test_tiny_vae_round_trip_keeps_a_face_findable(tiny_pipe):
    """The sample subject was never in the pretraining pictures, yet her face survives the VAE for dlib."""
    import numpy as np
    import skimage.data
    from PIL import Image

    from sdxlab import faces

    photo = Image.fromarray(skimage.data.astronaut()).crop((120, 0, 330, 210)).resize((TINY_RESOLUTION,) * 2)
    pixels = torch.from_numpy(np.asarray(photo, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
    with torch.no_grad():
        decoded = tiny_pipe.vae.decode(tiny_pipe.vae.encode(pixels).latent_dist.mean).sample.clamp(-1, 1)
    psnr = 10 * torch.log10(4 / ((decoded - pixels) ** 2).mean())
    assert psnr > 24, f"the tiny VAE reconstructs a face at only {psnr:.1f} dB"
    round_trip = Image.fromarray(((decoded[0].permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8))
    assert faces.main_face(round_trip) is not None


def test_tiny_model_uses_the_real_clip_tokenizer(tiny_pipe):
    vocabulary, merges = clip_vocabulary()
    assert len(vocabulary) == 49408 and len(merges) == 48894
    for tokenizer in (tiny_pipe.tokenizer, tiny_pipe.tokenizer_2):
        assert tokenizer.model_max_length == 77
        # ids of OpenAI's CLIP tokenizer: <start> a photo of <end>
        assert tokenizer("a photo of").input_ids == [49406, 320, 1125, 539, 49407]
    assert tiny_pipe.tokenizer_2.pad_token == "!"  # SDXL's second tokenizer pads with "!"


def test_load_pipeline_generates_an_image(tiny_pipe):
    generator = torch.Generator().manual_seed(0)
    image = tiny_pipe("a photo of sks person", num_inference_steps=2, height=64, width=64, generator=generator).images[0]
    assert image.size == (64, 64)


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
