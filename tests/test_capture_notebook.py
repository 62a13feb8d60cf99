"""What notebook 01_capture wrote in the demo run (papermill, demo profile, the bundled sample photos)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from sdxlab import faces
from sdxlab.recorded import read_recorded
from sdxlab.run import load_profile

DEMO = load_profile("demo")
RESOLUTION = DEMO.get("resolution", 128)
BACKGROUND_WEIGHT = DEMO.get("capture_mask_background_weight", 0.5)


@pytest.fixture(scope="module")
def dataset(demo_run):
    return demo_run.dataset


@pytest.fixture(scope="module")
def metadata(dataset) -> list[dict]:
    return [json.loads(line) for line in (dataset / "metadata.jsonl").read_text(encoding="utf-8").splitlines()]


def test_every_sample_photo_is_kept_and_reported(dataset, metadata, sample_photos_dir):
    sample_files = sorted(path.name for path in sample_photos_dir.iterdir() if path.is_file())
    report = pd.read_csv(dataset / "report.csv")
    assert sorted(report["file"]) == sample_files
    assert (report["status"] == "kept").all(), report.loc[report["status"] != "kept", ["file", "reason"]]
    assert len(metadata) == len(sample_files)
    assert sorted(path.name for path in (dataset / "images").iterdir()) == [
        f"{n:04d}.png" for n in range(1, len(metadata) + 1)
    ]
    assert {row["source"].rsplit("/", 1)[-1] for row in metadata} == set(sample_files)


def test_crops_are_square_at_the_resolution_with_the_face_near_the_centre(dataset, metadata):
    for row in metadata:
        image = Image.open(dataset / row["file_name"])
        assert image.mode == "RGB" and image.size == (RESOLUTION, RESOLUTION)
        # Re-detect on the written crop (upsampled: at 128 px the face is ~40 px, HOG's smallest).
        face = faces.main_face(image, upsample=2)
        assert face is not None, row["file_name"]
        centre_x, centre_y = face.center
        assert abs(centre_x - RESOLUTION / 2) < 0.15 * RESOLUTION, row["file_name"]
        assert abs(centre_y - RESOLUTION / 2) < 0.25 * RESOLUTION, row["file_name"]
        # The recorded face box agrees with what is found again.
        assert np.allclose(face.center, np.array(row["face_box"]).reshape(2, 2).mean(axis=0), atol=0.1 * RESOLUTION)


def test_masks_match_their_images(dataset, metadata):
    background = round(255 * BACKGROUND_WEIGHT)
    for row in metadata:
        mask = Image.open(dataset / row["mask_file"])
        assert mask.mode == "L" and mask.size == (RESOLUTION, RESOLUTION)
        pixels = np.asarray(mask)
        left, top, right, bottom = row["face_box"]
        assert pixels[(top + bottom) // 2, (left + right) // 2] == 255  # the face centre weighs 1.0
        assert pixels[0, 0] == background or pixels[0, -1] == background  # a top corner is background
        assert 0.05 < (pixels == 255).mean() < 0.6


def test_metadata_follows_the_contract(dataset, metadata):
    for row in metadata:
        assert row["text"] == f"a photo of {DEMO.get('subject_token', 'sks')} {DEMO.get('class_word', 'person')}"
        assert row["mask_file"] == row["file_name"].replace("images/", "masks/")
        height, width = row["original_size"]
        left, top, right, bottom = row["crop_box"]
        assert 0 <= left < right <= width and 0 <= top < bottom <= height
        assert abs((right - left) - (bottom - top)) <= 2  # square in the source too
        assert row["upscaled"] == ((right - left) < RESOLUTION)
        assert (dataset / row["file_name"]).is_file()


def test_contact_sheet_is_written(dataset):
    sheet = Image.open(dataset / "contact_sheet.png")
    assert sheet.format == "PNG" and sheet.width > 800 and sheet.height > 200


def test_recorded_results_match_the_files_written(demo_run, dataset, metadata):
    recorded = read_recorded(demo_run.notebooks / "01_capture.ipynb")
    report = pd.read_csv(dataset / "report.csv")
    assert recorded["photos"] == len(report)
    assert recorded["kept"] == int((report["status"] == "kept").sum())
    assert recorded["rejected"] == int((report["status"] != "kept").sum()) == recorded["photos"] - recorded["kept"]
    assert recorded["training_images"] == len(metadata) == len(list((dataset / "images").iterdir()))
    assert recorded["resolution"] == RESOLUTION and recorded["dataset"] == str(dataset)
