"""The prompt search without a diffusion model: a synthetic objective with a known optimum, the image cache,
resuming from candidates.csv, cleaning of proposals, the objective's use of the intent, and the held-out
statistics."""

from __future__ import annotations

import math
import random
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import stats

from sdxlab.evaluate import LikenessUnavailable
from sdxlab.prompt_search.evaluation import ImageCache, ImageEvaluator
from sdxlab.prompt_search.heldout import (
    heldout_check,
    heldout_for_search,
    heldout_seeds,
    holm,
    paired_interval,
    paired_uplift,
    permutation_p,
)
from sdxlab.prompt_search.objective import (
    DEFAULT_WEIGHTS,
    ClipMeasure,
    Intent,
    LikenessMeasure,
    LikenessScale,
    Objective,
    copy_reference,
)
from sdxlab.prompt_search.pareto import choose_on_front, pareto_front
from sdxlab.prompt_search.plots import pareto_figure, pareto_pictures_figure
from sdxlab.prompt_search.proposers import (
    ProposalContext,
    ScoredPrompt,
    VocabularyProposer,
    clean_proposal,
    clip_token_count,
)
from sdxlab.prompt_search.search import IntentSearch, SearchResult, SearchSettings, round_summaries, run_search
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
    assert frame.groupby("prompt")["seed"].apply(lambda seeds: sorted(seeds) == [0, 1]).all(), (
        "every prompt on every seed"
    )
    assert not frame.duplicated(["prompt", "seed"]).any(), "a prompt was tried twice"
    assert frame.loc[frame["round"] == 0, "prompt"].unique().tolist() == [intent.start_prompt]
    # what the CSV says is what the search believed, round by round
    for summary in search.rounds:
        upto = frame[frame["round"] <= summary.round].groupby("prompt")["total"].mean().max()
        assert summary.best_so_far == pytest.approx(upto)


def test_optimum_is_found_with_the_full_vocabulary_too(tmp_path):
    intent = make_intent()
    result = run_search(
        SyntheticEvaluator(intent),
        [intent],
        [VocabularyProposer()],
        small_search(rounds=40, candidates_per_round=8),
        tmp_path,
        progress=False,
    )
    best = result.intents[0].best()[0]
    assert (best.scores["alignment"], best.scores["likeness"]) == (1.0, 1.0), best.prompt


def test_picture_budget_and_patience_stop_the_search(tmp_path):
    intent = make_intent()
    budget = run_search(
        SyntheticEvaluator(intent),
        [intent],
        vocabulary_proposers(),
        small_search(max_images=15),
        tmp_path / "budget",
        progress=False,
    )
    frame = pd.read_csv(tmp_path / "budget" / "candidates.csv")
    assert len(frame) <= 15 and "budget" in budget.intents[0].stop_reason

    class Flat(SyntheticEvaluator):
        def scores(self, prompt, seed):
            return {"alignment": 0.5, "likeness": 0.5, "total": 0.5}

    flat = run_search(
        Flat(intent), [intent], vocabulary_proposers(), small_search(patience=2), tmp_path / "flat", progress=False
    )
    assert [summary.round for summary in flat.intents[0].rounds] == [0, 1, 2]
    assert flat.intents[0].stop_reason == "no improvement for 2 rounds"

    timed = run_search(
        SyntheticEvaluator(intent),
        [intent],
        vocabulary_proposers(),
        small_search(max_minutes=1e-9),
        tmp_path / "timed",
        progress=False,
    )
    assert "time budget" in timed.intents[0].stop_reason and len(timed.intents[0].rounds) == 1


