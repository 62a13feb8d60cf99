"""Sampling the training checkpoints: the same prompt and seeds with the LoRA as it was at each saved step.

The train stage writes `lora/checkpoints/step_NNNNNN/` with the LoRA exported at that step
(`<lora_name>.safetensors`, and `<lora_name>_emb.safetensors` with pivotal tuning). Pictures made from them
carry the folder name in their `checkpoint` parameter, so 04_evaluate can plot likeness over training.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sdxlab.layout import RunLayout

if TYPE_CHECKING:  # annotations only: sampler.py imports this module
    from sdxlab.sample.sampler import GeneratedImage, Sampler

STEP_FOLDER = re.compile(r"^step_(\d+)$")
COMPLETE_MARKER = "checkpoint.json"  # written last by the trainer: folders without it are unfinished
UNFINISHED_SUFFIX = ".unfinished"  # a training in progress writes lora.unfinished/ (sdxlab.train.publish)


def unfinished_training_note(layout: RunLayout) -> str | None:
    """One sentence when a newer training than the one in `lora/` is unfinished, so nobody mistakes which is sampled."""
    unfinished = layout.lora.with_name(layout.lora.name + UNFINISHED_SUFFIX)
    if not unfinished.is_dir():
        return None
    steps = sorted(
        int(match.group(1))
        for folder in (unfinished / "checkpoints").glob("step_*")
        if (match := STEP_FOLDER.match(folder.name)) and (folder / COMPLETE_MARKER).is_file()
    )
    where = f"its newest checkpoint is step {steps[-1]}" if steps else "it saved no checkpoint yet"
    sampled = (
        f"these pictures use the last finished training in {layout.lora}"
        if (layout.lora / "train_config.json").is_file()
        else "no training has finished yet"
    )
    return (
        f"A newer training stopped before it finished ({unfinished}; {where}): {sampled}; "
        "run 02_train with train_resume=True to finish it."
    )


def checkpoint_loras(layout: RunLayout, which: str | Sequence[str] | None = "all") -> list[Path]:
    """The LoRA files of the run's training checkpoints, oldest first.

    `which`: "all", a list of folder names (["step_000100"]) or None / [] for none. A named checkpoint that
    does not exist is an error naming the ones that do.
    """
    if not which:
        return []
    config_file = layout.lora / "train_config.json"
    if not config_file.is_file():
        return []
    config = json.loads(config_file.read_text())
    lora_name = config.get("lora_name") or Path(config.get("lora_file") or "").stem
    folders = sorted(
        (int(match.group(1)), folder)
        for folder in (layout.lora / "checkpoints").glob("step_*")
        if (match := STEP_FOLDER.match(folder.name))
        and (folder / COMPLETE_MARKER).is_file()
        and (folder / f"{lora_name}.safetensors").is_file()
    )
    available = {folder.name: folder / f"{lora_name}.safetensors" for _, folder in folders}
    if which == "all":
        return list(available.values())
    if isinstance(which, str):
        which = [which]
    missing = [name for name in which if name not in available]
    if missing:
        raise ValueError(
            f"No checkpoint {', '.join(missing)} in {layout.lora / 'checkpoints'}; "
            f"available: {', '.join(available) or 'none'}."
        )
    return [available[name] for name in which]


def generate_per_checkpoint(
    sampler: Sampler,
    lora_files: Sequence[Path],
    prompts: Sequence[str],
    seeds: Sequence[int],
    **settings,
) -> list[GeneratedImage]:
    """Generate `prompts` × `seeds` with each checkpoint's LoRA (and embeddings), then restore the sampler's own."""
    if sampler.lora is None or not lora_files:
        return []
    final_lora, final_tokens = sampler.lora.path, list(sampler.tokens)
    final_embeddings = _embeddings_next_to(final_lora)
    generated: list[GeneratedImage] = []
    try:
        for lora_file in lora_files:
            sampler.load_lora(lora_file)
            embeddings = _embeddings_next_to(lora_file)
            if final_tokens and embeddings:
                sampler.load_embeddings(embeddings, final_tokens)
            generated += sampler.generate(prompts, seeds, **settings)
    finally:
        sampler.load_lora(final_lora)
        if final_tokens and final_embeddings:
            sampler.load_embeddings(final_embeddings, final_tokens)
    return generated


def _embeddings_next_to(lora_file: Path) -> Path | None:
    candidate = lora_file.with_name(f"{lora_file.stem.removesuffix('_kohya')}_emb.safetensors")
    return candidate if candidate.is_file() else None


def why_no_checkpoint_samples(sampler: Sampler, lora_file: str | Path | None, which: str | Sequence[str] | None) -> str:
    """Why 03_sample drew nothing over training (`lora_file`: the notebook's `sample_lora_file`), for its note."""
    if not sampler.lora:
        return "no LoRA is loaded"
    if lora_file:
        return "sample_lora_file replaces the run's LoRA"
    return "the run has no training checkpoints" if which else "sample_checkpoints is empty"
