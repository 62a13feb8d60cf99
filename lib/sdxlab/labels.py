"""How sdxlab recognises the offline tiny model and labels what it produces: one test, one warning text.

The tiny model (`model="tiny"`, `clip_model="tiny"`) lets the whole workbook run offline on a CPU. Its
pictures come from a toy (its VAE and UNet pretrained on a dozen pictures without people, `sdxlab.tiny_base`;
its text encoders and the tiny CLIP random), so every plot, report and notebook that shows them carries
`RANDOM_WEIGHTS_NOTE`, and decides whether to with `is_random_weights` (named when all its weights were random).
Change the wording here and it changes everywhere.
"""

from __future__ import annotations

import os

TINY_MODEL = "tiny"  # the name profiles and notebooks use for the offline model (SDXL and CLIP alike)

RANDOM_WEIGHTS_NOTE = (
    "tiny toy model (pretrained on a dozen pictures without people; text encoders and CLIP random): "
    "its pictures show the workflow, not SDXL's quality; its CLIP scores are meaningless (dlib's face measures are real)"
)


def is_random_weights(*models: str | os.PathLike | None) -> bool:
    """True when any of these model names (the generator's `model`, a `clip_model`) is the offline tiny model."""
    return any(model is not None and str(model) == TINY_MODEL for model in models)


def random_weights_note(*models: str | os.PathLike | None) -> str:
    """`RANDOM_WEIGHTS_NOTE` when any of these models is the tiny one, else "" (for titles and reports)."""
    return RANDOM_WEIGHTS_NOTE if is_random_weights(*models) else ""