def test_resume_continues_from_the_csv_as_if_never_interrupted(tmp_path):
    intent = make_intent()
    settings = small_search(rounds=6)
    uninterrupted = run_search(
        SyntheticEvaluator(intent), [intent], vocabulary_proposers(), settings, tmp_path / "whole", progress=False
    )
    assert uninterrupted.resumed_rows == 0

    # interrupted while scoring round 4 (call 1 is round 0)
    crashing = SyntheticEvaluator(intent, fail_on_call=5)
    with pytest.raises(KeyboardInterrupt):
        run_search(crashing, [intent], vocabulary_proposers(), settings, tmp_path / "resumed", progress=False)
    partial = pd.read_csv(tmp_path / "resumed" / "candidates.csv")
    assert sorted(partial["round"].unique()) == [0, 1, 2, 3]

    resumed_evaluator = SyntheticEvaluator(intent)
    resumed = run_search(
        resumed_evaluator, [intent], vocabulary_proposers(), settings, tmp_path / "resumed", progress=False
    )
    assert resumed.resumed_rows == len(partial)
    assert resumed_evaluator.calls == 3, "only rounds 4, 5 and 6 were scored again"
    assert not set(resumed_evaluator.evaluated) & set(zip(partial["prompt"], partial["seed"], strict=True))
    whole = pd.read_csv(tmp_path / "whole" / "candidates.csv")
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "resumed" / "candidates.csv"), whole)


def test_resume_after_the_person_changed_their_starting_prompt(tmp_path):
    intent = make_intent()
    run_search(
        SyntheticEvaluator(intent), [intent], vocabulary_proposers(), small_search(rounds=2), tmp_path, progress=False
    )
    changed = Intent.create(intent.text, "sks", "person", start_prompt="sks person on Mars, oil painting")
    evaluator = SyntheticEvaluator(changed)
    result = run_search(evaluator, [changed], vocabulary_proposers(), small_search(rounds=3), tmp_path, progress=False)
    search = result.intents[0]
    assert search.start.prompt == "sks person on Mars, oil painting" and search.start.round == 0
    assert evaluator.evaluated[:2] == [("sks person on Mars, oil painting", 0), ("sks person on Mars, oil painting", 1)]
    assert sorted({item.round for item in search.history}) == [0, 1, 2, 3], "the earlier rounds are kept"


def test_resume_with_other_settings_starts_fresh_and_keeps_the_old_file(tmp_path, capsys):
    intent = make_intent()
    run_search(
        SyntheticEvaluator(intent), [intent], vocabulary_proposers(), small_search(rounds=2), tmp_path, progress=False
    )
    other = run_search(
        SyntheticEvaluator(intent),
        [intent],
        vocabulary_proposers(),
        small_search(rounds=2, seeds=[5, 6]),
        tmp_path,
        progress=False,
    )
    assert other.resumed_rows == 0
    assert "other generation or scoring settings" in capsys.readouterr().out
    assert len(list(tmp_path.glob("candidates.previous-*.csv"))) == 1
    assert set(pd.read_csv(tmp_path / "candidates.csv")["seed"]) == {5, 6}


def test_several_intents_in_one_run_each_with_its_own_start(tmp_path):
    intents = [
        make_intent(),
        Intent.create("{subject} painted by Vermeer", "sks", "person", start_prompt="sks person, vermeer painting"),
    ]
    result = run_search(
        SyntheticEvaluator(intents[0]),
        intents,
        vocabulary_proposers(),
        small_search(rounds=2),
        tmp_path,
        progress=False,
    )
    frame = pd.read_csv(tmp_path / "candidates.csv")
    assert set(frame["intent"]) == {intent.text for intent in intents}
    assert [search.start.prompt for search in result.intents] == [
        "sks person as an astronaut on Mars",
        "sks person, vermeer painting",
    ]
    vermeer = frame[frame["intent"] == intents[1].text]
    assert vermeer["prompt"].str.contains("vermeer painting").all(), "the person's own words are never dropped"


# --- the image cache ------------------------------------------------------------------------------------------


