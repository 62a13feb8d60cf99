"""The held-out check: do the prompts the search picked beat the person's own first attempt on seeds it never saw?

A search that keeps the best of many candidates on a few fixed seeds is optimistic about its winners: part of
their score is luck with those seeds. So the finalists and the starting prompt are rendered again on fresh
seeds and compared seed by seed (same seed, same noise). The uplift is the mean paired difference of totals,
with a seeded bootstrap confidence interval and a sign test. With a handful of seeds the interval is wide;
that is the honest answer, and more held-out seeds narrow it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from sdxlab.prompt_search.evaluation import Evaluator, mean_scores
from sdxlab.prompt_search.objective import TOTAL, Intent
from sdxlab.prompt_search.proposers import ScoredPrompt
from sdxlab.prompt_search.search import SearchResult

START_ROLE = "start"
FINALIST_ROLE = "finalist"


def heldout_seeds(seed: int, count: int, search_seeds: Sequence[int]) -> list[int]:
    """`count` seeds far from the search seeds (and never equal to one of them)."""
    taken = {int(value) for value in search_seeds}
    seeds, candidate = [], int(seed) + 100_000
    while len(seeds) < count:
        if candidate not in taken:
            seeds.append(candidate)
        candidate += 1
    return seeds


@dataclass
class Uplift:
    """Finalist minus starting prompt, paired by held-out seed."""

    mean: float
    ci_low: float
    ci_high: float
    wins: int
    losses: int
    sign_test_p: float
    confidence: float = 0.95

    def to_dict(self) -> dict:
        return {"mean": self.mean, "ci_low": self.ci_low, "ci_high": self.ci_high, "confidence": self.confidence,
                "wins": self.wins, "losses": self.losses, "sign_test_p": self.sign_test_p}

    def describe(self) -> str:
        return (f"{self.mean:+.4f} (95% CI {self.ci_low:+.4f} to {self.ci_high:+.4f}; better on {self.wins}, "
                f"worse on {self.losses} held-out seeds; sign test p = {self.sign_test_p:.3g})")


def paired_uplift(candidate: Sequence[float], baseline: Sequence[float], *, seed: int = 0, samples: int = 2000,
                  confidence: float = 0.95) -> Uplift:
    """Mean of the paired differences, a percentile bootstrap interval over seeds, and a two-sided sign test."""
    differences = np.asarray(candidate, dtype=float) - np.asarray(baseline, dtype=float)
    if differences.size == 0:
        raise ValueError("The uplift needs at least one held-out seed.")
    rng = np.random.default_rng(seed)
    resampled = rng.choice(differences, size=(samples, differences.size), replace=True).mean(axis=1)
    tail = (1 - confidence) / 2
    wins, losses = int((differences > 0).sum()), int((differences < 0).sum())
    return Uplift(mean=float(differences.mean()), ci_low=float(np.quantile(resampled, tail)),
                  ci_high=float(np.quantile(resampled, 1 - tail)), wins=wins, losses=losses,
                  sign_test_p=sign_test(wins, losses), confidence=confidence)


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact binomial test of wins against losses (ties dropped); 1.0 when there is nothing to test."""
    trials = wins + losses
    if trials == 0:
        return 1.0
    tail = sum(math.comb(trials, k) for k in range(min(wins, losses) + 1)) / 2**trials
    return min(1.0, 2 * tail)


@dataclass
class HeldoutEntry:
    prompt: str
    role: str
    search_scores: dict[str, float]
    heldout_scores: dict[str, float]
    per_seed: list[dict[str, float]]
    uplift: Uplift | None = None  # None for the starting prompt itself

    @property
    def heldout_total(self) -> float:
        return self.heldout_scores[TOTAL]


@dataclass
class HeldoutResult:
    intent: Intent
    seeds: list[int]
    start: HeldoutEntry
    finalists: list[HeldoutEntry]  # ranked by held-out total, best first
    search_pick: HeldoutEntry  # the finalist the search itself ranked first
    rows: list[dict] = field(default_factory=list, repr=False)

    @property
    def leaderboard(self) -> list[HeldoutEntry]:
        return self.finalists


def heldout_check(
    evaluator: Evaluator,
    intent: Intent,
    finalists: Sequence[ScoredPrompt],  # best by search score first
    start: ScoredPrompt,
    seeds: Sequence[int],
    *,
    bootstrap_seed: int = 0,
    bootstrap_samples: int = 2000,
) -> HeldoutResult:
    """Render finalists and the starting prompt on the held-out seeds, score them and measure each uplift."""
    entries = [(start, START_ROLE)] + [(item, FINALIST_ROLE) for item in finalists if item.prompt != start.prompt]
    prompts = [item.prompt for item, _ in entries for _ in seeds]
    pair_seeds = [int(seed) for _ in entries for seed in seeds]
    scores = evaluator.evaluate(intent, prompts, pair_seeds)
    rows, results = [], []
    for index, (item, role) in enumerate(entries):
        per_seed = scores[index * len(seeds) : (index + 1) * len(seeds)]
        results.append(HeldoutEntry(item.prompt, role, dict(item.scores), mean_scores(per_seed, evaluator.score_names),
                                    list(per_seed)))
        for seed, row in zip(seeds, per_seed, strict=True):
            rows.append({"intent": intent.text, "role": role, "prompt": item.prompt, "seed": int(seed),
                         **{key: float(value) for key, value in row.items()}, "search_total": float(item.scores[TOTAL])})
    start_entry, finalist_entries = results[0], results[1:]
    baseline = [row[TOTAL] for row in start_entry.per_seed]
    for entry in finalist_entries:
        entry.uplift = paired_uplift([row[TOTAL] for row in entry.per_seed], baseline, seed=bootstrap_seed,
                                     samples=bootstrap_samples)
    pick = finalist_entries[0] if finalist_entries else start_entry
    ranked = sorted(finalist_entries, key=lambda entry: -entry.heldout_total)
    return HeldoutResult(intent=intent, seeds=[int(s) for s in seeds], start=start_entry, finalists=ranked,
                         search_pick=pick, rows=rows)


def heldout_for_search(evaluator: Evaluator, result: SearchResult, seeds: Sequence[int], *, finalists: int = 3,
                       bootstrap_seed: int = 0, bootstrap_samples: int = 2000) -> list[HeldoutResult]:
    """The held-out check for every intent of a search: its best `finalists` prompts against the start."""
    from tqdm.auto import tqdm

    checks = []
    for search in tqdm(result.intents, desc="held-out check", disable=len(result.intents) <= 1):
        best = [item for item in search.best(finalists + 1) if item.prompt != search.start.prompt][:finalists]
        checks.append(heldout_check(evaluator, search.intent, best, search.start, seeds,
                                    bootstrap_seed=bootstrap_seed, bootstrap_samples=bootstrap_samples))
    return checks
