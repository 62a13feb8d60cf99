"""The evaluate stage's figures (04_evaluate, metrics/*.png): likeness calibration, likeness against alignment,
likeness over training, the best and worst images, and runs compared.

Each function takes plain data (the per-image table, a `Calibration`, images) and returns a figure; the caller
saves it (`sdxlab.files.save_figure`) and closes it (`sdxlab.plots.close`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from sdxlab.plots import with_note

LIKENESS_COLORS = {"floor": "tab:red", "ceiling": "tab:green", "generated": "tab:blue"}


def likeness_calibration(calibration, generated: Sequence[float], note: str = "") -> Figure:
    """Likeness on one axis: other people (floor), the person's own photos left out one at a time (ceiling), generated faces.

    `calibration` is a `sdxlab.evaluate.likeness.Calibration`; `generated` the generated faces' similarities.
    """
    import numpy as np

    rows = [
        ("other people\n(floor)", calibration.floor, LIKENESS_COLORS["floor"]),
        ("own photos, leave-one-out\n(ceiling)", calibration.ceiling, LIKENESS_COLORS["ceiling"]),
        (f"generated faces ({len(generated)})", None, LIKENESS_COLORS["generated"]),
    ]
    figure, axis = plt.subplots(figsize=(8, 3.2))
    jitter = np.random.default_rng(0)
    for height, (_, band, color) in enumerate(rows):
        values = list(band.values) if band is not None else list(generated)
        if band is not None and values:
            axis.axvspan(band.low, band.high, color=color, alpha=0.12)
            axis.axvline(band.mean, color=color, linestyle="--", linewidth=1)
        if values:
            axis.scatter(values, height + jitter.uniform(-0.15, 0.15, len(values)), color=color, s=22, alpha=0.8)
        else:
            _gray_label(axis, 0.5, height, "none available", ha="center", va="center", fontsize=8)
    axis.set_yticks(range(len(rows)), [label for label, _, _ in rows], fontsize=8)
    axis.set_ylim(-0.6, len(rows) - 0.4)
    axis.set_xlabel("identity similarity to the training photos' centroid (cosine of dlib descriptors)")
    if calibration.known:
        for position, (band, end) in enumerate(((calibration.floor, "floor"), (calibration.ceiling, "ceiling"))):
            axis.text(
                band.mean, len(rows) - 0.45, f" position {position}", color=LIKENESS_COLORS[end], fontsize=7, va="top"
            )
    axis.set_title(with_note("Likeness calibration: floor = strangers, ceiling = your own selfies", note), fontsize=9)
    axis.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    return figure


def likeness_vs_alignment(frame, note: str = "") -> Figure:
    """The trade-off everybody tunes by eye: likeness (calibrated if possible) against prompt alignment, per prompt."""
    import numpy as np

    use_position = frame["likeness_position"].notna().any()
    column = "likeness_position" if use_position else "likeness"
    likeness = frame[column].astype(float)
    no_face = likeness.isna()
    lowest = float(np.nanmin(likeness)) if likeness.notna().any() else 0.0
    # images without a face go on a line below everything else (below the floor when calibrated)
    floor_y = (min(lowest, 0.0) - 0.15) if use_position else lowest - 0.02
    figure, axis = plt.subplots(figsize=(7, 4.5))
    prompts = list(dict.fromkeys(frame["prompt"]))
    colors = plt.get_cmap("tab10")
    for index, prompt in enumerate(prompts):
        rows = frame["prompt"] == prompt
        label = (prompt or "(prompt unknown)")[:48] + ("…" if len(prompt) > 48 else "")
        color = colors(index % 10)
        axis.scatter(frame.loc[rows & ~no_face, "clip_t"], likeness[rows & ~no_face], color=color, s=30, label=label)
        axis.scatter(
            frame.loc[rows & no_face, "clip_t"], [floor_y] * int((rows & no_face).sum()), color=color, marker="x", s=30
        )
    if no_face.any():
        axis.axhline(floor_y, color="gray", linewidth=0.5)
        _gray_label(axis, 1.0, floor_y, "no face ", ha="right", va="bottom")
    if use_position:
        for level, name in ((0, "floor (strangers)"), (1, "ceiling (own selfies)")):
            axis.axhline(level, color="gray", linestyle=":", linewidth=1)
            _gray_label(axis, 0.0, level, f" {name}", va="bottom")
    axis.set_xlabel("prompt alignment: CLIP-T (image vs prompt with the subject token replaced by the class word)")
    axis.set_ylabel("likeness position (0 = floor, 1 = ceiling)" if use_position else "likeness (cosine to centroid)")
    if len(prompts) <= 12:
        axis.legend(fontsize=7, loc="best")
    axis.set_title(with_note("Likeness vs prompt alignment", note), fontsize=9)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def likeness_per_checkpoint(frame, note: str = "") -> Figure:
    """Likeness (and the face detection rate) per training checkpoint, in training order; the final LoRA last."""
    import numpy as np

    use_position = frame["likeness_position"].notna().any()
    column = "likeness_position" if use_position else "likeness"
    labels = sorted(
        frame["checkpoint"].unique(),
        key=lambda label: (
            label == "final",
            frame.loc[frame["checkpoint"] == label, "checkpoint_step"].fillna(np.inf).min(),
            label,
        ),
    )
    positions = range(len(labels))
    figure, axis = plt.subplots(figsize=(max(6, len(labels) * 0.9), 4))
    means, rates = [], []
    for x, label in zip(positions, labels, strict=True):
        rows = frame[frame["checkpoint"] == label]
        values = rows[column].astype(float).dropna()
        axis.scatter([x] * len(values), values, color=LIKENESS_COLORS["generated"], alpha=0.35, s=14)
        means.append(values.mean() if len(values) else np.nan)
        rates.append(rows["face_found"].astype(bool).mean())
    axis.plot(list(positions), means, color=LIKENESS_COLORS["generated"], marker="o", label=f"mean {column}")
    axis.set_xticks(list(positions), [str(label) for label in labels], rotation=30, ha="right", fontsize=8)
    axis.set_ylabel("likeness position (0 = floor, 1 = ceiling)" if use_position else "likeness (cosine)")
    rate_axis = axis.twinx()
    rate_axis.plot(list(positions), rates, color="gray", linestyle="--", marker=".", label="faces found")
    rate_axis.set_ylim(-0.05, 1.05)
    rate_axis.set_ylabel("share of images with a face", color="gray")
    axis.set_title(with_note("Likeness over training", note, width=80), fontsize=9)
    lines = axis.get_legend_handles_labels()[0] + rate_axis.get_legend_handles_labels()[0]
    axis.legend(lines, [line.get_label() for line in lines], fontsize=7, loc="lower right")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def best_worst_gallery(
    best: Sequence,
    worst: Sequence,
    best_captions: Sequence[str],
    worst_captions: Sequence[str],
    title: str,
    note: str = "",
    cell_inches: float = 2.6,
) -> Figure:
    """Two labelled rows of images: the best (green captions) above the worst (red captions)."""
    columns = max(len(best), len(worst), 1)
    rows = [
        (images, captions, color)
        for images, captions, color in ((best, best_captions, "darkgreen"), (worst, worst_captions, "darkred"))
        if len(images)
    ]
    figure, axes = plt.subplots(
        len(rows),
        columns,
        figsize=(columns * cell_inches, len(rows) * (cell_inches + 0.7)),
        squeeze=False,
        layout="constrained",
    )  # constrained: captions never overlap images
    for axis_row, (images, captions, color) in zip(axes, rows, strict=True):
        for index, axis in enumerate(axis_row):
            axis.set_axis_off()
            if index < len(images):
                axis.imshow(images[index])
                axis.set_title(captions[index], fontsize=7, color=color)
    figure.suptitle(with_note(title, note, width=int(columns * cell_inches * 12)), fontsize=9)
    return figure


def runs_comparison(table, by: str | None = None, note: str = "") -> Figure:
    """One small bar chart per metric, one bar per run (and per group when comparing by prompt/scale/checkpoint)."""
    metrics = [column for column in table.columns if column not in ("run", by) and table[column].notna().any()]
    labels = [f"{row['run']}" + (f" · {str(row[by])[:20]}" if by else "") for _, row in table.iterrows()]
    columns = max(1, min(4, len(metrics)))
    rows = max(1, math.ceil(len(metrics) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(columns * 3.2, rows * 2.8), squeeze=False)
    colors = plt.get_cmap("tab10")
    for axis in axes.flat:
        axis.set_axis_off()
    for axis, metric in zip(axes.flat, metrics, strict=False):
        axis.set_axis_on()
        values = table[metric].astype(float).fillna(0.0)
        axis.bar(range(len(values)), values, color=[colors(i % 10) for i in range(len(values))])
        axis.set_xticks(range(len(values)), labels, rotation=40, ha="right", fontsize=7)
        axis.set_title(metric, fontsize=9)
        axis.grid(axis="y", alpha=0.3)
    if not metrics:
        axes.flat[0].text(0.5, 0.5, "no evaluated runs to compare", ha="center", va="center")
    figure.suptitle(with_note("Runs compared", note), fontsize=10)
    figure.tight_layout()
    return figure


def _gray_label(axis, x: float, y: float, text: str, ha: str = "left", va: str = "center", fontsize: int = 7) -> None:
    """A gray note at `y` in data units and `x` as a fraction of the axis' width (0 left edge, 1 right edge)."""
    axis.text(x, y, text, transform=axis.get_yaxis_transform(), ha=ha, va=va, fontsize=fontsize, color="gray")
