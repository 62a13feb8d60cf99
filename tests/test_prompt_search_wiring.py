"""The new scorers inside the search: intent parts and mood as objective terms, their extra columns in
candidates.csv, the weakest part fed back to the proposers, and a scorer whose weights are missing."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from sdxlab.prompt_search.evaluation import ImageCache, ImageEvaluator
from sdxlab.prompt_search.objective import Intent, Objective, build_objective
from sdxlab.prompt_search.search import SearchSettings, run_search


class Column:
    """A measure that hands back fixed values (one column)."""

    def __init__(self, name, values):
        self.columns = [name]
        self.values = values

    def measure(self, images, texts):
        return {self.columns[0]: list(self.values[: len(images)])}


def test_total_leaves_out_a_term_that_does_not_apply_and_keeps_the_scale():
    objective = Objective(
        {"a": Column("clip_t", [0.3, 0.3]), "b": Column("mood", [math.nan, 0.5])}, {"clip_t": 1.0, "mood": 0.05}
    )
    intent = Intent.create("{subject} as an astronaut, smiling", "sks", "person")
    no_mood, mood = objective.score([None, None], intent)
    assert no_mood["total"] == pytest.approx(0.3 * 1.05)  # no mood asked: clip_t carries all the weight
    assert mood["total"] == pytest.approx(0.3 + 0.05 * 0.5)


class ColourGenerator:
    """A picture per (prompt, seed): a flat colour from the prompt's hash, a little noise from the seed."""

    settings = {"kind": "colour-v1"}

    def __init__(self):
        self.made = 0

    def generate(self, prompts, seeds):
        self.made += len(prompts)
        images = []
        for prompt, seed in zip(prompts, seeds, strict=True):
            rng = np.random.default_rng(abs(hash((prompt, seed))) % 2**32)
            base = np.array([sum(map(ord, prompt)) % 255, len(prompt) * 7 % 255, 120], dtype=float)
            images.append(Image.fromarray(np.clip(base + rng.normal(0, 20, (64, 64, 3)), 0, 255).astype("uint8")))
        return images


WEIGHTS = {"clip_t": 1.0, "intent_parts": 0.1, "mood": 0.05}
INTENT = "a photo of {subject} as an astronaut on Mars, smiling, cinematic"


def test_intent_parts_and_mood_are_graded_with_their_columns():
    objective = build_objective(WEIGHTS, clip_model="tiny", device="cpu")
    assert set(objective.terms) == {"clip_t", "intent_parts", "mood"}, objective.notes
    assert any("intent_parts" in note and "random weights" in note for note in objective.notes)
    intent = Intent.create(INTENT, "sks", "person")
    rows = objective.score(ColourGenerator().generate(["x", "y"], [0, 1]), intent)
    for row in rows:
        assert 0 <= row["intent_parts"] <= 1 and 0 <= row["part_where"] <= 1 and 0 <= row["part_mood"] <= 1
        assert math.isnan(row["part_lighting"])  # the intent asks for no lighting
        assert row["weakest_part"] in {"who", "where", "doing", "style", "mood"}
        assert row["mood"] == 0.0 and row["mood_expected"] == "happy"  # noise pictures have no face
        assert row["total"] == pytest.approx(row["clip_t"] + 0.1 * row["intent_parts"])


def test_the_search_goes_on_without_mood_when_its_weights_are_missing(monkeypatch):
    from sdxlab.evaluate import expression

    def unavailable(download=True, timeout=120):
        raise expression.ExpressionUnavailable(
            "The expression model is not cached and downloading was turned off; allow the download once to grade moods."
        )

    monkeypatch.setattr(expression, "expression_model_path", unavailable)
    expression._cached_network.cache_clear() if hasattr(expression._cached_network, "cache_clear") else None
    objective = build_objective(WEIGHTS, clip_model="tiny", device="cpu")
    assert "mood" not in objective.terms and set(objective.terms) == {"clip_t", "intent_parts"}
    assert any(note.startswith("mood: The expression model is not cached") for note in objective.notes)
    rows = objective.score(ColourGenerator().generate(["x"], [0]), Intent.create(INTENT, "sks", "person"))
    assert math.isfinite(rows[0]["total"])