class CountingGenerator:
    def __init__(self, steps: int = 4) -> None:
        self.settings = {"steps": steps, "model": "fake"}
        self.generated: list[tuple[str, int]] = []

    def generate(self, prompts, seeds):
        self.generated += list(zip(prompts, seeds, strict=True))
        return [
            Image.new("RGB", (16, 16), (hash(p) % 256, seed % 256, 0)) for p, seed in zip(prompts, seeds, strict=True)
        ]


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
    run_search(
        evaluator,
        [intent],
        vocabulary_proposers(),
        small_search(rounds=3, candidates_per_round=3),
        tmp_path,
        progress=False,
    )
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
    objective = Objective(
        {"alignment": alignment, "likeness": likeness, "aesthetic": RecordingScorer("aesthetic")},
        {"alignment": 3.0, "likeness": 1.0, "aesthetic": 0.0},
    )
    images = [Image.new("RGB", (4, 4), (255, 0, 0)), Image.new("RGB", (4, 4), (0, 0, 0))]
    rows = objective.score(images, intent)
    assert set(alignment.texts) == {"a photo of person as an astronaut on Mars, cinematic"}
    assert rows[0] == {"alignment": 1.0, "likeness": 1.0, "total": 4.0}
    assert rows[1]["total"] == 0.0 and "aesthetic" not in rows[0], "a zero weight skips the scorer"
    assert objective.total({"alignment": 1.0, "likeness": 0.0}) == pytest.approx(3.0)
    assert objective.formula() == "total = 3 x alignment + 1 x likeness"
    with pytest.raises(ValueError, match="above zero"):
        Objective({"alignment": alignment}, {"alignment": 0.0})


class PixelFaces:
    """Stands in for `sdxlab.evaluate.LikenessScorer`: the green channel is the identity similarity x 100
    (0: no face found)."""

    def measure(self, images):
        readings = []
        for image in images:
            green = image.getpixel((0, 0))[1]
            readings.append(SimpleNamespace(similarity=green / 100 if green else None))
        return readings


class PixelClip:
    """Stands in for the CLIP measure: the red channel is CLIP-T x 500."""

    columns = ["clip_t"]

    def measure(self, images, texts):
        return {"clip_t": [image.getpixel((0, 0))[0] / 500 for image in images]}


def picture(clip_t: float, similarity: float | None) -> Image.Image:
    return Image.new("RGB", (4, 4), (round(clip_t * 500), round((similarity or 0) * 100), 0))


SCALE = LikenessScale(floor=0.85, ceiling=0.95, source="test")  # dlib cosines: strangers ~0.85, own photos ~0.95


def test_likeness_is_on_the_calibrated_scale():
    assert SCALE.position(0.85) == 0.0 and SCALE.position(0.95) == pytest.approx(1.0)
    assert SCALE.position(0.90) == pytest.approx(0.5)
    assert SCALE.position(None) == 0.0, "no face sits at the floor"
    assert SCALE.position(0.70) == 0.0, "a stranger's face is no better than no face"
    measure = LikenessMeasure(PixelFaces(), SCALE)
    values = measure.measure([picture(0.3, 0.93), picture(0.3, None)], ["x", "x"])
    assert values["likeness"] == pytest.approx([0.8, 0.0]) and values["face_found"] == [1.0, 0.0]


def test_04s_calibration_is_used_only_when_it_was_made_from_this_dataset(tmp_path):
    import json

    dataset = tmp_path / "dataset"
    dataset.mkdir()
    (dataset / "metadata.jsonl").write_text("{}")
    summary = tmp_path / "metrics" / "summary.json"
    summary.parent.mkdir()
    calibration = {"training_faces": 12, "floor": {"mean": 0.84}, "ceiling": {"mean": 0.96}}
    summary.write_text(json.dumps({"dataset_dir": str(dataset), "calibration": calibration}))
    scale = LikenessScale.from_summary(summary, dataset, training_faces=12)
    assert (scale.floor, scale.ceiling) == (0.84, 0.96) and "04_evaluate" in scale.source
    assert LikenessScale.from_summary(summary, dataset, training_faces=11) is None, "other photos: stale"
    assert LikenessScale.from_summary(summary, tmp_path, training_faces=12) is None, "another dataset"
    summary.write_text(
        json.dumps({"dataset_dir": str(dataset), "calibration": {**calibration, "floor": {"mean": None}}})
    )
    with pytest.raises(LikenessUnavailable, match="floor"):
        LikenessScale.from_summary(summary, dataset, training_faces=12)
    assert LikenessScale.from_summary(tmp_path / "missing.json", dataset, training_faces=12) is None


