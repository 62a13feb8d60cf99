"""The prompt search without a diffusion model: a synthetic objective with a known optimum, the image cache,
resuming from candidates.csv, cleaning of proposals, the objective's use of the intent, and the held-out
statistics."""

from __future__ import annotations

import random

import pandas as pd
import pytest
from PIL import Image

from sdxlab.prompt_search.evaluation import ImageCache, ImageEvaluator
from sdxlab.prompt_search.heldout import heldout_check, heldout_seeds, paired_uplift, sign_test
from sdxlab.prompt_search.objective import Intent, Objective
from sdxlab.prompt_search.proposers import (
    ProposalContext,
    ScoredPrompt,
    VocabularyProposer,
    clean_proposal,
    clip_token_count,
)
from sdxlab.prompt_search.search import SearchSettings, run_search
from sdxlab.prompt_search.vocabulary import split_parts

SMALL_VOCABULARY = {
    "lighting": ("golden hour lighting", "neon glow", "candlelight", "backlit"),
    "medium": ("oil painting", "watercolor", "35mm film photo", "3d render"),
    "mood": ("serene", "heroic", "dreamy", "playful"),
}
TARGET = {"golden hour lighting", "oil painting", "serene"}


def make_intent(text: str = "{subject} as an astronaut on Mars") -> Intent:
    return Intent.create(text, "sks", "person")


class SyntheticEvaluator:
    """Scores prompts without pictures. "alignment" is the share of the target parts present, "likeness" falls
    with every part that is neither the person's own words nor a target. The optimum is exactly the target
    parts: alignment 1, likeness 1. Seeds add a prompt-independent offset, so the ranking never depends on them."""

    score_names = ["alignment", "likeness"]
    fingerprint = "synthetic-v1"

    def __init__(self, intent: Intent, fail_on_call: int | None = None) -> None:
        self.own = {part.key for part in split_parts(intent.start_prompt)}
        self.calls = 0
        self.evaluated: list[tuple[str, int]] = []
        self.fail_on_call = fail_on_call

    def scores(self, prompt: str, seed: int) -> dict[str, float]:
        parts = {part.key for part in split_parts(prompt)}
        alignment = len(parts & TARGET) / len(TARGET)
        likeness = max(0.0, 1.0 - 0.25 * len(parts - TARGET - self.own))
        return {"alignment": alignment, "likeness": likeness, "total": (alignment + likeness) / 2 + 0.001 * seed}

    def evaluate(self, intent, prompts, seeds):
        self.calls += 1
        if self.fail_on_call is not None and self.calls == self.fail_on_call:
            raise KeyboardInterrupt  # the person pressed stop, or the kernel died
        self.evaluated += list(zip(prompts, seeds, strict=True))
        return [self.scores(prompt, seed) for prompt, seed in zip(prompts, seeds, strict=True)]


def small_search(**overrides) -> SearchSettings:
    values = dict(rounds=25, candidates_per_round=6, seeds=[0, 1], top_k=4, seed=0)
    values.update(overrides)
    return SearchSettings(**values)


def vocabulary_proposers():
    return [VocabularyProposer(SMALL_VOCABULARY)]


