"""The sample stage's figures (03_sample, samples/grid_*.png): prompts × seeds, the LoRA-scale sweep and the
checkpoints compared, each a labelled `sdxlab.plots.image_grid` of generated images."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence

from sdxlab.plots import image_grid
from sdxlab.sample.sampler import GeneratedImage


def prompt_seed_grid(generated: Sequence[GeneratedImage], title: str | None = None):
    """A grid with one row per prompt and one column per seed, each image captioned with both."""

    columns = len(dict.fromkeys(item.params["seed"] for item in generated))
    captions = [f"{_wrapped(item.params['prompt'])}\nseed {item.params['seed']}" for item in generated]
    return image_grid([item.image for item in generated], captions, columns=columns, title=_title(title, columns))


def lora_scale_grid(generated: Sequence[GeneratedImage], title: str | None = None):
    """A grid with one column per LoRA scale (left to right: weaker to stronger) and one row per seed."""
    return _columns_by(
        generated, lambda params: params["lora_scale"], lambda params: f"LoRA scale {params['lora_scale']:g}", title
    )


def checkpoint_grid(generated: Sequence[GeneratedImage], title: str | None = None):
    """A grid with one column per training checkpoint (earliest first, the final LoRA last) and one row per seed."""

    def order(params):
        step = re.fullmatch(r"step_(\d+)", params["checkpoint"] or "")
        return int(step.group(1)) if step else float("inf")

    return _columns_by(generated, order, lambda params: f"{params['checkpoint']}", title)


def _columns_by(generated: Sequence[GeneratedImage], order, label, title: str | None):

    columns = sorted({order(item.params) for item in generated})
    ordered = sorted(generated, key=lambda item: (item.params["seed"], columns.index(order(item.params))))
    captions = [f"{label(item.params)}\nseed {item.params['seed']}" for item in ordered]
    return image_grid(
        [item.image for item in ordered], captions, columns=len(columns), title=_title(title, len(columns))
    )


def _wrapped(text: str, width: int = 34, lines: int = 2) -> str:
    """A caption that fits under one grid cell: at most `lines` lines, shortened with an ellipsis."""
    return textwrap.fill(" ".join(text.split()), width=width, max_lines=lines, placeholder=" …")


def _title(title: str | None, columns: int) -> str | None:
    # about 12 characters of the title font per inch of a 2.2-inch grid cell
    return (
        textwrap.fill(title, width=max(40, int(columns * 2.2 * 12)), max_lines=3, placeholder=" …") if title else None
    )
