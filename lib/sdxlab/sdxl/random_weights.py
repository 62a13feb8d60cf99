"""A randomly initialised SDXL with the exact architecture of SDXL-base-1.0, for speed and memory benchmarks.

Development machines cannot download the real weights, but speed and memory depend only on the shapes: this
pipeline has SDXL-base-1.0's UNet (2.57 B parameters), VAE and both CLIP text encoders, built from the
configurations kept in the package (`sdxlab.models.load_architecture`). Its pictures are noise and its loss
values mean nothing; its samples/s and peak memory are those of the real model.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from sdxlab.models import Placement, hide_torchvision_notice, load_architecture, place_pipeline, write_sdxl_config


def build_random_sdxl(device: str | torch.device = "cuda", dtype: torch.dtype = torch.bfloat16, seed: int = 0):
    """A `StableDiffusionXLPipeline` with SDXL-base-1.0's architecture and random weights, on `device`.

    The weights are created directly on the device (seconds on a GPU, instead of minutes of CPU
    initialisation), then cast to `dtype`; the VAE stays in fp32 under fp16, as `sdxlab.models` places it.
    """
    hide_torchvision_notice()
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from diffusers.utils import logging as diffusers_logging
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    architecture = load_architecture()
    device = torch.device(device)
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory(prefix="sdxlab-random-sdxl-") as folder:
        write_sdxl_config(Path(folder), architecture)  # tokenizer folders with the real CLIP vocabulary
        tokenizer = CLIPTokenizer.from_pretrained(Path(folder) / "tokenizer")
        tokenizer_2 = CLIPTokenizer.from_pretrained(Path(folder) / "tokenizer_2")
    with device:
        unet = UNet2DConditionModel.from_config(architecture["unet"])
        vae = AutoencoderKL.from_config(architecture["vae"])
        text_encoder = CLIPTextModel(CLIPTextConfig(**_text_config(architecture["text_encoder"])))
        text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**_text_config(architecture["text_encoder_2"])))
    quiet = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # casting a model built in code is right here; diffusers warns anyway
    try:
        for component in (unet, vae, text_encoder, text_encoder_2):
            component.to(dtype=dtype).eval()
    finally:
        diffusers_logging.set_verbosity(quiet)
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=EulerDiscreteScheduler.from_config(architecture["scheduler"]),
        force_zeros_for_empty_prompt=architecture["model_index"]["force_zeros_for_empty_prompt"],
    )
    return place_pipeline(pipe, Placement(device=device, dtype=dtype))


def parameter_count(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def _text_config(config: dict) -> dict:
    return {key: value for key, value in config.items() if key != "architectures"}