def test_search_finds_the_known_optimum_and_best_never_decreases(tmp_path):
    intent = make_intent()
    evaluator = SyntheticEvaluator(intent)
    result = run_search(evaluator, [intent], vocabulary_proposers(), small_search(), tmp_path, progress=False)
    search = result.intents[0]

    best_so_far = [summary.best_so_far for summary in search.rounds]
    assert best_so_far == sorted(best_so_far), "the best score so far went down between rounds"
    best = search.best()[0]
    assert best.scores["alignment"] == 1.0 and best.scores["likeness"] == 1.0, best.prompt
    assert {part.key for part in split_parts(best.prompt)} >= TARGET
    assert "sks person" in best.prompt and "astronaut on mars" in best.prompt.lower()

    frame = pd.read_csv(tmp_path / "candidates.csv")
    assert list(frame.columns[:5]) == ["intent", "round", "proposer", "prompt", "seed"]
    assert {"alignment", "likeness", "total"} <= set(frame.columns)
    assert set(frame["proposer"]) == {"start", "vocabulary"}
    assert frame.groupby("prompt")["seed"].apply(lambda seeds: sorted(seeds) == [0, 1]).all(), "every prompt on every seed"
    assert not frame.duplicated(["prompt", "seed"]).any(), "a prompt was tried twice"
    assert frame.loc[frame["round"] == 0, "prompt"].unique().tolist() == [intent.start_prompt]
    # what the CSV says is what the search believed, round by round
    for summary in search.rounds:
        upto = frame[frame["round"] <= summary.round].groupby("prompt")["total"].mean().max()
        assert summary.best_so_far == pytest.approx(upto)


def test_optimum_is_found_with_the_full_vocabulary_too(tmp_path):
    intent = make_intent()
    result = run_search(SyntheticEvaluator(intent), [intent], [VocabularyProposer()],
                        small_search(rounds=40, candidates_per_round=8), tmp_path, progress=False)
    best = result.intents[0].best()[0]
    assert (best.scores["alignment"], best.scores["likeness"]) == (1.0, 1.0), best.prompt


def test_picture_budget_and_patience_stop_the_search(tmp_path):
    intent = make_intent()
    budget = run_search(SyntheticEvaluator(intent), [intent], vocabulary_proposers(),
                        small_search(max_images=15), tmp_path / "budget", progress=False)
    frame = pd.read_csv(tmp_path / "budget" / "candidates.csv")
    assert len(frame) <= 15 and "budget" in budget.intents[0].stop_reason

    class Flat(SyntheticEvaluator):
        def scores(self, prompt, seed):
            return {"alignment": 0.5, "likeness": 0.5, "total": 0.5}

    flat = run_search(Flat(intent), [intent], vocabulary_proposers(), small_search(patience=2), tmp_path / "flat",
                      progress=False)
    assert [summary.round for summary in flat.intents[0].rounds] == [0, 1, 2]
    assert flat.intents[0].stop_reason == "no improvement for 2 rounds"

    timed = run_search(SyntheticEvaluator(intent), [intent], vocabulary_proposers(), small_search(max_minutes=1e-9),
                       tmp_path / "timed", progress=False)
    assert "time budget" in timed.intents[0].stop_reason and len(timed.intents[0].rounds) == 1


def test_resume_continues_from_the_csv_as_if_never_interrupted(tmp_path):
    intent = make_intent()
    settings = small_search(rounds=6)
    uninterrupted = run_search(SyntheticEvaluator(intent), [intent], vocabulary_proposers(), settings,
                               tmp_path / "whole", progress=False)
    assert uninterrupted.resumed_rows == 0

    # interrupted while scoring round 4 (call 1 is round 0)
    crashing = SyntheticEvaluator(intent, fail_on_call=5)
    with pytest.raises(KeyboardInterrupt):
        run_search(crashing, [intent], vocabulary_proposers(), settings, tmp_path / "resumed", progress=False)
    partial = pd.read_csv(tmp_path / "resumed" / "candidates.csv")
    assert sorted(partial["round"].unique()) == [0, 1, 2, 3]

    resumed_evaluator = SyntheticEvaluator(intent)
    resumed = run_search(resumed_evaluator, [intent], vocabulary_proposers(), settings, tmp_path / "resumed",
                         progress=False)
    assert resumed.resumed_rows == len(partial)
    assert resumed_evaluator.calls == 3, "only rounds 4, 5 and 6 were scored again"
    assert not set(resumed_evaluator.evaluated) & set(zip(partial["prompt"], partial["seed"], strict=True))
    whole = pd.read_csv(tmp_path / "whole" / "candidates.csv")
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "resumed" / "candidates.csv"), whole)