def test_losing_the_face_on_one_seed_no_longer_outranks_better_meaning():
    """The face cliff: a wide shot that shows the intent better but loses the face on one of two seeds,
    against a close-up that keeps the face and shows the intent less (CLIP-T 0.30 vs 0.27)."""
    intent = make_intent()
    objective = Objective(
        {"clip": PixelClip(), "likeness": LikenessMeasure(PixelFaces(), SCALE)},
        {name: DEFAULT_WEIGHTS[name] for name in ("clip_t", "likeness")},
    )

    def mean_total(pictures):
        return np.mean([row["total"] for row in objective.score(pictures, intent)])

    wide = [picture(0.30, 0.93), picture(0.30, None)]
    close_up = [picture(0.27, 0.93), picture(0.27, 0.93)]
    assert mean_total(wide) > mean_total(close_up), "better meaning wins despite one lost face"

    def old_total(clip_t, similarity):  # before: raw cosine, 0 without a face, weighted mean 1:1
        return (clip_t + (similarity or 0.0)) / 2

    assert old_total(0.30, 0.93) + old_total(0.30, None) < 2 * old_total(0.27, 0.93), "the old objective's cliff"

    # with equal meaning, keeping the face still counts: the penalty is graded, not gone
    assert mean_total([picture(0.30, 0.93), picture(0.30, 0.93)]) > mean_total(wide)
    rows = objective.score(wide, intent)
    assert [row["face_found"] for row in rows] == [1.0, 0.0], "face detection is its own column"
    assert rows[0]["total"] - rows[1]["total"] == pytest.approx(0.05 * 0.8), "the cost of the lost face"


class FakeClip:
    """A CLIP whose image embedding is the picture's mean colour (normalised) and whose text embedding is fixed."""

    meaningful = False

    def embed_images(self, images):
        vectors = np.array([np.asarray(image, dtype=float).reshape(-1, 3).mean(axis=0) + 1.0 for image in images])
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def embed_texts(self, texts):
        return np.tile(np.ones(3) / np.sqrt(3), (len(texts), 1))


def test_pictures_that_copy_a_training_photo_are_penalised(tmp_path):
    from sdxlab.evaluate import ClipAlignmentScorer

    for index, colour in enumerate([(200, 60, 60), (180, 80, 60), (190, 60, 80)]):
        Image.new("RGB", (8, 8), colour).save(tmp_path / f"{index}.png")
    clip = FakeClip()
    reference = copy_reference(clip, tmp_path)
    measure = ClipMeasure(ClipAlignmentScorer(clip=clip), reference)
    objective = Objective({"clip": measure}, {"clip_t": 1.0, "copy": -0.1})
    copied, fresh = Image.new("RGB", (8, 8), (200, 60, 60)), Image.new("RGB", (8, 8), (30, 30, 200))
    rows = objective.score([copied, fresh], make_intent())
    assert [row["copy"] for row in rows] == [1.0, 0.0]
    assert rows[0]["total"] == pytest.approx(rows[0]["clip_t"] - 0.1)
    assert objective.score_names == ["clip_t", "copy"] and objective.formula() == "total = 1 x clip_t - 0.1 x copy"


