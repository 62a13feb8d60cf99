"""The held-out check: do the prompts the search picked beat the person's own first attempt on seeds it never saw?

A search that keeps the best of many candidates on a few fixed seeds is optimistic about its winners: part of
their score is luck with those seeds. So the finalists and the starting prompt are rendered again on fresh
seeds and compared seed by seed (same seed, same noise). For each finalist:

- **uplift**: the mean paired difference of totals (finalist minus your start), with a Student-t 95% interval
  on the paired differences. Its coverage is measured, not assumed: `tests/test_prompt_search.py` simulates
  the check with scores the size real CLIP and identity scores show, under no uplift and under a known one, at
  the default held-out seed counts, and the interval covers the truth 93-97% of the time. (A percentile
  bootstrap over 4 seeds covered 82%: it cannot see the spread it was never shown.)
- **p**: an exact paired permutation test (every sign flip of the differences), two-sided. With n held-out
  seeds the smallest possible p is 2 / 2**n, so at least 6 seeds are needed to reach p < 0.05: the defaults
  use 6 (demo) and 8 (`sdxl`).
- **p_holm**: p corrected with Holm's step-down method for the number of finalists compared.

The headline is always the search's own pick, chosen before any held-out seed was seen, so its uplift is an
honest estimate. Choosing the finalist that did best on the held-out seeds and reporting its uplift on those
same seeds would flatter it (the winner's curse); `heldout_choice` instead chooses on the first half of the
held-out seeds and reports the uplift on the other half.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sdxlab.prompt_search.evaluation import Evaluator, mean_scores
from sdxlab.prompt_search.objective import TOTAL, Intent, cell
from sdxlab.prompt_search.proposers import ScoredPrompt
from sdxlab.prompt_search.search import SearchResult

START_ROLE = "start"
FINALIST_ROLE = "finalist"
EXACT_PERMUTATION_LIMIT = 16  # up to 2**16 sign patterns are enumerated; beyond, 20,000 random ones


def heldout_seeds(seed: int, count: int, search_seeds: Sequence[int]) -> list[int]:
    """`count` seeds far from the search seeds (and never equal to one of them)."""
    taken = {int(value) for value in search_seeds}
    seeds, candidate = [], int(seed) + 100_000
    while len(seeds) < count:
        if candidate not in taken:
            seeds.append(candidate)
        candidate += 1
    return seeds


def paired_interval(differences: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Student-t interval for the mean of paired differences; infinite with a single seed (no spread seen)."""
    values = np.asarray(differences, dtype=float)
    if values.size < 2:
        return -math.inf, math.inf
    from scipy import stats

    half = float(stats.t.ppf(0.5 + confidence / 2, values.size - 1) * values.std(ddof=1) / math.sqrt(values.size))
    mean = float(values.mean())
    return mean - half, mean + half


