"""The search loop: propose, generate on fixed seeds, score, keep the best, repeat.

For each intent: round 0 scores the person's own first attempt; every later round asks the proposers for new
prompts (given the top-k so far with their sub-scores), renders each on the same fixed search seeds and scores
it. A prompt's score is its mean over those seeds, so two prompts are compared on the same noise and the best
so far can only go up. The search stops after the last round, when its budget (pictures or minutes, per
intent) is spent, or when the best has not improved for `patience` rounds.

Every picture tried is a row of `candidates.csv`, rewritten (atomically) after each round; a run that is
interrupted continues from it: rounds already in the file are not run again, and the proposers' random
sources are seeded by (seed, intent, round), so a resumed search proposes what an uninterrupted one would.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sdxlab import files
from sdxlab.prompt_search.evaluation import Evaluator, fingerprint, mean_scores
from sdxlab.prompt_search.objective import TOTAL, Intent, cell
from sdxlab.prompt_search.proposers import (
    ProposalContext,
    Proposer,
    ProposerError,
    ScoredPrompt,
    VocabularyProposer,
    clean_proposal,
)
from sdxlab.prompt_search.recipe import RECIPE_COLUMNS, Recipe, RecipeSpace
from sdxlab.prompt_search.vocabulary import prompt_key

log = logging.getLogger("sdxlab.prompt_search")

START = "start"  # the proposer name of round 0: the person's own first attempt
BASE_COLUMNS = ["intent", "round", "proposer", "prompt", "seed"]
TAIL_COLUMNS = [TOTAL, "settings", "image"]
IMPROVEMENT = 1e-9


@dataclass
class SearchSettings:
    """How long and how wide to search (plain values, set from the notebook's parameters)."""

    rounds: int = 3  # rounds after the starting prompt's round 0
    candidates_per_round: int = 4
    seeds: Sequence[int] = (0, 1)  # fixed search seeds: every candidate is rendered on all of them
    top_k: int = 4  # how many of the best prompts the proposers see
    patience: int = 0  # stop after this many rounds without improvement; 0: never
    max_images: int = 0  # pictures per intent; 0: no limit
    max_minutes: float = 0.0  # minutes per intent; 0: no limit
    seed: int = 0  # seeds the proposers' random choices
    recipe: RecipeSpace | None = None  # also search negative prompt, guidance, LoRA scale (None: the prompt only)

    def __post_init__(self) -> None:
        self.seeds = [int(seed) for seed in self.seeds]
        if not self.seeds:
            raise ValueError("The search needs at least one search seed.")
        if self.candidates_per_round < 1:
            raise ValueError("search_candidates_per_round must be at least 1.")


@dataclass
class RoundSummary:
    round: int
    candidates: int
    best_so_far: float
    median: float
    best_prompt: str


@dataclass
class IntentSearch:
    """What the search learned about one intent."""

    intent: Intent
    history: list[ScoredPrompt]
    rounds: list[RoundSummary]
    stop_reason: str = ""
    unusable: dict[str, int] = field(default_factory=dict)  # proposer -> lines skipped as malformed

    @property
    def start(self) -> ScoredPrompt:
        starts = [item for item in self.history if item.prompt == self.intent.start_prompt]
        return next((item for item in starts if item.proposer == START), starts[0])

    def best(self, count: int = 1) -> list[ScoredPrompt]:
        return sorted(self.history, key=lambda item: (-item.total, item.round))[:count]


@dataclass
class SearchResult:
    intents: list[IntentSearch]
    csv_path: Path
    resumed_rows: int = 0
    rows: list[dict] = field(default_factory=list, repr=False)


def run_search(
    evaluator: Evaluator,
    intents: Sequence[Intent],
    proposers: Sequence[Proposer],
    settings: SearchSettings,
    output_dir: str | os.PathLike,
    *,
    resume: bool = True,
    progress: bool = True,
) -> SearchResult:
    """Search prompts for each intent; writes and resumes `<output_dir>/candidates.csv`."""
    for proposer in proposers:  # a language model that cannot load should fail before any picture is made
        if hasattr(proposer, "load"):
            proposer.load()
    output_dir = Path(output_dir)
    csv_path = output_dir / "candidates.csv"
    # rows scored on other seeds or with other settings cannot be mixed with new ones
    identity = {"evaluator": evaluator.fingerprint, "seeds": list(settings.seeds)}
    if settings.recipe is not None:
        identity["recipe"] = settings.recipe.to_dict()
    settings_key = fingerprint(identity)
    rows = load_candidates(csv_path, settings_key, resume=resume)
    resumed = len(rows)
    columns = (
        BASE_COLUMNS
        + (RECIPE_COLUMNS if settings.recipe is not None else [])
        + list(evaluator.score_names)
        + TAIL_COLUMNS
    )
    results = []
    for intent in intents:
        loop = _IntentLoop(evaluator, intent, list(proposers), settings, rows, settings_key, output_dir)
        results.append(loop.run(lambda: write_candidates(csv_path, rows, columns), progress=progress))
    write_candidates(csv_path, rows, columns)
    return SearchResult(intents=results, csv_path=csv_path, resumed_rows=resumed, rows=rows)


class _IntentLoop:
    def __init__(self, evaluator, intent, proposers, settings, rows, settings_key, output_dir) -> None:
        self.evaluator = evaluator
        self.intent = intent
        self.proposers = proposers
        self.fallback = VocabularyProposer()
        self.settings = settings
        self.rows = rows  # shared by all intents: the whole candidates.csv
        self.settings_key = settings_key
        self.output_dir = output_dir
        self.unusable: dict[str, int] = {}  # lines per proposer that were not a usable prompt

    def mine(self) -> list[dict]:
        return [row for row in self.rows if row["intent"] == self.intent.text]

    def run(self, save, progress: bool) -> IntentSearch:
        from tqdm.auto import tqdm

        settings = self.settings
        started = time.monotonic()
        history = history_from_rows(self.mine(), self.evaluator.score_names)
        stop_reason = "all rounds done"
        bar = tqdm(total=settings.rounds + 1, desc=f"search: {self.intent.text[:40]}", disable=not progress, leave=True)
        done_rounds = {item.round for item in history}
        bar.update(len(done_rounds))
        start_recipe = settings.recipe.start if settings.recipe is not None else None
        if not any(item.key == (self.intent.start_prompt, start_recipe) for item in history):
            # round 0 is the person's own attempt (again, if they changed it since an interrupted search)
            history += self.evaluate_round(0, [(self.intent.start_prompt, START, start_recipe)])
            save()
            bar.update(1)
        round_index = max(item.round for item in history) + 1
        while round_index <= settings.rounds:
            reason = self.should_stop(history, round_index, started)
            if reason:
                stop_reason = reason
                break
            allowed = self.affordable_candidates()
            proposals = self.gather(history, round_index, allowed)
            if not proposals:
                stop_reason = "proposers found nothing new to try"
                break
            history += self.evaluate_round(round_index, proposals)
            save()
            bar.update(1)
            bar.set_postfix(best=f"{max(item.total for item in history):.3f}")
            round_index += 1
        bar.close()
        return IntentSearch(self.intent, history, round_summaries(history), stop_reason, dict(self.unusable))

    def should_stop(self, history: list[ScoredPrompt], round_index: int, started: float) -> str | None:
        settings = self.settings
        if settings.max_images and self.affordable_candidates() < 1:
            return f"picture budget of {settings.max_images} spent"
        if settings.max_minutes and (time.monotonic() - started) / 60 >= settings.max_minutes:
            return f"time budget of {settings.max_minutes:g} minutes spent"
        if settings.patience:
            summaries = round_summaries(history)
            last_gain = last_improvement_round(summaries)
            if summaries and summaries[-1].round - last_gain >= settings.patience:
                return f"no improvement for {settings.patience} rounds"
        return None

    def affordable_candidates(self) -> int:
        settings = self.settings
        if not settings.max_images:
            return settings.candidates_per_round
        remaining = settings.max_images - len(self.mine())
        return max(0, min(settings.candidates_per_round, remaining // len(settings.seeds)))

    def context(self, history: list[ScoredPrompt], round_index: int) -> ProposalContext:
        rng = random.Random(f"{self.settings.seed}|{self.intent.text}|{round_index}")
        return ProposalContext(
            intent=self.intent,
            history=list(history),
            round_index=round_index,
            rng=rng,
            top_k=self.settings.top_k,
            score_names=list(self.evaluator.score_names),
            weights=dict(getattr(getattr(self.evaluator, "objective", None), "terms", {}) or {}),
            feedback=self.feedback(history),
        )

    def feedback(self, history: list[ScoredPrompt]) -> list[str]:
        """OPT2I-style: the part of the intent the best prompt's pictures show least (from `part_<role>`)."""
        from sdxlab.prompt_search.intent import weakest_part

        scorer = getattr(getattr(self.evaluator, "objective", None), "scorers", {}).get("intent_parts")
        if scorer is None or not history:
            return []
        best = sorted(history, key=lambda item: (-item.total, item.round))[0]
        rows = [row for row in self.mine() if (row["prompt"], Recipe.from_row(row)) == best.key]
        weakest = weakest_part(rows, scorer.parts(self.intent.alignment_text))
        return [weakest.feedback()] if weakest is not None else []

    def gather(self, history: list[ScoredPrompt], round_index: int, count: int) -> list[tuple[str, str, Recipe | None]]:
        """`count` new candidates: (prompt, who proposed it, recipe). With a recipe search about half are recipe
        moves (a good candidate with one setting changed, `RecipeSpace.share` of them), the rest new prompts with
        the best one's recipe."""
        context = self.context(history, round_index)
        space = self.settings.recipe
        if space is None:
            return [(prompt, name, None) for prompt, name in self.gather_prompts(context, count)]
        moves = self.recipe_moves(context, space.moves(count, round_index))
        best = context.best(1)[0].recipe if context.history else space.start
        prompts = self.gather_prompts(context, count - len(moves))
        return [(prompt, name, best) for prompt, name in prompts] + moves

    def recipe_moves(self, context: ProposalContext, count: int) -> list[tuple[str, str, Recipe]]:
        """Up to `count` candidates: one of the best so far (rank-weighted) with one recipe setting changed."""
        space, rng = (
            self.settings.recipe,
            random.Random(f"{self.settings.seed}|{self.intent.text}|{context.round_index}|recipe"),
        )
        parents = context.best()
        tried = {item.key for item in context.history}
        moves: list[tuple[str, str, Recipe]] = []
        for _ in range(count * 20):
            if len(moves) == count or not parents:
                break
            parent = rng.choices(parents, weights=[1.0 / (rank + 1) for rank in range(len(parents))])[0]
            recipe = space.mutate(parent.recipe or space.start, rng)
            if (parent.prompt, recipe) not in tried:
                tried.add((parent.prompt, recipe))
                moves.append((parent.prompt, "recipe", recipe))
        return moves

    def gather_prompts(self, context: ProposalContext, count: int) -> list[tuple[str, str]]:
        """`count` new, cleaned, distinct prompts with the name of the proposer that made each."""
        seen = context.tried()
        accepted: list[tuple[str, str]] = []
        if count <= 0:
            return accepted
        quotas = [count // len(self.proposers) + (i < count % len(self.proposers)) for i in range(len(self.proposers))]
        for proposer, quota in zip(self.proposers, quotas, strict=True):
            if quota:
                accepted += self._take(proposer, context, quota, seen)
        if len(accepted) < count:  # a language model that produced garbage: the offline proposer fills in
            accepted += self._take(self.fallback, context, count - len(accepted), seen, extra=len(accepted))
        return accepted

    def _take(
        self, proposer: Proposer, context: ProposalContext, quota: int, seen: set[str], extra: int = 0
    ) -> list[tuple[str, str]]:
        try:
            # `extra`: the fallback does not know what other proposers took this round, so it may repeat them
            raw = proposer.propose(context, quota + extra)
        except ProposerError:
            raise
        except Exception as error:  # a proposer's bad day is not the search's end
            log.warning(
                "Proposer %s failed in round %d (%s: %s); the round goes on without it.",
                proposer.name,
                context.round_index,
                type(error).__name__,
                str(error)[:200],
            )
            raw = []
        taken, unusable = [], 0
        for text in raw:
            cleaned = clean_proposal(text, self.intent)
            if cleaned is None:
                unusable += 1
                continue
            key = prompt_key(cleaned)
            if key in seen:
                continue
            seen.add(key)
            taken.append((cleaned, proposer.name))
            if len(taken) == quota:
                break
        if unusable:
            self.unusable[proposer.name] = self.unusable.get(proposer.name, 0) + unusable
            log.info(
                "Proposer %s: %d unusable line(s) skipped in round %d.", proposer.name, unusable, context.round_index
            )
        return taken

    def evaluate_round(self, round_index: int, proposals: list[tuple[str, str, Recipe | None]]) -> list[ScoredPrompt]:
        seeds = self.settings.seeds
        prompts = [prompt for prompt, _, _ in proposals for _ in seeds]
        pair_seeds = [seed for _ in proposals for seed in seeds]
        recipes = [recipe for _, _, recipe in proposals for _ in seeds]
        with_recipe = self.settings.recipe is not None
        if with_recipe:
            scores = self.evaluator.evaluate(self.intent, prompts, pair_seeds, recipes=recipes)
        else:
            scores = self.evaluator.evaluate(self.intent, prompts, pair_seeds)
        image_path = getattr(self.evaluator, "image_path", None)
        new_rows = []
        for prompt, seed, recipe, row_scores, proposer in zip(
            prompts, pair_seeds, recipes, scores, [name for _, name, _ in proposals for _ in seeds], strict=True
        ):
            image = ""
            if image_path is not None:
                path = image_path(prompt, seed, recipe) if with_recipe else image_path(prompt, seed)
                image = os.path.relpath(path, self.output_dir) if path else ""
            new_rows.append(
                {
                    "intent": self.intent.text,
                    "round": round_index,
                    "proposer": proposer,
                    "prompt": prompt,
                    "seed": seed,
                    **(recipe.to_dict() if recipe is not None else {}),
                    **{k: cell(v) for k, v in row_scores.items()},
                    "settings": self.settings_key,
                    "image": image,
                }
            )
        self.rows += new_rows
        return history_from_rows(new_rows, self.evaluator.score_names)


# --- candidates.csv -------------------------------------------------------------------------------------------


def history_from_rows(rows: Sequence[dict], score_names: Sequence[str]) -> list[ScoredPrompt]:
    """One `ScoredPrompt` per (prompt, recipe) of an intent: scores averaged over its seeds, in the order first
    tried."""
    grouped: dict[tuple, list[dict]] = {}
    for row in rows:
        grouped.setdefault((row["prompt"], Recipe.from_row(row)), []).append(row)
    return [
        ScoredPrompt(
            prompt=prompt,
            scores=mean_scores(group, score_names),
            round=int(group[0]["round"]),
            proposer=str(group[0]["proposer"]),
            recipe=recipe,
        )
        for (prompt, recipe), group in grouped.items()
    ]


def round_summaries(history: Sequence[ScoredPrompt]) -> list[RoundSummary]:
    """Best so far and median of each round's prompts (what the leaderboard plot shows)."""
    summaries, best, best_prompt = [], float("-inf"), ""
    for round_index in sorted({item.round for item in history}):
        this_round = [item for item in history if item.round == round_index]
        for item in this_round:
            if item.total > best + IMPROVEMENT:
                best, best_prompt = item.total, item.prompt
        summaries.append(
            RoundSummary(
                round_index, len(this_round), best, statistics.median(item.total for item in this_round), best_prompt
            )
        )
    return summaries


def last_improvement_round(summaries: Sequence[RoundSummary]) -> int:
    last, best = 0, float("-inf")
    for summary in summaries:
        if summary.best_so_far > best + IMPROVEMENT:
            last, best = summary.round, summary.best_so_far
    return last


def load_candidates(csv_path: Path, settings_key: str, *, resume: bool = True) -> list[dict]:
    """Rows of an earlier search with the same settings; an incompatible or unwanted file is set aside, not lost."""
    import pandas as pd

    if not csv_path.exists():
        return []
    try:
        frame = pd.read_csv(csv_path, keep_default_na=False)
    except Exception as error:
        _set_aside(csv_path, f"it could not be read ({type(error).__name__})")
        return []
    if not resume:
        _set_aside(csv_path, "search_resume is off")
        return []
    if frame.empty:
        return []
    missing = [column for column in BASE_COLUMNS + [TOTAL, "settings"] if column not in frame.columns]
    if missing or set(frame["settings"].astype(str)) != {settings_key}:
        _set_aside(csv_path, "it was made with other generation or scoring settings")
        return []
    rows = frame.to_dict("records")
    text_columns = set(BASE_COLUMNS) | {"settings", "image", "negative_prompt"}
    for row in rows:
        row.update({name: cell(value) for name, value in row.items() if name not in text_columns})
        row["round"], row["seed"] = int(row["round"]), int(row["seed"])
    return rows


def _set_aside(csv_path: Path, why: str) -> None:
    target = csv_path.with_name(f"candidates.previous-{dt.datetime.now():%Y%m%d-%H%M%S}.csv")
    os.replace(csv_path, target)
    print(f"Not resuming from {csv_path}: {why}; it was kept as {target.name} and the search starts fresh.")


def write_candidates(csv_path: Path, rows: Sequence[dict], columns: Sequence[str]) -> Path:
    import pandas as pd

    frame = pd.DataFrame(list(rows))
    for column in columns:
        if column not in frame.columns:
            frame[column] = []
    return files.write_csv(csv_path, frame[list(columns)])