def test_every_term_is_kept_per_picture_in_candidates_csv(tmp_path):
    intent = make_intent()
    objective = Objective(
        {"clip": PixelClip(), "likeness": LikenessMeasure(PixelFaces(), SCALE)}, {"clip_t": 1.0, "likeness": 0.05}
    )

    class Generator:
        settings = {"model": "pixels"}

        def generate(self, prompts, seeds):
            return [
                picture(0.25 + 0.01 * (len(p) % 5), None if seed % 2 else 0.93)
                for p, seed in zip(prompts, seeds, strict=True)
            ]

    evaluator = ImageEvaluator(Generator(), objective, ImageCache(tmp_path / "cache"))
    run_search(
        evaluator,
        [intent],
        vocabulary_proposers(),
        small_search(rounds=2, candidates_per_round=2),
        tmp_path,
        progress=False,
    )
    frame = pd.read_csv(tmp_path / "candidates.csv")
    assert {"clip_t", "likeness", "face_found", "total"} <= set(frame.columns)
    assert set(frame.loc[frame["seed"] == 1, "face_found"]) == {0.0} and set(
        frame.loc[frame["seed"] == 0, "face_found"]
    ) == {1.0}
    assert frame["total"].to_numpy() == pytest.approx((frame["clip_t"] + 0.05 * frame["likeness"]).to_numpy())


# --- proposals ------------------------------------------------------------------------------------------------


def test_clean_proposal_keeps_the_subject_and_skips_garbage():
    intent = make_intent()
    assert (
        clean_proposal('1. "sks person on Mars, cinematic, golden hour lighting"', intent)
        == "sks person on Mars, cinematic, golden hour lighting"
    )
    assert (
        clean_proposal("- an astronaut on the red planet, dramatic lighting", intent)
        == "photo of sks person, an astronaut on the red planet, dramatic lighting"
    )
    assert (
        clean_proposal("{subject} on Mars, (cinematic:1.3), film grain", intent)
        == "sks person on Mars, cinematic, film grain"
    )
    for garbage in ["", "   ", "Here are five prompts:", "%%% 1234 ### !!!", "ok", "\ufffd\ufffd\ufffd sks"]:
        assert clean_proposal(garbage, intent) is None, garbage
    long = "sks person on Mars, " + ", ".join(f"very detailed element number {i}" for i in range(40))
    cleaned = clean_proposal(long, intent)
    assert clip_token_count(cleaned) <= 75 and cleaned.startswith("sks person on Mars")


def context_for(intent: Intent, history: list[ScoredPrompt], seed: int = 0) -> ProposalContext:
    return ProposalContext(
        intent=intent, history=history, round_index=1, rng=random.Random(seed), score_names=["alignment"]
    )


def test_vocabulary_proposer_mutates_without_losing_the_intent():
    intent = make_intent("{subject} as an astronaut on Mars, cinematic")
    history = [
        ScoredPrompt("sks person as an astronaut on Mars, cinematic, oil painting, serene", {"total": 0.5}),
        ScoredPrompt(intent.start_prompt, {"total": 0.3}),
    ]
    proposals = VocabularyProposer().propose(context_for(intent, history), 40)
    assert len(proposals) == len(set(proposals)) == 40
    assert not {item.prompt for item in history} & set(proposals)
    for prompt in proposals:
        parts = [part.key for part in split_parts(prompt)]
        assert parts[0] == "sks person as an astronaut on mars" and "cinematic" in parts
        assert "(" not in prompt, "no weight syntax: the sampler would read it as text"
    weighted_parent = [
        ScoredPrompt("sks person as an astronaut on Mars, (cinematic:1.3), (serene:0.8)", {"total": 0.9})
    ]
    many = VocabularyProposer().propose(context_for(intent, weighted_parent + history, seed=1), 200)
    assert not any(re.search(r":\d", prompt) for prompt in many), "no mutation writes a prompt weight"
    # same seed, same proposals: what makes a resumed search repeat an uninterrupted one
    assert VocabularyProposer().propose(context_for(intent, history), 40) == proposals