def test_resume_after_the_person_changed_their_starting_prompt(tmp_path):
    intent = make_intent()
    run_search(SyntheticEvaluator(intent), [intent], vocabulary_proposers(), small_search(rounds=2), tmp_path,
               progress=False)
    changed = Intent.create(intent.text, "sks", "person", start_prompt="sks person on Mars, oil painting")
    evaluator = SyntheticEvaluator(changed)
    result = run_search(evaluator, [changed], vocabulary_proposers(), small_search(rounds=3), tmp_path, progress=False)
    search = result.intents[0]
    assert search.start.prompt == "sks person on Mars, oil painting" and search.start.round == 0
    assert evaluator.evaluated[:2] == [("sks person on Mars, oil painting", 0), ("sks person on Mars, oil painting", 1)]
    assert sorted({item.round for item in search.history}) == [0, 1, 2, 3], "the earlier rounds are kept"


def test_resume_with_other_settings_starts_fresh_and_keeps_the_old_file(tmp_path, capsys):
    intent = make_intent()
    run_search(SyntheticEvaluator(intent), [intent], vocabulary_proposers(), small_search(rounds=2), tmp_path,
               progress=False)
    other = run_search(SyntheticEvaluator(intent), [intent], vocabulary_proposers(),
                       small_search(rounds=2, seeds=[5, 6]), tmp_path, progress=False)
    assert other.resumed_rows == 0
    assert "other generation or scoring settings" in capsys.readouterr().out
    assert len(list(tmp_path.glob("candidates.previous-*.csv"))) == 1
    assert set(pd.read_csv(tmp_path / "candidates.csv")["seed"]) == {5, 6}


def test_several_intents_in_one_run_each_with_its_own_start(tmp_path):
    intents = [make_intent(), Intent.create("{subject} painted by Vermeer", "sks", "person",
                                            start_prompt="sks person, vermeer painting")]
    result = run_search(SyntheticEvaluator(intents[0]), intents, vocabulary_proposers(), small_search(rounds=2),
                        tmp_path, progress=False)
    frame = pd.read_csv(tmp_path / "candidates.csv")
    assert set(frame["intent"]) == {intent.text for intent in intents}
    assert [search.start.prompt for search in result.intents] == ["sks person as an astronaut on Mars",
                                                                   "sks person, vermeer painting"]
    vermeer = frame[frame["intent"] == intents[1].text]
    assert vermeer["prompt"].str.contains("vermeer painting").all(), "the person's own words are never dropped"


# --- the image cache ------------------------------------------------------------------------------------------


class CountingGenerator:
    def __init__(self, steps: int = 4) -> None:
        self.settings = {"steps": steps, "model": "fake"}
        self.generated: list[tuple[str, int]] = []

    def generate(self, prompts, seeds):
        self.generated += list(zip(prompts, seeds, strict=True))
        return [Image.new("RGB", (16, 16), (hash(p) % 256, seed % 256, 0)) for p, seed in zip(prompts, seeds, strict=True)]


