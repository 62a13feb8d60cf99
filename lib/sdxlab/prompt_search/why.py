"""Why the chosen prompt wins: take away one thing it added at a time and see how each sub-score moves.

For the headline candidate, every part it added to the person's start prompt (a comma-separated phrase the
start did not have) is removed on its own, and every recipe setting that differs from the start (negative
prompt, guidance, LoRA scale) is put back to the start's value on its own. Each variant is rendered on the
search seeds (through the picture cache, so a variant the search already tried costs nothing) and compared
with the headline on the same seeds: `change_<score>` = variant - headline, so a negative change in `total`
means the removed part helped, and the other columns say through what (meaning, a part of the intent,
likeness, mood).

This is a one-at-a-time attribution: parts that only help together show up as helping little each.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from sdxlab.prompt_search.evaluation import mean_scores
from sdxlab.prompt_search.objective import TOTAL, Intent
from sdxlab.prompt_search.proposers import ScoredPrompt
from sdxlab.prompt_search.vocabulary import join_parts, split_parts


def added_parts(prompt: str, start_prompt: str) -> list[str]:
    """The phrases of `prompt` that `start_prompt` does not have, in the prompt's order."""
    own = {part.key for part in split_parts(start_prompt)}
    return [part.text for part in split_parts(prompt) if part.key not in own]


def variants(pick: ScoredPrompt, start: ScoredPrompt, max_parts: int) -> list[dict[str, Any]]:
    """At most `max_parts` variants of `pick`: one added phrase removed, or one recipe setting back to the start."""
    found: list[dict[str, Any]] = []
    parts = split_parts(pick.prompt)
    own = {part.key for part in split_parts(start.prompt)}
    for index, part in enumerate(parts):
        if part.key in own:
            continue
        found.append(
            {
                "removed": part.text,
                "kind": "words",
                "prompt": join_parts(parts[:index] + parts[index + 1 :]),
                "recipe": pick.recipe,
            }
        )
    if pick.recipe is not None and start.recipe is not None:
        for name in pick.recipe.differences(start.recipe):
            recipe = replace(pick.recipe, **{name: getattr(start.recipe, name)})
            found.append(
                {
                    "removed": f"{name} {getattr(pick.recipe, name)!r} -> {getattr(start.recipe, name)!r}",
                    "kind": name,
                    "prompt": pick.prompt,
                    "recipe": recipe,
                }
            )
    return found[:max_parts] if max_parts > 0 else []


def leave_one_out(
    evaluator,
    intent: Intent,
    pick: ScoredPrompt,
    start: ScoredPrompt,
    seeds: Sequence[int],
    *,
    max_parts: int = 6,
    score_names: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """One row per variant (and a first row for the headline itself) with the mean of every score on `seeds`
    and its change from the headline; renders at most `max_parts` x len(seeds) new pictures (cached)."""
    found = variants(pick, start, max_parts)
    names = [name for name in (score_names or evaluator.score_names)]
    with_recipe = pick.recipe is not None
    entries = [
        {"removed": "(nothing: the headline)", "kind": "headline", "prompt": pick.prompt, "recipe": pick.recipe},
        *found,
    ]
    prompts = [entry["prompt"] for entry in entries for _ in seeds]
    pair_seeds = [int(seed) for _ in entries for seed in seeds]
    if with_recipe:
        scores = evaluator.evaluate(intent, prompts, pair_seeds, recipes=[e["recipe"] for e in entries for _ in seeds])
    else:
        scores = evaluator.evaluate(intent, prompts, pair_seeds)
    means = [mean_scores(scores[i * len(seeds) : (i + 1) * len(seeds)], names) for i in range(len(entries))]
    numeric = [name for name in [*names, TOTAL] if name in means[0]]
    rows = []
    for entry, mean in zip(entries, means, strict=True):
        row: dict[str, Any] = {
            "intent": intent.text,
            "removed": entry["removed"],
            "kind": entry["kind"],
            "prompt": entry["prompt"],
            **(entry["recipe"].to_dict() if entry["recipe"] is not None else {}),
        }
        for name in numeric:
            row[name] = mean[name]
        for name in numeric:
            value, base = mean[name], means[0][name]
            row[f"change_{name}"] = value - base if not (math.isnan(value) or math.isnan(base)) else math.nan
        rows.append(row)
    return rows


def why_for_search(evaluator, result, heldouts, seeds: Sequence[int], *, max_parts: int = 6) -> list[dict[str, Any]]:
    """The leave-one-part-out rows for every intent's headline (the held-out check's search pick)."""
    rows: list[dict[str, Any]] = []
    for search, check in zip(result.intents, heldouts, strict=True):
        pick = next(
            (
                item
                for item in search.history
                if item.prompt == check.search_pick.prompt and item.recipe == check.search_pick.recipe
            ),
            None,
        )
        if pick is None or pick.key == search.start.key:
            continue
        rows += leave_one_out(evaluator, search.intent, pick, search.start, seeds, max_parts=max_parts)
    return rows


def why_frame(rows: Sequence[dict[str, Any]], names: Sequence[str]):
    """The table to show: what was removed, then the change of the total and of each named score (rounded)."""
    import pandas as pd

    frame = pd.DataFrame(list(rows))
    if frame.empty:
        return frame
    columns = ["removed"] + [f"change_{name}" for name in [TOTAL, *names] if f"change_{name}" in frame.columns]
    return frame[columns].rename(columns=lambda c: c.replace("change_", "Δ ")).round(4)