# --- held-out statistics --------------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def default_heldout_seed_counts() -> dict[str, int]:
    """search_heldout_seed_count of the notebook's parameters cell and of every profile that sets it."""
    import json

    import yaml

    notebook = json.loads((ROOT / "notebooks" / "05_prompt_search.ipynb").read_text())
    cell = next(cell for cell in notebook["cells"] if "parameters" in cell["metadata"].get("tags", []))
    namespace: dict = {}
    exec("".join(cell["source"]), namespace)
    counts = {"notebook": namespace["search_heldout_seed_count"]}
    for profile in sorted((ROOT / "env" / "profiles").glob("*.yaml")):
        values = yaml.safe_load(profile.read_text()) or {}  # a profile may hold only comments (the demo)
        if "search_heldout_seed_count" in values:
            counts[profile.stem] = values["search_heldout_seed_count"]
    return counts


def realistic_totals(rng, shape, uplift: float = 0.0):
    """Per-picture totals the size the default objective gives with real scorers: CLIP-T 0.28 +- 0.015 from
    seed to seed, plus 0.05 x likeness (position 0.75 +- 0.15, at the floor when the face is lost, 15% of
    pictures)."""
    clip = rng.normal(0.28, 0.015, shape)
    likeness = np.clip(rng.normal(0.75, 0.15, shape), 0, None) * (rng.random(shape) > 0.15)
    return clip + 0.05 * likeness + uplift


@pytest.mark.parametrize("uplift", [0.0, 0.02])
def test_heldout_interval_covers_the_true_uplift_95_percent_of_the_time(uplift):
    """3000 simulated held-out checks per seed count: the standard error of a 95% coverage is 0.4 points, so
    the 93-97% band is five standard errors wide and a 90% interval (or the old bootstrap's 82%) fails it."""
    rng = np.random.default_rng(12)
    for where, count in default_heldout_seed_counts().items():
        finalist, start = realistic_totals(rng, (3000, count), uplift), realistic_totals(rng, (3000, count))
        covered = [low <= uplift <= high for low, high in (paired_interval(d) for d in finalist - start)]
        assert 0.93 <= np.mean(covered) <= 0.97, (where, count, np.mean(covered))
    differences = finalist[0] - start[0]
    assert (
        paired_uplift(finalist[0], start[0]).ci_low,
        paired_uplift(finalist[0], start[0]).ci_high,
    ) == paired_interval(differences), "the check reports the interval whose coverage was measured"


def test_paired_test_can_reach_significance_at_the_default_seed_counts():
    for where, count in default_heldout_seed_counts().items():
        assert count >= 6, f"{where}: with {count} held-out seeds no paired test can reach p < 0.05"
        clear = paired_uplift(np.linspace(0.31, 0.33, count), np.full(count, 0.30))
        assert clear.p < 0.05 and clear.wins == count, where
    assert permutation_p([0.1, 0.2, 0.3, 0.4]) == pytest.approx(2 / 16), "exact: every sign pattern counted"
    assert permutation_p([0.0, 0.0]) == 1.0
    assert 0.4 < permutation_p([0.1, -0.1, 0.05, -0.02, 0.01, -0.03]) <= 1.0


def test_uplift_and_holm_correction():
    seeds = heldout_seeds(0, 6, search_seeds=[0, 1, 100_000])
    assert len(seeds) == 6 and not set(seeds) & {0, 1, 100_000}
    uplift = paired_uplift([0.5, 0.6, 0.7, 0.8], [0.4, 0.4, 0.5, 0.5])
    assert uplift.mean == pytest.approx(0.2) and uplift.ci_low < 0.2 < uplift.ci_high
    half = stats.t.ppf(0.975, 3) * np.std([0.1, 0.2, 0.2, 0.3], ddof=1) / 2
    assert (uplift.ci_low, uplift.ci_high) == pytest.approx((0.2 - half, 0.2 + half))
    assert (uplift.wins, uplift.losses, uplift.seeds) == (4, 0, 4)
    mixed = paired_uplift([0.5, 0.3, 0.6, 0.2], [0.4, 0.4, 0.4, 0.4])
    assert mixed.ci_low < 0 < mixed.ci_high
    assert paired_uplift([0.5], [0.4]).ci_low == -math.inf, "one seed shows no spread: no finite interval"
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5] and holm([]) == []


