"""The demo LoRA learns from the sample photos: a trainer that does not learn fails here.

On fixed noise and timesteps, the UNet with the demo run's final LoRA must predict the noise in the training
photos' latents better than the base model (LoRA scale 0) does: that error is what training lowers. With a
trainer that does not learn (learning rate 0, a loss that ignores the images, a LoRA that is not saved or not
applied) both numbers are equal, since a LoRA starts as an exact no-op. The demo's tiny base model has random
weights, so the margin is small (measured 2026-12-01: 1.113 without, 1.055 with the LoRA, i.e. 5% lower); the
test asks for 2%. Whether faces appear (issue 15) needs a base model that makes pictures; see the closing notes.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def denoising_errors(layout, draws: int = 4, seed: int = 0) -> dict[float, float]:
    """The UNet's noise-prediction error on the run's training photos at LoRA scale 0 and 1 (same noise and times)."""
    from diffusers import DDPMScheduler

    from sdxlab.sample import Sampler
    from sdxlab.train.data import read_dataset

    pipe = Sampler.from_run(layout, model="tiny", device="cpu").pipe
    size = Image.open(next((layout.dataset / "images").glob("*.png"))).size[0]
    examples = read_dataset(layout.dataset, size, need_masks=False)
    pixels = (
        torch.stack(
            [torch.from_numpy(np.asarray(Image.open(e.image).convert("RGB"), dtype=np.float32)) for e in examples]
        ).permute(0, 3, 1, 2)
        / 127.5
        - 1
    )
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        latents = pipe.vae.encode(pixels).latent_dist.mean * pipe.vae.config.scaling_factor
        latents = latents.repeat(draws, 1, 1, 1)
        count = len(latents)
        embeds, _, pooled, _ = pipe.encode_prompt(examples[0].caption, device="cpu", do_classifier_free_guidance=False)
        noise = torch.randn(latents.shape, generator=generator)
        steps = torch.randint(0, 1000, (count,), generator=generator)
        noisy = DDPMScheduler.from_config(pipe.scheduler.config).add_noise(latents, noise, steps)
        conditioning = {
            "text_embeds": pooled.expand(count, -1),
            "time_ids": torch.tensor([[size, size, 0, 0, size, size]], dtype=torch.float32).expand(count, -1),
        }
        errors = {}
        for scale in (0.0, 1.0):
            predicted = pipe.unet(
                noisy,
                steps,
                encoder_hidden_states=embeds.expand(count, -1, -1),
                added_cond_kwargs=conditioning,
                cross_attention_kwargs={"scale": scale},
            ).sample
            errors[scale] = float(((predicted - noise) ** 2).mean())
    return errors


def test_the_lora_fits_the_sample_photos_better_than_the_base_model(demo_run, one_torch_thread):
    errors = denoising_errors(demo_run)
    assert errors[1.0] < 0.98 * errors[0.0], (
        f"denoising error on the training photos: {errors[1.0]:.4f} with the LoRA, {errors[0.0]:.4f} without"
    )
