"""Likeness against meaning: the prompts no other prompt beats on both, and the person's own choice among them.

One weighted total hides a trade-off the person may want to make themselves: a wide shot that shows "astronaut
on Mars" well but loses some likeness, or a close-up that is unmistakably them but shows less of Mars. The
Pareto front is the set of prompts tried for which no other prompt has both more likeness and more meaning
(means over the search seeds). The person picks a point by the likeness they want at least
(`search_min_likeness`); the most meaningful prompt on the front that reaches it becomes the headline of the
held-out check, chosen, like the search's own pick, before any held-out seed was rendered.
"""

from __future__ import annotations

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