def test_heldout_check_headline_is_the_search_pick_and_the_list_is_not_reranked(tmp_path):
    intent = make_intent()
    evaluator = SyntheticEvaluator(intent)
    start = ScoredPrompt(intent.start_prompt, {"alignment": 0.0, "likeness": 1.0, "total": 0.5})
    finalists = [
        ScoredPrompt(f"{intent.start_prompt}, golden hour lighting, neon glow", {"total": 0.9}),
        ScoredPrompt(f"{intent.start_prompt}, golden hour lighting, oil painting", {"total": 0.8}),
    ]
    seeds = heldout_seeds(0, 6, [0, 1])
    result = heldout_check(evaluator, intent, finalists, start, seeds)
    assert set(evaluator.evaluated) == {(p, s) for p in [start.prompt] + [f.prompt for f in finalists] for s in seeds}
    assert result.search_pick.prompt == finalists[0].prompt, "the headline is chosen before any held-out seed"
    assert [entry.prompt for entry in result.finalists] == [item.prompt for item in finalists]
    assert [entry.search_rank for entry in result.finalists] == [1, 2]
    assert result.finalists[1].uplift.mean == pytest.approx(2 / 3 / 2)  # alignment +2/3, likeness unchanged
    assert [entry.uplift.p_holm for entry in result.finalists] == pytest.approx(
        holm([entry.uplift.p for entry in result.finalists])
    )
    # the finalist that is better on new seeds is found on the first half and measured on the second
    choice = result.heldout_choice
    assert choice.entry.prompt == finalists[1].prompt
    assert choice.selection_seeds == seeds[:3] and choice.report_seeds == seeds[3:]
    assert choice.uplift.seeds == 3
    assert {row["role"] for row in result.rows} == {"start", "finalist"} and len(result.rows) == 18


# --- likeness x meaning: the Pareto front and the person's choice ------------------------------------------


def scored(prompt: str, clip_t: float, likeness: float, round_index: int = 1) -> ScoredPrompt:
    return ScoredPrompt(
        prompt, {"clip_t": clip_t, "likeness": likeness, "total": clip_t + 0.05 * likeness}, round=round_index
    )


def test_pareto_front_keeps_the_prompts_no_other_beats_on_both():
    history = [
        scored("a", 0.30, 0.20),
        scored("b", 0.27, 0.90),
        scored("c", 0.26, 0.50),
        scored("d", 0.29, 0.60),
        scored("e", 0.25, 0.95),
    ]
    front = pareto_front(history)
    assert [item.prompt for item in front] == ["a", "d", "b", "e"], "c is beaten by d on both"
    assert choose_on_front(front, 0.55).prompt == "d", "the most meaningful with enough likeness"
    assert choose_on_front(front, 0.0).prompt == "a" and choose_on_front(front, 0.99) is None
    assert pareto_front([ScoredPrompt("x", {"total": 1.0})]) == [], "no likeness, no front"


class MeaningEvaluator(SyntheticEvaluator):
    """The synthetic world with the search's own term names: alignment is `clip_t`."""

    score_names = ["clip_t", "likeness"]

    def scores(self, prompt, seed):
        row = super().scores(prompt, seed)
        return {"clip_t": row.pop("alignment"), **row}


