"""The prompt search's figures (05_prompt_search, prompt_search/*.png): the leaderboard, the likeness × meaning
front as a plot and as pictures, and the held-out grid. Pictures come from the evaluator's cache
(`image_for`), so drawing generates nothing new."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence

import matplotlib.pyplot as plt

from sdxlab.plots import image_grid
from sdxlab.prompt_search.heldout import HeldoutResult
from sdxlab.prompt_search.objective import TOTAL
from sdxlab.prompt_search.pareto import LIKENESS, MEANING, MOOD, choose_on_front, pareto_front
from sdxlab.prompt_search.search import SearchResult


def leaderboard_figure(result: SearchResult, note: str | None = None):
    """Best-so-far and median score of each round, one panel per intent."""

    count = max(len(result.intents), 1)
    figure, axes = plt.subplots(1, count, figsize=(5.2 * count, 3.6), squeeze=False)
    for axis, search in zip(axes[0], result.intents, strict=False):
        rounds = [summary.round for summary in search.rounds]
        axis.step(
            rounds,
            [summary.best_so_far for summary in search.rounds],
            where="post",
            label="best so far",
            color="tab:blue",
            linewidth=2,
        )
        axis.plot(
            rounds,
            [summary.median for summary in search.rounds],
            "o--",
            label="median of the round",
            color="tab:orange",
        )
        axis.axhline(search.start.total, color="gray", linestyle=":", label="your starting prompt")
        axis.set_xlabel("round (0: your starting prompt)")
        axis.set_ylabel("total score on the search seeds")
        axis.set_title(textwrap.shorten(search.intent.text, 60), fontsize=9)
        axis.set_xticks(rounds)
        axis.legend(fontsize=7, loc="lower right")
    if note:
        figure.suptitle(note, fontsize=9, color="firebrick")
    figure.tight_layout()
    return figure


def heldout_grid_figure(heldouts: Sequence[HeldoutResult], image_for, note: str | None = None, max_seeds: int = 4):
    """Rows: the starting prompt, then the finalists in the search's own order; columns: held-out seeds.

    `image_for(prompt, seed)` returns the (cached) picture, so drawing the grid generates nothing new.
    """

    images, captions, colors = [], [], []
    columns = min(max_seeds, max((len(result.seeds) for result in heldouts), default=1))
    for result in heldouts:
        for entry in [result.start, *result.finalists]:
            per_seed = {int(row_seed): row for row_seed, row in zip(result.seeds, entry.per_seed, strict=True)}
            label = (
                "YOUR START"
                if entry is result.start
                else "HEADLINE"
                if entry is result.search_pick
                else f"finalist #{entry.search_rank}"
            )
            for column, seed in enumerate(result.seeds[:columns]):
                recipe = getattr(entry, "recipe", None)
                images.append(
                    image_for(entry.prompt, seed) if recipe is None else image_for(entry.prompt, seed, recipe)
                )
                score = f"seed {seed}: {per_seed[seed][TOTAL]:.3f}"
                if column == 0:  # the row's first picture carries the prompt (two lines at most) and its mean
                    prompt = "\n".join(textwrap.wrap(textwrap.shorten(entry.prompt, 84, placeholder=" …"), 44))
                    captions.append(f"{label} · mean {entry.heldout_total:.3f} · {score}\n{prompt}")
                else:
                    captions.append(score)
                colors.append("dimgray" if entry is result.start else "black")
    title = "Held-out seeds: your starting prompt (top row) vs the search's finalists"
    if note:
        title += f"\n{note}"
    figure = image_grid(images, captions, columns=columns, title=title, cell_inches=2.8, caption_colors=colors)
    # three-line captions need more room between rows than the shared grid leaves
    width, height = figure.get_size_inches()
    figure.set_size_inches(width, height + 0.3 * math.ceil(len(images) / columns))
    figure.tight_layout()
    return figure


def pareto_figure(searches, min_likeness: float | None = None, note: str | None = None):
    """One panel per intent: every prompt tried (grey; coloured by mood when the intent asks for one: the third
    axis), the front (blue), your start, the search's pick by total and, with `min_likeness`, your choice on the
    front."""

    count = max(len(searches), 1)
    figure, axes = plt.subplots(1, count, figsize=(5.2 * count, 4.0), squeeze=False)
    for axis, search in zip(axes[0], searches, strict=False):
        history = [item for item in search.history if LIKENESS in item.scores and MEANING in item.scores]
        if not history:
            axis.text(
                0.5,
                0.5,
                "likeness or meaning is not part of this objective",
                ha="center",
                va="center",
                transform=axis.transAxes,
                fontsize=9,
            )
        front = pareto_front(history)
        moods = [item.scores.get(MOOD, math.nan) for item in history]
        if any(not math.isnan(value) for value in moods):  # mood asked for: the third axis, as colour
            points = axis.scatter(
                [item.scores[LIKENESS] for item in history],
                [item.scores[MEANING] for item in history],
                s=18,
                c=moods,
                cmap="viridis",
                vmin=0,
                vmax=1,
                label="prompts tried (colour: mood)",
            )
            figure.colorbar(points, ax=axis, label="mood: P(the expression you asked for)")
        else:
            axis.scatter(
                [item.scores[LIKENESS] for item in history],
                [item.scores[MEANING] for item in history],
                s=14,
                color="lightgray",
                label="prompts tried",
            )
        axis.plot(
            [item.scores[LIKENESS] for item in front],
            [item.scores[MEANING] for item in front],
            "o-",
            color="tab:blue",
            markersize=5,
            label="front: not beaten on both",
        )
        marks = [
            (search.start, "*", "black", "your start"),
            (search.best()[0], "D", "tab:orange", "search's pick (total)"),
        ]
        if min_likeness is not None:
            chosen = choose_on_front(front, min_likeness)
            axis.axvline(min_likeness, color="firebrick", linestyle=":", linewidth=1)
            if chosen is not None:
                marks.append((chosen, "o", "firebrick", f"your choice (likeness >= {min_likeness:g})"))
        for item, marker, color, label in marks:
            if LIKENESS in item.scores:
                axis.scatter(
                    [item.scores[LIKENESS]],
                    [item.scores[MEANING]],
                    marker=marker,
                    s=80,
                    color="none" if marker == "o" else color,
                    edgecolors=color,
                    linewidths=1.6,
                    label=label,
                    zorder=3,
                )
        axis.set_xlabel("likeness (0: a stranger or no face, 1: your own photos)")
        axis.set_ylabel("meaning (CLIP-T with your intent)")
        axis.set_title(textwrap.shorten(search.intent.text, 60), fontsize=9)
        axis.legend(fontsize=7, loc="lower left")
    if note:
        figure.suptitle(note, fontsize=9, color="firebrick")
    figure.tight_layout()
    return figure


def pareto_pictures_figure(
    searches, image_for, seed: int, min_likeness: float | None = None, note: str | None = None, max_members: int = 8
):
    """The front's members as pictures (one row per intent, by rising likeness) on the first search seed.

    `image_for(prompt, seed, recipe)` returns the cached picture, so drawing this generates nothing new. Each
    caption gives the member's likeness and meaning (means over the search seeds) and says which member is the
    search's pick by total and which your choice with `min_likeness`.
    """

    images, captions, colors = [], [], []
    columns = 1
    rows = []
    for search in searches:
        history = [item for item in search.history if LIKENESS in item.scores and MEANING in item.scores]
        front = pareto_front(history)
        if len(front) > max_members:  # evenly spread over the front, both ends kept
            step = (len(front) - 1) / (max_members - 1)
            front = [front[round(index * step)] for index in range(max_members)]
        rows.append((search, front))
        columns = max(columns, len(front))
    for search, front in rows:
        pick = search.best()[0]
        chosen = choose_on_front(pareto_front(search.history), min_likeness) if min_likeness is not None else None
        for item in front:
            role = " · YOUR CHOICE" if chosen is not None and item.key == chosen.key else ""
            role += " · SEARCH'S PICK" if item.key == pick.key else ""
            prompt = "\n".join(textwrap.wrap(textwrap.shorten(item.prompt, 72, placeholder=" …"), 36))
            captions.append(
                f"likeness {item.scores[LIKENESS]:.2f} · meaning {item.scores[MEANING]:.3f}{role}\n{prompt}"
            )
            images.append(image_for(item.prompt, seed, item.recipe))
            colors.append("firebrick" if role else "black")
        for _ in range(columns - len(front)):  # keep one intent per row
            images.append(None)
            captions.append("")
            colors.append("black")
    title = f"The front's prompts on search seed {seed}, from most meaning (left) to most likeness (right)"
    if note:
        title += f"\n{note}"
    return image_grid(images, captions, columns=columns, title=title, cell_inches=2.6, caption_colors=colors)