class RecordingProposer:
    name = "recording"

    def __init__(self):
        self.feedback = []

    def propose(self, context, count):
        self.feedback.append(list(context.feedback))
        return [
            f"{context.intent.start_prompt}, {word}"
            for word in ["red dust", "helmet", "stars", "golden light", "portrait", "wide shot"][
                : count + context.round_index
            ]
        ]


def test_candidates_keep_every_part_column_and_the_weakest_part_reaches_the_proposers(tmp_path):
    objective = build_objective(WEIGHTS, clip_model="tiny", device="cpu")
    generator = ColourGenerator()
    evaluator = ImageEvaluator(generator, objective, ImageCache(tmp_path / "cache"))
    intent = Intent.create(INTENT, "sks", "person")
    proposer = RecordingProposer()
    settings = SearchSettings(rounds=2, candidates_per_round=2, seeds=[0, 1])
    run_search(evaluator, [intent], [proposer], settings, tmp_path, progress=False)

    frame = pd.read_csv(tmp_path / "candidates.csv")
    assert {"intent_parts", "part_who", "part_where", "part_mood", "weakest_part", "mood", "mood_top"} <= set(
        frame.columns
    )
    assert frame["weakest_part"].isin(["who", "where", "doing", "style", "mood"]).all()
    assert proposer.feedback and all(len(lines) == 1 and "least" in lines[0] for lines in proposer.feedback)

    # resuming reads the NaN and label cells back and renders nothing again
    made = generator.made
    again = run_search(evaluator, [intent], [RecordingProposer()], settings, tmp_path, progress=False)
    assert generator.made == made and again.resumed_rows == len(frame)


def test_the_front_shows_mood_as_a_third_axis_only_when_a_mood_is_asked_for():
    from types import SimpleNamespace

    from sdxlab.prompt_search.plots import pareto_figure
    from sdxlab.prompt_search.proposers import ScoredPrompt

    intent = Intent.create(INTENT, "sks", "person")

    def search(mood):
        history = [
            ScoredPrompt(f"p{i}", {"likeness": i / 5, "clip_t": 0.3 - i / 100, "mood": mood(i), "total": 0.3})
            for i in range(5)
        ]
        return SimpleNamespace(intent=intent, history=history, start=history[0], best=lambda count=1: history[:count])

    with_mood = pareto_figure([search(lambda i: i / 4)])
    without = pareto_figure([search(lambda i: math.nan)])
    assert len(with_mood.axes) == 2 and "mood" in with_mood.axes[1].get_ylabel()
    assert len(without.axes) == 1


def test_vqa_without_a_model_or_with_a_missing_one_is_left_out_with_a_sentence():
    unset = build_objective({"clip_t": 1.0, "vqa": 0.1}, clip_model="tiny", device="cpu")
    missing = build_objective(
        {"clip_t": 1.0, "vqa": 0.1}, clip_model="tiny", device="cpu", vqa_model="/nonexistent/blip-vqa"
    )
    for objective in (unset, missing):
        assert objective.terms == {"clip_t": 1.0}
        assert len(objective.notes) == 1 and objective.notes[0].startswith("vqa: ")
    assert "search_vqa_model" in unset.notes[0] and "/nonexistent/blip-vqa" in missing.notes[0]


def test_the_language_model_is_told_the_weakest_part():
    import random

    from sdxlab.prompt_search.proposers import ProposalContext, ScoredPrompt, revision_messages

    intent = Intent.create(INTENT, "sks", "person")
    sentence = "The pictures show the where part ('on Mars') least (score 0.31); make it clearer or more prominent in the prompt."
    context = ProposalContext(
        intent,
        [ScoredPrompt(intent.start_prompt, {"clip_t": 0.3, "total": 0.3})],
        1,
        random.Random(0),
        score_names=["clip_t"],
        feedback=[sentence],
    )
    assert sentence in revision_messages(context, 3)[1]["content"]
    context.feedback = []
    assert "least" not in revision_messages(context, 3)[1]["content"]
