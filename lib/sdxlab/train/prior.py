"""Prior preservation: class images ("a photo of a person") generated once by the base model itself.

Training on them alongside the subject keeps the LoRA from turning every person into the subject
(DreamBooth's prior-preservation loss). They are generated before any adapter is attached, cached in
`<lora folder>/class_images/` with a small manifest, and reused by later runs with the same model, prompt,
resolution and seed.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tqdm.auto import tqdm

from sdxlab import files
from sdxlab.train.config import TrainConfig
from sdxlab.train.data import Example

MANIFEST = "class_images.json"


def class_examples(pipe, config: TrainConfig, folder: Path, device: torch.device, batch_size: int = 4) -> list[Example]:
    """The class images as training examples, generating the missing ones with the base model."""
    recipe = {
        "model": str(config.model),
        "prompt": config.class_prompt_text,
        "resolution": config.resolution,
        "seed": config.seed,
        "steps": config.class_inference_steps,
    }
    manifest = folder / MANIFEST
    if not manifest.is_file() or json.loads(manifest.read_text()).get("recipe") != recipe:
        for old in folder.glob("class_*.png"):  # made by another recipe: not ours to reuse
            old.unlink()
    paths = [folder / f"class_{index:04d}.png" for index in range(config.class_images)]
    missing = [index for index, path in enumerate(paths) if not path.is_file()]
    for start in tqdm(
        range(0, len(missing), batch_size), desc="class images", disable=not config.progress or not missing
    ):
        chunk = missing[start : start + batch_size]
        generators = [torch.Generator(device).manual_seed(config.seed * 1_000_003 + index) for index in chunk]
        images = pipe(
            prompt=[config.class_prompt_text] * len(chunk),
            num_inference_steps=config.class_inference_steps,
            height=config.resolution,
            width=config.resolution,
            generator=generators,
        ).images
        for index, image in zip(chunk, images, strict=True):
            files.write_image(paths[index], image)
    files.write_json(manifest, {"recipe": recipe, "count": config.class_images})
    return [
        Example(image=path, caption=config.class_prompt_text, mask=None, crop_box=None, original_size=None)
        for path in paths
    ]


def class_examples_for(pipe, config: TrainConfig, accelerator, device) -> list[Example]:
    """The class images this training uses (none without prior preservation): one process generates them, the
    others wait and find them cached."""
    if not config.prior_preservation:
        return []
    with accelerator.main_process_first():
        return class_examples(pipe, config, config.output_dir / "class_images", device)
