"""The pieces every stage's figures share: a labelled image grid, a title with a note under it, closing.

Where figures live: each stage draws its own figures in its `plots` module (`sdxlab.train.plots`,
`sdxlab.sample.plots`, `sdxlab.evaluate.plots`, `sdxlab.prompt_search.plots`), built from these pieces; no
other module draws. Figures are returned, not shown, so a notebook displays them and the library saves them
with `sdxlab.files.save_figure`.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence

import matplotlib.pyplot as plt
from matplotlib.figure import Figure


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
    figure, axes = plt.subplots(
        rows, columns, figsize=(columns * cell_inches, rows * (cell_inches + 0.6)), squeeze=False
    )
    for index, axis in enumerate(axes.flat):
        axis.set_axis_off()
        if index >= len(images) or images[index] is None:  # None: an empty cell (keeps rows aligned)
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


def with_note(title: str, note: str, width: int = 100) -> str:
    """A title with the random-weights warning (or any note) wrapped under it."""
    return "\n".join([title, *textwrap.wrap(note, width)]) if note else title
