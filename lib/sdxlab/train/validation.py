"""Validation images: the same prompts and seeds rendered at every checkpoint, to watch the subject appear.

The prompts are encoded with the text encoders once (or again while the text side still trains), so
rendering needs only the UNet and, for the last step, the VAE.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from sdxlab import files
from sdxlab.train.conditioning import encode_prompts


@dataclass
class ValidationImage:
    step: int
    prompt: str
    seed: int
    image: object  # PIL.Image
    path: Path


def fill_prompt(template: str, tokens: list[str], class_word: str) -> str:
    """`{subject}` becomes the subject's token(s) and `{class_word}` the class word."""
    return template.replace("{subject}", "".join(tokens)).replace("{class_word}", class_word)


@torch.no_grad()
def encode_validation_prompts(pipe, prompts: list[str], dtype: torch.dtype):
    """(prompt_embeds, pooled, negative_embeds, negative_pooled) for the prompts, on the UNet's device."""
    device = pipe.unet.device
    embeds, pooled = encode_prompts(
        [pipe.tokenizer, pipe.tokenizer_2], [pipe.text_encoder, pipe.text_encoder_2], prompts
    )
    if pipe.config.force_zeros_for_empty_prompt:  # SDXL's negative for "no negative prompt" is all zeros
        negative, negative_pooled = torch.zeros_like(embeds), torch.zeros_like(pooled)
    else:
        negative, negative_pooled = encode_prompts(
            [pipe.tokenizer, pipe.tokenizer_2], [pipe.text_encoder, pipe.text_encoder_2], [""] * len(prompts)
        )
    return tuple(t.to(device, dtype) for t in (embeds, pooled, negative, negative_pooled))


@torch.no_grad()
def render_validation(
    pipe,
    step: int,
    prompts: list[str],
    encoded,
    seeds: list[int],
    resolution: int,
    inference_steps: int,
    guidance: float,
    folder: Path,
    scheduler: str | None = None,
) -> list[ValidationImage]:
    """Render every prompt × seed with the UNet as it is now; save them under `folder/step_NNNNNN/`.

    `scheduler` is an sdxlab sampler name (`sdxlab.sample.sampler.make_scheduler`); None keeps the pipeline's own.
    """
    from sdxlab.sample.sampler import make_scheduler

    embeds, pooled, negative, negative_pooled = encoded
    own_scheduler = pipe.scheduler
    if scheduler is not None:
        pipe.scheduler = make_scheduler(scheduler, own_scheduler.config)
    device = pipe.unet.device
    vae_device = pipe.vae.device
    pipe.vae.to(device)  # the VAE waits on the CPU between checkpoints when training on a GPU
    was_training = pipe.unet.training
    pipe.unet.eval()
    rendered = []
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            for index, prompt in enumerate(prompts):
                generators = [torch.Generator(device).manual_seed(seed) for seed in seeds]
                images = pipe(
                    prompt_embeds=embeds[index : index + 1],
                    pooled_prompt_embeds=pooled[index : index + 1],
                    negative_prompt_embeds=negative[index : index + 1],
                    negative_pooled_prompt_embeds=negative_pooled[index : index + 1],
                    num_images_per_prompt=len(seeds),
                    generator=generators,
                    num_inference_steps=inference_steps,
                    guidance_scale=guidance,
                    height=resolution,
                    width=resolution,
                ).images
                for seed, image in zip(seeds, images, strict=True):
                    path = folder / f"step_{step:06d}" / f"prompt{index}_seed{seed}.png"
                    files.write_image(path, image)
                    rendered.append(ValidationImage(step=step, prompt=prompt, seed=seed, image=image, path=path))
    finally:
        pipe.scheduler = own_scheduler
        pipe.unet.train(was_training)
        pipe.vae.to(vae_device)
    return rendered


def validate_checkpoint(pipe, config, step: int, text, so_far: list, work_dir: Path) -> None:
    """The validation pictures of checkpoint `step` (every prompt × train_validation_seeds, encoded by the text
    side as it is now: `text` is the training's `pivotal.TextPhases`) added to `so_far`, and the grid of all so
    far rewritten. The main process calls it."""
    prompts = text.validation_prompts
    if not (prompts and config.validation_seeds):
        return
    so_far.extend(
        render_validation(
            pipe,
            step,
            prompts,
            text.validation(step),
            config.validation_seeds,
            config.resolution,
            config.validation_steps,
            config.validation_guidance,
            work_dir / "validation",
            config.validation_scheduler,
        )
    )
    write_validation_grid(work_dir, so_far)


def write_validation_grid(output_dir: Path, validation: list) -> Path:
    from sdxlab.plots import close
    from sdxlab.train.plots import validation_over_time

    figure = validation_over_time(validation)
    path = files.save_figure(output_dir / "validation_grid.png", figure)
    close(figure)
    return path
