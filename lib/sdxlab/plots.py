"""Matplotlib figures shared by the notebooks.

Figures are returned, not shown, so a notebook displays them and the library can also save them with
`sdxlab.files.save_figure`. Stage-specific figures live below the shared helpers, one section per stage.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg") if matplotlib.get_backend().lower() not in {"module://matplotlib_inline.backend_inline"} else None
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

RANDOM_WEIGHTS_NOTE = "tiny random-weight model: numbers prove plumbing, not image quality"


def image_grid(
    images: Sequence,
    captions: Sequence[str] | None = None,
    columns: int | None = None,
    title: str | None = None,
    cell_inches: float = 2.2,
    caption_colors: Sequence[str] | None = None,
) -> Figure:
    """A labelled grid of PIL images (or arrays); captions go under each image."""
    count = max(len(images), 1)
    columns = columns or min(count, 6)
    rows = math.ceil(count / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(columns * cell_inches, rows * (cell_inches + 0.35)), squeeze=False)
    for index, axis in enumerate(axes.flat):
        axis.set_axis_off()
        if index >= len(images):
            continue
        axis.imshow(images[index], cmap="gray" if getattr(images[index], "mode", "") == "L" else None)
        if captions is not None:
            color = caption_colors[index] if caption_colors is not None else "black"
            axis.set_title(captions[index], fontsize=7, color=color, wrap=True)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def close(figure: Figure) -> None:
    """Free a figure's memory once saved and displayed (notebooks make many)."""
    plt.close(figure)
