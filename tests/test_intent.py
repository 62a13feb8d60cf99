"""Decomposed intent: the rule splitter, the language-model hook, part scores and their soft minimum."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from sdxlab.evaluate.scorers import Scorer, make_scorer, try_make_scorer
from sdxlab.prompt_search.intent import (
    ROLES,
    IntentPartsScorer,
    combine_parts,
    split_intent,
    split_with_language_model,
    weakest_part,
)


def parts_of(text: str) -> dict[str, str]:
    return {part.role: part.phrase for part in split_intent(text).parts}


@pytest.mark.parametrize(
    ("intent", "expected"),
    [
        (
            "a photo of {subject} as an astronaut on Mars, cinematic",
            {"who": "a person as an astronaut", "where": "on Mars", "style": "photo, cinematic"},
        ),
        (
            "a portrait of {subject} painted by Vermeer",
            {"who": "a person", "style": "painted by Vermeer", "framing": "portrait"},
        ),
        (
            "a candid photo of {subject} laughing in a cafe, 35mm film",
            {"who": "a person", "where": "in a cafe", "style": "candid photo, 35mm film", "mood": "laughing"},
        ),
        (
            "sks person riding a horse on the beach, golden hour, wide shot",
            {
                "who": "a person",
                "doing": "riding a horse",
                "where": "on the beach",
                "lighting": "golden hour",
                "framing": "wide shot",
            },
        ),
        (
            "a close-up oil painting of sks person in a red dress, dramatic lighting",
            {
                "who": "a person in a red dress",
                "style": "oil painting",
                "framing": "close-up",
                "lighting": "dramatic lighting",
            },
        ),
        ("sks person as a knight", {"who": "a person as a knight"}),
    ],
)
def test_common_shapes_split_into_their_parts(intent, expected):
    assert parts_of(intent) == expected


def test_a_negated_modifier_is_not_a_part_and_says_why():
    parts = split_intent("a photo of sks person on Mars, not smiling, no helmet")
    assert parts.roles() == ["who", "where", "style"]
    assert len(parts.notes) == 2 and "negative prompt" in parts.notes[0]


def test_every_part_has_a_query_and_a_neutral_phrase_without_it():
    parts = split_intent("a photo of {subject} as an astronaut on Mars, cinematic").by_role()
    assert parts["where"].query == "a picture on Mars" and parts["where"].neutral == "a picture"
    assert parts["who"].query == "a person as an astronaut" and parts["who"].neutral == "a picture"
    assert all(part.query != part.neutral for part in parts.values())


def test_a_language_model_can_split_and_bad_replies_fall_back_to_the_rules():
    asked = []

    def ask(prompt):
        asked.append(prompt)
        return 'Sure! {"who": "a person as an astronaut", "where": "on Mars", "vibe": "epic", "style": "cinematic"}'

    parts = split_with_language_model("a photo of sks person as an astronaut on Mars, cinematic", ask)
    assert parts.source == "language model"
    assert {part.role: part.phrase for part in parts.parts} == {
        "who": "a person as an astronaut",
        "where": "on Mars",
        "style": "cinematic",
    }
    assert "sks" not in asked[0] and "person as an astronaut on Mars" in asked[0]  # the model reads the class word

    for reply in ["I cannot help with that.", json.dumps({"vibe": "epic"}), "{not json"]:
        fallback = split_with_language_model("sks person on Mars", lambda _p, reply=reply: reply)
        assert fallback.source == "rules" and fallback.roles() == ["who", "where"] and fallback.notes

    def broken(_prompt):
        raise ConnectionError("endpoint down")

    assert split_with_language_model("sks person on Mars", broken).source == "rules"


def test_the_search_endpoint_proposer_can_split_the_intent():
    from fake_openai_server import FakeOpenAIServer

    from sdxlab.prompt_search.intent import endpoint_asker
    from sdxlab.prompt_search.language_models import EndpointProposer

    answer = '```json\n{"who": "a person as an astronaut", "where": "on Mars", "lighting": "golden hour"}\n```'
    with FakeOpenAIServer(answer=answer) as server:
        proposer = EndpointProposer(server.base_url, "local-model", api_key_env=None, backoff_s=0.01)
        parts = split_with_language_model("sks person as an astronaut on Mars at golden hour", endpoint_asker(proposer))
    assert parts.source == "language model" and parts.roles() == ["who", "where", "lighting"]
    body = server.requests[0]["body"]
    assert body["temperature"] == 0 and body["model"] == "local-model"
    with FakeOpenAIServer(script=["401"]) as server:  # a refusing endpoint: the rules answer
        proposer = EndpointProposer(server.base_url, "m", api_key_env=None, backoff_s=0.01)
        assert split_with_language_model("sks person on Mars", endpoint_asker(proposer)).source == "rules"


def test_one_missing_part_costs_more_than_all_parts_slightly_weaker():
    one_missing = {"who": 0.95, "where": 0.4, "style": 0.95, "doing": 0.95}
    all_weaker = {"who": 0.78, "where": 0.78, "style": 0.78, "doing": 0.78}
    assert np.mean(list(one_missing.values())) > np.mean(list(all_weaker.values()))  # a plain mean gets it wrong
    assert combine_parts(one_missing) < combine_parts(all_weaker)
    assert combine_parts(all_weaker) == pytest.approx(0.78)
    assert combine_parts([0.2, 0.9], temperature=0) == 0.2
    assert combine_parts([0.2, 0.9], temperature=100) == pytest.approx(0.55, abs=1e-3)
    assert combine_parts({"who": 0.7, "where": math.nan}) == pytest.approx(0.7)  # parts not asked for are left out
    assert math.isnan(combine_parts([]))


def test_weakest_part_is_averaged_over_seeds_and_worded_for_the_proposers():
    parts = split_intent("a photo of sks person as an astronaut on Mars, cinematic")
    rows = [
        {"part_who": 0.9, "part_where": 0.3, "part_style": 0.6, "part_mood": math.nan},
        {"part_who": 0.8, "part_where": 0.7, "part_style": 0.6, "part_mood": math.nan},
    ]
    weakest = weakest_part(rows, parts)
    assert (weakest.role, weakest.phrase) == ("where", "on Mars") and weakest.score == pytest.approx(0.5)
    weakest = weakest_part(rows[:1], parts)
    assert weakest.role == "where" and "'on Mars'" in weakest.feedback()
    assert weakest_part([{"part_who": math.nan}]) is None


class ConceptClip:
    """A stand-in CLIP whose embeddings are bags of concepts, so what a picture lacks is known exactly."""

    CONCEPTS = ["picture", "person", "astronaut", "mars", "cinematic", "photo", "cafe"]
    meaningful = True

    def __init__(self):
        import torch

        self.model = type("M", (), {"logit_scale": torch.tensor(math.log(100.0))})()

    def _vector(self, words):
        vector = np.array([1.0 if concept in words else 0.0 for concept in self.CONCEPTS]) + 0.05
        return vector / np.linalg.norm(vector)

    def embed_texts(self, texts):
        return np.stack([self._vector(text.lower().replace(",", " ").split()) for text in texts])

    def embed_images(self, images):  # an "image" here is the set of concepts it shows
        return np.stack([self._vector(image) for image in images])


def test_a_part_the_picture_lacks_scores_low_and_is_the_weakest():
    scorer = IntentPartsScorer(clip=ConceptClip())
    intent = "a photo of sks person as an astronaut on Mars, cinematic"
    complete = {"picture", "person", "astronaut", "mars", "cinematic", "photo"}
    no_mars = complete - {"mars"}
    full, missing = scorer.columns([complete, no_mars], [intent, intent])
    assert full["part_where"] > 0.5 > missing["part_where"]
    assert missing["weakest_part"] == "where"
    assert missing["intent_parts"] < full["intent_parts"]
    assert math.isnan(full["part_mood"]) and math.isnan(full["part_lighting"])  # not asked for
    assert set(full) == {"intent_parts", "weakest_part", *(f"part_{role}" for role in ROLES)}
    assert scorer.score([complete, no_mars], [intent, intent]) == [full["intent_parts"], missing["intent_parts"]]


def test_with_the_tiny_offline_clip_every_column_is_there():
    scorer = make_scorer("intent_parts", clip_model="tiny", device="cpu")
    assert isinstance(scorer, Scorer) and scorer.name == "intent_parts"
    assert not scorer.meaningful  # random weights: plumbing only
    images = [Image.new("RGB", (96, 96), colour) for colour in ((200, 40, 40), (30, 30, 200))]
    intent = "a candid photo of sks person laughing in a cafe, 35mm film"
    rows = scorer.columns(images, [intent, intent])
    for row in rows:
        for role in ("who", "where", "style", "mood"):
            assert 0.0 < row[f"part_{role}"] < 1.0
        assert math.isnan(row["part_lighting"])
        asked = [row[f"part_{r}"] for r in ("who", "where", "style", "mood")]
        assert row["intent_parts"] == pytest.approx(combine_parts(asked))
        assert min(asked) <= row["intent_parts"] <= min(asked) + 0.1 * math.log(len(asked))  # soft-min bounds
    assert rows[0]["part_where"] != rows[1]["part_where"]  # the picture matters
    with pytest.raises(ValueError, match="one text per image"):
        scorer.columns(images, [intent])


def test_without_clip_weights_one_sentence_and_the_caller_goes_on(tmp_path):
    scorer, note = try_make_scorer("intent_parts", clip_model=str(tmp_path / "no-such-clip"), device="cpu")
    assert scorer is None and note.startswith("intent_parts: ") and "does not exist" in note


def test_scorers_whose_weights_are_missing_are_left_out_and_the_rest_still_score(tmp_path):
    """No fer model file and no VQA folder: clip_t and intent_parts still score, and two notes say why."""
    from sdxlab.evaluate.scorers import build_scorers, score_columns

    scorers, notes = build_scorers(
        {
            "clip_t": {"clip_model": "tiny", "device": "cpu"},
            "intent_parts": {"clip_model": "tiny", "device": "cpu"},
            "mood": {"model_path": tmp_path / "emotion_model.hdf5"},
            "vqa": {"model": str(tmp_path / "no-blip"), "device": "cpu"},
        }
    )
    assert sorted(scorers) == ["clip_t", "intent_parts"]
    assert [note.split(":")[0] for note in notes] == ["mood", "vqa"]
    assert all(note.endswith(".") and "\n" not in note for note in notes)
    images, texts = [Image.new("RGB", (64, 64), (90, 120, 200))], ["sks person laughing on Mars"]
    row = {}
    for scorer in scorers.values():
        row.update(score_columns(scorer, images, texts)[0])
    assert {"clip_t", "intent_parts", "part_where", "part_mood", "weakest_part"} <= set(row)
    assert not math.isnan(row["part_mood"])  # CLIP still grades the mood words when the fer model is missing