def test_the_persons_choice_on_the_front_is_the_heldout_headline(tmp_path):
    intent = make_intent()
    evaluator = MeaningEvaluator(intent)
    prompts = {
        "start": intent.start_prompt,
        "wide": f"{intent.start_prompt}, golden hour lighting, oil painting, neon glow",  # meaning 2/3, likeness 0.75
        "me": f"{intent.start_prompt}, serene",
    }  # meaning 1/3, likeness 1
    history = [
        ScoredPrompt(prompt, evaluator.scores(prompt, 0), round=int(name != "start"))
        for name, prompt in prompts.items()
    ]
    search = IntentSearch(intent, history, round_summaries(history))
    result = SearchResult([search], tmp_path / "candidates.csv")
    assert search.best()[0].prompt == prompts["wide"], "the total prefers the wide shot"
    wanted = 1.0  # "I want to look fully like me"
    checks = heldout_for_search(evaluator, result, heldout_seeds(0, 4, [0]), finalists=3, min_likeness=wanted)
    assert checks[0].search_pick.prompt == prompts["me"] and "you:" in checks[0].headline_source
    assert [entry.prompt for entry in checks[0].finalists] == [prompts["me"], prompts["wide"]]
    assert checks[0].search_pick.uplift.mean == pytest.approx(1 / 3 / 2), "measured on held-out seeds as always"
    plain = heldout_for_search(evaluator, result, heldout_seeds(0, 4, [0]), finalists=3)
    assert plain[0].search_pick.prompt == prompts["wide"] and "the search" in plain[0].headline_source
    unreachable = heldout_for_search(evaluator, result, heldout_seeds(0, 4, [0]), min_likeness=1.5)
    assert unreachable[0].search_pick.prompt == prompts["wide"] and "no prompt tried" in unreachable[0].headline_source
    figure = pareto_figure(result.intents, min_likeness=wanted)
    assert len(figure.axes) == 1
    import matplotlib.pyplot as plt

    plt.close(figure)


def test_the_fronts_members_are_shown_as_pictures_with_their_scores_and_roles(tmp_path):
    """One picture per member of the front (cached: image_for is asked for exactly those), captions with
    likeness and meaning, the search's pick and the person's choice marked; other prompts are not drawn."""
    intent = make_intent()
    history = [scored(intent.start_prompt, 0.25, 0.95, 0)] + [
        scored(name, clip_t, likeness)
        for name, clip_t, likeness in [
            ("wide", 0.30, 0.20),
            ("mid", 0.29, 0.60),
            ("beaten", 0.26, 0.50),
            ("me", 0.27, 0.90),
        ]
    ]
    search = IntentSearch(intent, history, round_summaries(history))
    asked = []

    def image_for(prompt, seed, recipe=None):
        asked.append((prompt, seed))
        return Image.new("RGB", (8, 8), (len(prompt) * 9 % 255, 0, 0))

    figure = pareto_pictures_figure([search], image_for, seed=3, min_likeness=0.85)
    front = [item.prompt for item in pareto_front(history)]
    assert asked == [(prompt, 3) for prompt in front] and "beaten" not in front
    titles = [axis.get_title() for axis in figure.axes if axis.get_title()]
    assert len(titles) == len(front) and all("likeness" in t and "meaning" in t for t in titles)
    pick = search.best()[0].prompt  # "mid": 0.29 + 0.05 x 0.60 is the highest total
    assert [t.split("\n")[1] for t in titles if "SEARCH'S PICK" in t] == [pick] == ["mid"]
    assert any("YOUR CHOICE" in t and "me" in t.split("\n")[1] for t in titles)
    many = [scored(f"p{index}", 0.2 + index / 100, 1 - index / 20) for index in range(12)]
    wide = IntentSearch(intent, many, round_summaries(many))
    asked.clear()
    pareto_pictures_figure([wide], image_for, seed=0, max_members=5)
    assert len(asked) == 5 and asked[0][0] == "p11" and asked[-1][0] == "p0", "spread over the front, ends kept"
