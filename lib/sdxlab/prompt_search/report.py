"""What the search writes and prints: best_prompts.json, heldout.csv, the parts table, and the best prompts
ready to paste into the playground (its figures are in `sdxlab.prompt_search.plots`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sdxlab import files
from sdxlab.prompt_search.heldout import HeldoutResult
from sdxlab.prompt_search.objective import TOTAL
from sdxlab.prompt_search.search import SearchResult


def heldout_rows(heldouts: Sequence[HeldoutResult]) -> list[dict]:
    return [row for result in heldouts for row in result.rows]


NUMBER_MEANINGS = {
    "headline": "the search's own pick (its best prompt on the search seeds) or your choice on the likeness x "
    "meaning front (search_min_likeness), fixed before any held-out seed was rendered, against your "
    "starting prompt on the held-out seeds: the honest answer",
    "search_rank": "position in the list of finalists fixed before the held-out seeds (1: the headline)",
    "uplift.mean": "mean over held-out seeds of (finalist total - your start's total), same seed, same noise",
    "uplift.ci_low/ci_high": "Student-t 95% interval of that mean; its coverage is checked by simulation",
    "uplift.p": "exact paired permutation test (sign flips), two-sided: how often a mean this far from 0 "
    "comes from chance; below 0.05 needs at least 6 held-out seeds",
    "uplift.p_holm": "p corrected (Holm) for the number of finalists compared with your start",
    "finalists": "the search's best prompts in the search's own order, each measured on all held-out seeds",
    "heldout_choice": "the finalist best on the first half of the held-out seeds, its uplift measured on the "
    "second half only (choosing and measuring on the same seeds would flatter it)",
    "search": "mean scores on the search seeds (optimistic: the search kept the prompts that did best there)",
    "heldout": "mean scores on the held-out seeds",
}


def _entry(entry, *, scores: bool = True) -> dict[str, Any]:
    item = {
        "search_rank": entry.search_rank,
        "prompt": entry.prompt,
        **({"recipe": entry.recipe.to_dict()} if getattr(entry, "recipe", None) is not None else {}),
        "uplift": entry.uplift.to_dict() if entry.uplift else None,
    }
    if scores:
        item.update({"search": entry.search_scores, "heldout": entry.heldout_scores})
    return item


def best_prompts_summary(result: SearchResult, heldouts: Sequence[HeldoutResult], **context: Any) -> dict[str, Any]:
    """Everything a reader needs to trust (or distrust) the answer, as JSON-able values; headline first."""
    intents = []
    for search, heldout in zip(result.intents, heldouts, strict=True):
        choice = heldout.heldout_choice
        intents.append(
            {
                "intent": search.intent.text,
                # the search's own first choice: its uplift is the unbiased one (chosen without seeing held-out seeds)
                "headline": _entry(heldout.search_pick),
                "headline_chosen_by": heldout.headline_source,
                "start": {
                    "prompt": heldout.start.prompt,
                    "search": heldout.start.search_scores,
                    "heldout": heldout.start.heldout_scores,
                    **({"recipe": heldout.start.recipe.to_dict()} if heldout.start.recipe is not None else {}),
                },
                "finalists": [_entry(entry) for entry in heldout.finalists],
                "heldout_choice": None
                if choice is None
                else {
                    "prompt": choice.entry.prompt,
                    "search_rank": choice.entry.search_rank,
                    "selection_seeds": choice.selection_seeds,
                    "report_seeds": choice.report_seeds,
                    "uplift": choice.uplift.to_dict(),
                },
                "alignment_text": search.intent.alignment_text,
                "start_prompt": search.intent.start_prompt,
                "stop_reason": search.stop_reason,
                "rounds_run": max((summary.round for summary in search.rounds), default=0),
                "prompts_tried": len(search.history),
                "unusable_proposals": search.unusable,
                "heldout_seeds": heldout.seeds,
            }
        )
    return {"what_the_numbers_mean": NUMBER_MEANINGS, **context, "intents": intents}


def write_outputs(folder: str | Path, summary: dict[str, Any], heldouts: Sequence[HeldoutResult]) -> dict[str, Path]:
    """best_prompts.json and heldout.csv (candidates.csv is written by the search as it goes)."""
    import pandas as pd

    folder = Path(folder)
    return {
        "best_prompts": files.write_json(folder / "best_prompts.json", summary),
        "heldout": files.write_csv(folder / "heldout.csv", pd.DataFrame(heldout_rows(heldouts))),
    }


def _uplift_text(uplift: dict) -> str:
    holm = f", Holm {uplift['p_holm']:.2g}" if uplift.get("p_holm") is not None else ""
    if uplift["ci_low"] is None:
        return f"uplift {uplift['mean']:+.3f} (one held-out seed: no interval), p {uplift['p']:.2g}{holm}"
    return (
        f"uplift {uplift['mean']:+.3f} [95% CI {uplift['ci_low']:+.3f}, {uplift['ci_high']:+.3f}] "
        f"over {uplift['seeds']} held-out seeds, p {uplift['p']:.2g}{holm}"
    )


def _recipe_lines(entry: dict, start: dict) -> list[str]:
    """The settings to use with a prompt found by a recipe search (what 03_sample's playground asks for)."""
    recipe = entry.get("recipe")
    if recipe is None:
        return []
    changed = [name for name in recipe if start.get("recipe", {}).get(name) != recipe[name]]
    negative = recipe["negative_prompt"] or ""
    return [
        f"#   with negative prompt: {negative!r}, guidance {recipe['guidance']:g}, LoRA scale "
        f"{recipe['lora_scale']:g}" + (f" (changed from your start: {', '.join(changed)})" if changed else "")
    ]


def paste_ready(summary: dict[str, Any]) -> str:
    """The prompts ready to copy into the playground of 03_sample, one block per intent: the search's own pick
    (the honest headline) first, then the other finalists in the search's order."""
    blocks = []
    for item in summary["intents"]:
        lines = [
            f"# {item['intent']}",
            f"# your start ({item['start']['heldout'][TOTAL]:.3f} held-out): {item['start_prompt']}",
        ]
        headline = item["headline"]
        if headline["uplift"] is not None:
            chooser = item.get("headline_chosen_by", "the search")
            lines.append(
                f"# HEADLINE (fixed before the held-out seeds; chosen by {chooser}): {_uplift_text(headline['uplift'])}"
            )
            lines.append(headline["prompt"])
            lines += _recipe_lines(headline, item["start"])
        for finalist in item["finalists"][1:]:
            lines.append(f"# finalist #{finalist['search_rank']}: {_uplift_text(finalist['uplift'])}")
            lines.append(finalist["prompt"])
            lines += _recipe_lines(finalist, item["start"])
        choice = item.get("heldout_choice")
        if choice is not None:
            lines.append(
                f"# best on held-out seeds {choice['selection_seeds']} was finalist #{choice['search_rank']}; "
                f"on the other seeds {choice['report_seeds']}: {_uplift_text(choice['uplift'])}"
            )
        blocks.append("\n".join(lines))
    note = summary.get("note")
    return (f"# {note}\n\n" if note else "") + "\n\n".join(blocks)


def parts_table(result: SearchResult, score_names: Sequence[str]):
    """Your start and the search's best per intent, side by side on every graded part of the intent
    (`part_<role>`, `intent_parts`), mood, VQA and the recipe: what the total is made of."""
    import pandas as pd

    shown = [
        name
        for name in score_names
        if name.startswith(("part_", "vqa")) or name in ("clip_t", "intent_parts", "mood", "likeness")
    ]
    rows = []
    for search in result.intents:
        for label, item in (("your start", search.start), ("search's best", search.best()[0])):
            row = {
                "intent": search.intent.text,
                "candidate": label,
                "total": item.total,
                **{name: item.scores.get(name) for name in shown},
            }
            if item.recipe is not None:
                row["recipe"] = item.recipe.describe()
            rows.append(row)
    frame = pd.DataFrame(rows)
    return frame.dropna(axis=1, how="all").round(4) if not frame.empty else frame
