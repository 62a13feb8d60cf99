"""Likeness against meaning: the prompts no other prompt beats on both, and the person's own choice among them.

One weighted total hides a trade-off the person may want to make themselves: a wide shot that shows "astronaut
on Mars" well but loses some likeness, or a close-up that is unmistakably them but shows less of Mars. The
Pareto front is the set of prompts tried for which no other prompt has both more likeness and more meaning
(means over the search seeds). The person picks a point by the likeness they want at least
(`search_min_likeness`); the most meaningful prompt on the front that reaches it becomes the headline of the
held-out check, chosen, like the search's own pick, before any held-out seed was rendered.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence

from sdxlab.prompt_search.proposers import ScoredPrompt

LIKENESS, MEANING, MOOD = "likeness", "clip_t", "mood"


def pareto_front(history: Sequence[ScoredPrompt], x: str = LIKENESS, y: str = MEANING) -> list[ScoredPrompt]:
    """The prompts not beaten on both `x` and `y` by any other, by rising `x` (empty if a score is missing)."""
    scored = [item for item in history if x in item.scores and y in item.scores]
    front, best_y = [], float("-inf")
    for item in sorted(scored, key=lambda item: (-item.scores[x], -item.scores[y], item.round)):
        if item.scores[y] > best_y:
            front.append(item)
            best_y = item.scores[y]
    return front[::-1]


def choose_on_front(
    front: Sequence[ScoredPrompt], min_x: float, x: str = LIKENESS, y: str = MEANING
) -> ScoredPrompt | None:
    """The most meaningful prompt on the front whose `x` is at least `min_x`; None when none reaches it."""
    reaching = [item for item in front if item.scores[x] >= min_x]
    return max(reaching, key=lambda item: item.scores[y]) if reaching else None


def pareto_figure(searches, min_likeness: float | None = None, note: str | None = None):
    """One panel per intent: every prompt tried (grey; coloured by mood when the intent asks for one: the third
    axis), the front (blue), your start, the search's pick by total and, with `min_likeness`, your choice on the
    front."""
    import matplotlib.pyplot as plt

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
    from sdxlab.plots import image_grid

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