def permutation_p(differences: Sequence[float], seed: int = 0) -> float:
    """Two-sided exact paired permutation test of "mean difference = 0": the share of sign flips of the
    differences whose mean is at least as far from zero as the observed one. 1.0 when nothing differs."""
    values = np.asarray(differences, dtype=float)
    if values.size == 0 or not np.any(np.abs(values) > 1e-12):
        return 1.0
    observed = abs(values.mean())
    if values.size <= EXACT_PERMUTATION_LIMIT:
        patterns = ((np.arange(2**values.size)[:, None] >> np.arange(values.size)) & 1) * 2 - 1
    else:
        patterns = np.random.default_rng(seed).choice([-1, 1], size=(20_000, values.size))
        patterns[0] = 1  # the observed arrangement counts, so p is never 0
    means = np.abs((patterns * values).mean(axis=1))
    return float(np.mean(means >= observed - 1e-12))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down correction: adjusted p-values for comparing several finalists with the same start."""
    order = sorted(range(len(p_values)), key=lambda index: p_values[index])
    adjusted, running = [1.0] * len(p_values), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * float(p_values[index])))
        adjusted[index] = running
    return adjusted


@dataclass
class Uplift:
    """Finalist minus starting prompt, paired by held-out seed."""

    mean: float
    ci_low: float
    ci_high: float
    wins: int
    losses: int
    p: float  # exact paired permutation test, two-sided
    seeds: int
    p_holm: float | None = None  # p corrected for the number of finalists compared (Holm)
    confidence: float = 0.95

    def to_dict(self) -> dict:
        finite = lambda value: value if math.isfinite(value) else None  # noqa: E731  (one seed: no interval)
        return {
            "mean": self.mean,
            "ci_low": finite(self.ci_low),
            "ci_high": finite(self.ci_high),
            "confidence": self.confidence,
            "interval": "Student t on the paired differences",
            "seeds": self.seeds,
            "wins": self.wins,
            "losses": self.losses,
            "p": self.p,
            "p_holm": self.p_holm,
            "test": "exact paired permutation test (sign flips), two-sided",
        }

    def describe(self) -> str:
        holm_text = f", {self.p_holm:.3g} after Holm" if self.p_holm is not None else ""
        return (
            f"{self.mean:+.4f} (95% CI {self.ci_low:+.4f} to {self.ci_high:+.4f}; better on {self.wins}, "
            f"worse on {self.losses} of {self.seeds} held-out seeds; p = {self.p:.3g}{holm_text})"
        )


def paired_uplift(
    candidate: Sequence[float], baseline: Sequence[float], *, confidence: float = 0.95, seed: int = 0
) -> Uplift:
    """Mean of the paired differences, its Student-t interval, and the exact paired permutation test."""
    differences = np.asarray(candidate, dtype=float) - np.asarray(baseline, dtype=float)
    if differences.size == 0:
        raise ValueError("The uplift needs at least one held-out seed.")
    low, high = paired_interval(differences, confidence)
    return Uplift(
        mean=float(differences.mean()),
        ci_low=low,
        ci_high=high,
        wins=int((differences > 0).sum()),
        losses=int((differences < 0).sum()),
        p=permutation_p(differences, seed),
        seeds=int(differences.size),
        confidence=confidence,
    )


@dataclass
class HeldoutEntry:
    prompt: str
    role: str
    search_scores: dict[str, float]
    heldout_scores: dict[str, float]
    per_seed: list[dict[str, float]]
    uplift: Uplift | None = None  # None for the starting prompt itself
    search_rank: int = 0  # 1: the search's own pick; 0: the starting prompt
    recipe: Any = None  # the candidate's Recipe (negative prompt, guidance, LoRA scale) in a recipe search

    @property
    def heldout_total(self) -> float:
        return self.heldout_scores[TOTAL]


@dataclass
class HeldoutChoice:
    """The finalist that did best on the first half of the held-out seeds, measured on the second half only."""

    entry: HeldoutEntry
    selection_seeds: list[int]
    report_seeds: list[int]
    uplift: Uplift


@dataclass
class HeldoutResult:
    intent: Intent
    seeds: list[int]
    start: HeldoutEntry
    finalists: list[HeldoutEntry]  # in the search's own order: the search's pick first
    search_pick: HeldoutEntry  # the first finalist, fixed before any held-out seed: the unbiased headline
    heldout_choice: HeldoutChoice | None = None  # None with fewer than 2 finalists or 4 held-out seeds
    rows: list[dict] = field(default_factory=list, repr=False)
    headline_source: str = "the search: its highest total on the search seeds"


def heldout_check(
    evaluator: Evaluator,
    intent: Intent,
    finalists: Sequence[ScoredPrompt],  # best by search score first
    start: ScoredPrompt,
    seeds: Sequence[int],
    *,
    confidence: float = 0.95,
) -> HeldoutResult:
    """Render finalists and the starting prompt on the held-out seeds, score them and measure each uplift."""
    entries = [(start, START_ROLE)] + [(item, FINALIST_ROLE) for item in finalists if item.key != start.key]
    prompts = [item.prompt for item, _ in entries for _ in seeds]
    pair_seeds = [int(seed) for _ in entries for seed in seeds]
    recipes = [item.recipe for item, _ in entries for _ in seeds]
    if any(recipe is not None for recipe in recipes):
        scores = evaluator.evaluate(intent, prompts, pair_seeds, recipes=recipes)
    else:
        scores = evaluator.evaluate(intent, prompts, pair_seeds)
    rows, results = [], []
    for index, (item, role) in enumerate(entries):
        per_seed = scores[index * len(seeds) : (index + 1) * len(seeds)]
        results.append(
            HeldoutEntry(
                item.prompt,
                role,
                dict(item.scores),
                mean_scores(per_seed, evaluator.score_names),
                list(per_seed),
                search_rank=index,
                recipe=item.recipe,
            )
        )
        for seed, row in zip(seeds, per_seed, strict=True):
            rows.append(
                {
                    "intent": intent.text,
                    "role": role,
                    "search_rank": index,
                    "prompt": item.prompt,
                    **(item.recipe.to_dict() if item.recipe is not None else {}),
                    "seed": int(seed),
                    **{key: cell(value) for key, value in row.items()},
                    "search_total": float(item.scores[TOTAL]),
                }
            )
    start_entry, finalist_entries = results[0], results[1:]
    baseline = np.array([row[TOTAL] for row in start_entry.per_seed])
    for entry in finalist_entries:
        entry.uplift = paired_uplift([row[TOTAL] for row in entry.per_seed], baseline, confidence=confidence)
    for entry, adjusted in zip(finalist_entries, holm([entry.uplift.p for entry in finalist_entries]), strict=True):
        entry.uplift.p_holm = adjusted
    pick = finalist_entries[0] if finalist_entries else start_entry
    return HeldoutResult(
        intent=intent,
        seeds=[int(s) for s in seeds],
        start=start_entry,
        finalists=finalist_entries,
        search_pick=pick,
        heldout_choice=split_choice(start_entry, finalist_entries, seeds, confidence),
        rows=rows,
    )


def split_choice(
    start: HeldoutEntry, finalists: Sequence[HeldoutEntry], seeds: Sequence[int], confidence: float = 0.95
) -> HeldoutChoice | None:
    """Choose on the first half of the held-out seeds, report on the second: an honest "best on new seeds"."""
    if len(finalists) < 2 or len(seeds) < 4:
        return None
    half = len(seeds) // 2
    totals = lambda entry, part: np.array([row[TOTAL] for row in entry.per_seed])[part]  # noqa: E731
    select, report = slice(0, half), slice(half, None)
    chosen = max(finalists, key=lambda entry: (float(totals(entry, select).mean()), -entry.search_rank))
    uplift = paired_uplift(totals(chosen, report), totals(start, report), confidence=confidence)
    return HeldoutChoice(chosen, [int(s) for s in seeds[select]], [int(s) for s in seeds[report]], uplift)


def heldout_for_search(
    evaluator: Evaluator,
    result: SearchResult,
    seeds: Sequence[int],
    *,
    finalists: int = 3,
    min_likeness: float | None = None,
) -> list[HeldoutResult]:
    """The held-out check for every intent of a search: its best `finalists` prompts against the start.

    With `min_likeness`, the headline is the person's choice on the likeness x meaning front (the most
    meaningful prompt whose likeness is at least that), followed by the search's best by total."""
    from tqdm.auto import tqdm

    from sdxlab.prompt_search.pareto import choose_on_front, pareto_front

    checks = []
    for search in tqdm(result.intents, desc="held-out check", disable=len(result.intents) <= 1):
        best = [item for item in search.best(len(search.history)) if item.key != search.start.key]
        source = HeldoutResult.headline_source
        if min_likeness is not None:
            chosen = choose_on_front(pareto_front(search.history), min_likeness)
            if chosen is not None and chosen.key != search.start.key:
                best = [chosen] + [item for item in best if item.key != chosen.key]
                source = f"you: the most meaningful prompt on the front with likeness >= {min_likeness:g}"
            else:
                source += (
                    f" (no prompt tried other than your start reaches likeness {min_likeness:g} on the "
                    "likeness x meaning front)"
                )
        check = heldout_check(evaluator, search.intent, best[:finalists], search.start, seeds)
        check.headline_source = source
        checks.append(check)
    return checks