class RecordingScorer:
    """Scores the red channel; remembers the texts it was given."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.texts: list[str] = []

    def score(self, images, texts):
        self.texts += list(texts)
        return [image.getpixel((0, 0))[0] / 255 for image in images]


def test_cache_prevents_generating_any_picture_twice(tmp_path):
    intent = make_intent()
    objective = Objective({"alignment": RecordingScorer("alignment")}, {"alignment": 1.0})
    generator = CountingGenerator()
    evaluator = ImageEvaluator(generator, objective, ImageCache(tmp_path / "cache"))
    first = evaluator.evaluate(intent, ["a", "b"], [1, 2])
    again = evaluator.evaluate(intent, ["a", "b", "c"], [1, 2, 1])
    assert generator.generated == [("a", 1), ("b", 2), ("c", 1)]
    assert again[:2] == first and evaluator.generated == 3

    # a new session (new evaluator, same folder) reuses the pictures on disk
    restarted = CountingGenerator()
    ImageEvaluator(restarted, objective, ImageCache(tmp_path / "cache")).evaluate(intent, ["a", "c"], [1, 1])
    assert restarted.generated == []
    # other generation settings are other pictures
    changed = CountingGenerator(steps=30)
    ImageEvaluator(changed, objective, ImageCache(tmp_path / "cache")).evaluate(intent, ["a"], [1])
    assert changed.generated == [("a", 1)]


def test_search_over_pictures_generates_each_pair_once(tmp_path):
    intent = make_intent()
    objective = Objective({"alignment": RecordingScorer("alignment")}, {"alignment": 1.0})
    generator = CountingGenerator()
    evaluator = ImageEvaluator(generator, objective, ImageCache(tmp_path / "cache"))
    run_search(evaluator, [intent], vocabulary_proposers(), small_search(rounds=3, candidates_per_round=3),
               tmp_path, progress=False)
    frame = pd.read_csv(tmp_path / "candidates.csv")
    assert len(generator.generated) == len(frame) == len(set(generator.generated))
    assert all((tmp_path / image).exists() for image in frame["image"]), "every row points at its cached picture"
    # the held-out check on a seed already rendered generates nothing new for that pair
    start = ScoredPrompt(intent.start_prompt, {"alignment": 0.1, "total": 0.1})
    before = len(generator.generated)
    heldout_check(evaluator, intent, [], start, [0])
    assert len(generator.generated) == before


# --- the objective --------------------------------------------------------------------------------------------


def test_alignment_is_scored_against_the_intent_never_the_candidate():
    intent = make_intent("a photo of {subject} as an astronaut on Mars, cinematic")
    alignment, likeness = RecordingScorer("alignment"), RecordingScorer("likeness")
    objective = Objective({"alignment": alignment, "likeness": likeness, "aesthetic": RecordingScorer("aesthetic")},
                          {"alignment": 3.0, "likeness": 1.0, "aesthetic": 0.0})
    images = [Image.new("RGB", (4, 4), (255, 0, 0)), Image.new("RGB", (4, 4), (0, 0, 0))]
    rows = objective.score(images, intent)
    assert set(alignment.texts) == {"a photo of person as an astronaut on Mars, cinematic"}
    assert rows[0] == {"alignment": 1.0, "likeness": 1.0, "total": 1.0}
    assert rows[1]["total"] == 0.0 and "aesthetic" not in rows[0], "a zero weight skips the scorer"
    assert objective.total({"alignment": 1.0, "likeness": 0.0}) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="above zero"):
        Objective({"alignment": alignment}, {"alignment": 0.0})


# --- proposals ------------------------------------------------------------------------------------------------


def test_clean_proposal_keeps_the_subject_and_skips_garbage():
    intent = make_intent()
    assert clean_proposal('1. "sks person on Mars, cinematic, golden hour lighting"', intent) == \
        "sks person on Mars, cinematic, golden hour lighting"
    assert clean_proposal("- an astronaut on the red planet, dramatic lighting", intent) == \
        "photo of sks person, an astronaut on the red planet, dramatic lighting"
    assert clean_proposal("{subject} on Mars, (cinematic:1.3), film grain", intent) == "sks person on Mars, cinematic, film grain"
    assert clean_proposal("{subject} on Mars, (cinematic:1.3)", intent, weighted_syntax=True) == "sks person on Mars, (cinematic:1.3)"
    for garbage in ["", "   ", "Here are five prompts:", "%%% 1234 ### !!!", "ok", "\ufffd\ufffd\ufffd sks"]:
        assert clean_proposal(garbage, intent) is None, garbage
    long = "sks person on Mars, " + ", ".join(f"very detailed element number {i}" for i in range(40))
    cleaned = clean_proposal(long, intent)
    assert clip_token_count(cleaned) <= 75 and cleaned.startswith("sks person on Mars")


def context_for(intent: Intent, history: list[ScoredPrompt], weighted: bool = False, seed: int = 0) -> ProposalContext:
    return ProposalContext(intent=intent, history=history, round_index=1, rng=random.Random(seed),
                           score_names=["alignment"], weighted_syntax=weighted)


def test_vocabulary_proposer_mutates_without_losing_the_intent():
    intent = make_intent("{subject} as an astronaut on Mars, cinematic")
    history = [ScoredPrompt("sks person as an astronaut on Mars, cinematic, oil painting, serene", {"total": 0.5}),
               ScoredPrompt(intent.start_prompt, {"total": 0.3})]
    proposals = VocabularyProposer().propose(context_for(intent, history), 40)
    assert len(proposals) == len(set(proposals)) == 40
    assert not {item.prompt for item in history} & set(proposals)
    for prompt in proposals:
        parts = [part.key for part in split_parts(prompt)]
        assert parts[0] == "sks person as an astronaut on mars" and "cinematic" in parts
        assert "(" not in prompt, "no weight syntax unless the generator reads it"
    weighted = VocabularyProposer().propose(context_for(intent, history, weighted=True), 40)
    assert any(":1." in prompt or ":0." in prompt for prompt in weighted)
    # same seed, same proposals: what makes a resumed search repeat an uninterrupted one
    assert VocabularyProposer().propose(context_for(intent, history), 40) == proposals


# --- held-out statistics --------------------------------------------------------------------------------------


def test_heldout_seeds_and_uplift_statistics():
    seeds = heldout_seeds(0, 4, search_seeds=[0, 1, 100_000])
    assert len(seeds) == 4 and not set(seeds) & {0, 1, 100_000}
    uplift = paired_uplift([0.5, 0.6, 0.7, 0.8], [0.4, 0.4, 0.5, 0.5], seed=3)
    assert uplift.mean == pytest.approx(0.2) and 0.1 <= uplift.ci_low <= 0.2 <= uplift.ci_high <= 0.3
    assert (uplift.wins, uplift.losses) == (4, 0) and uplift.sign_test_p == pytest.approx(0.125)
    assert paired_uplift([0.5, 0.6, 0.7, 0.8], [0.4, 0.4, 0.5, 0.5], seed=3) == uplift, "seeded: same interval"
    mixed = paired_uplift([0.5, 0.3, 0.6, 0.2], [0.4, 0.4, 0.4, 0.4], seed=0)
    assert mixed.ci_low < 0 < mixed.ci_high
    assert sign_test(0, 0) == 1.0 and sign_test(10, 0) == pytest.approx(2 / 1024)


def test_heldout_check_ranks_on_heldout_scores(tmp_path):
    intent = make_intent()
    evaluator = SyntheticEvaluator(intent)
    start = ScoredPrompt(intent.start_prompt, {"alignment": 0.0, "likeness": 1.0, "total": 0.5})
    finalists = [ScoredPrompt(f"{intent.start_prompt}, golden hour lighting, neon glow", {"total": 0.9}),
                 ScoredPrompt(f"{intent.start_prompt}, golden hour lighting, oil painting", {"total": 0.8})]
    seeds = heldout_seeds(0, 3, [0, 1])
    result = heldout_check(evaluator, intent, finalists, start, seeds)
    assert set(evaluator.evaluated) == {(p, s) for p in [start.prompt] + [f.prompt for f in finalists] for s in seeds}
    assert [entry.prompt for entry in result.finalists] == [finalists[1].prompt, finalists[0].prompt]
    assert result.search_pick.prompt == finalists[0].prompt
    assert result.finalists[0].uplift.mean == pytest.approx(1 / 3 * 2 / 2 + 0)  # alignment +2/3, likeness 0
    assert {row["role"] for row in result.rows} == {"start", "finalist"} and len(result.rows) == 9
