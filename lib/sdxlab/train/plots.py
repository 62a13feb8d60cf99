"""The train stage's figures (02_train, lora/loss.png and lora/validation_grid.png): the loss curve and the
validation images over training, drawn live by `sdxlab.train.live` and saved by `sdxlab.train.publish`."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from sdxlab.plots import with_note


def loss_curve(history: Sequence[dict], note: str = "", smoothing: float = 0.9) -> Figure:
    """Training loss per step (thin) with its exponential moving average (thick), learning rate on the right axis."""
    figure, axis = plt.subplots(figsize=(6.4, 3.2))
    steps = [row["step"] for row in history]
    losses = [row["loss"] for row in history]
    smoothed, average = [], 0.0
    for count, loss in enumerate(losses, start=1):
        average = smoothing * average + (1 - smoothing) * loss
        smoothed.append(average / (1 - smoothing**count))  # bias-corrected, so the first steps are not pulled to 0
    axis.plot(steps, losses, color="tab:blue", alpha=0.3, linewidth=0.8, label="loss")
    axis.plot(steps, smoothed, color="tab:blue", linewidth=2, label=f"moving average ({smoothing})")
    axis.set_xlabel("step")
    axis.set_ylabel("loss")
    axis.grid(alpha=0.3)
    if history and "lr" in history[0]:
        rate_axis = axis.twinx()
        rate_axis.plot(steps, [row["lr"] for row in history], color="tab:orange", linewidth=1, label="learning rate")
        rate_axis.set_ylabel("learning rate", color="tab:orange")
        rate_axis.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    if not history:
        axis.text(0.5, 0.5, "no steps yet", ha="center", va="center", transform=axis.transAxes)
    axis.legend(loc="lower left", fontsize=7)
    axis.set_title(with_note("Training loss", note), fontsize=10)
    figure.tight_layout()
    return figure


def validation_over_time(images: Sequence, note: str = "", cell_inches: float = 1.8) -> Figure:
    """Validation images as a grid: one row per checkpoint step, one column per (prompt, seed).

    `images` are objects with `step`, `prompt`, `seed` and `image` (sdxlab.train.validation.ValidationImage).
    """
    steps = sorted({item.step for item in images})
    columns = sorted(
        {(item.prompt, item.seed) for item in images}, key=lambda c: ([i.prompt for i in images].index(c[0]), c[1])
    )
    by_cell = {(item.step, item.prompt, item.seed): item.image for item in images}
    rows, cols = max(len(steps), 1), max(len(columns), 1)
    figure, axes = plt.subplots(rows, cols, figsize=(cols * cell_inches, rows * cell_inches + 0.6), squeeze=False)
    for r, step in enumerate(steps):
        for c, (prompt, seed) in enumerate(columns):
            axis = axes[r][c]
            axis.set_xticks([])
            axis.set_yticks([])
            if (step, prompt, seed) in by_cell:
                axis.imshow(by_cell[(step, prompt, seed)])
            if r == 0:
                axis.set_title(f"{prompt[:38]}{'…' if len(prompt) > 38 else ''}\nseed {seed}", fontsize=6)
            if c == 0:
                axis.set_ylabel(f"step {step}", fontsize=8)
    if not images:
        axes[0][0].set_axis_off()
        axes[0][0].text(0.5, 0.5, "no validation images yet", ha="center", va="center")
    figure.suptitle(with_note("Validation images over training", note), fontsize=10)
    figure.tight_layout()
    return figure
