"""sdxlab.evaluate on real faces (the bundled sample photos and six strangers from insightface's t1.jpg) and
on the kinds of bad input people hand it. CLIP is the tiny random-weight one: its numbers are meaningless,
so tests assert plumbing and relations (a copy is nearer than anything else), never CLIP values."""

from __future__ import annotations

import csv
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps
from skimage import data

from sdxlab import evaluate, faces
from sdxlab.evaluate import inputs, likeness
from sdxlab.evaluate.copying import check_copies
from sdxlab.models import ModelLoadError

TRAINING_SIDE = 400  # the sample photos are ~1000 px; faces stay ~100 px at this size and tests stay fast


def write_samples(folder: Path, rows: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    columns = [
        "file",
        "prompt",
        "negative_prompt",
        "seed",
        "steps",
        "guidance",
        "width",
        "height",
        "scheduler",
        "lora_scale",
        "lora_file",
        "checkpoint",
    ]
    with open(folder / "samples.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {
                    "negative_prompt": "",
                    "steps": 4,
                    "guidance": 5.0,
                    "width": 128,
                    "height": 128,
                    "scheduler": "euler",
                    "lora_file": "sks.safetensors",
                    **row,
                }
            )


def noise(seed: int, size: int = 128) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def astronaut_crop(left: int, size: int = 160) -> Image.Image:
    """A portrait of the sample photos' person (the photos derive from this NASA portrait) not in the training set."""
    return (
        Image.fromarray(data.astronaut())
        .crop((left, 0, left + 260, 260))
        .resize((size, size), Image.Resampling.LANCZOS)
    )


@pytest.fixture(scope="module")
def training_dir(sample_photos_dir, tmp_path_factory) -> Path:
    """The sample photos, upright and downscaled, as "any folder of the person's photos"."""
    photos = sorted(path for path in sample_photos_dir.iterdir() if path.suffix.lower() in inputs.IMAGE_SUFFIXES)
    if len(photos) < 4:
        pytest.skip(f"needs the bundled sample photos in {sample_photos_dir}")
    folder = tmp_path_factory.mktemp("training")
    for index, path in enumerate(photos[:10]):
        image, _ = inputs.open_rgb(path)
        ImageOps.contain(image, (TRAINING_SIDE, TRAINING_SIDE)).save(folder / f"{index:04d}.png")
    return folder


@pytest.fixture(scope="module")
def strangers_dir(group_photo, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("strangers")
    group_photo.save(folder / "t1.jpg")
    return folder


@pytest.fixture(scope="module")
def scorer(training_dir, strangers_dir) -> evaluate.LikenessScorer:
    return evaluate.LikenessScorer.from_dataset(training_dir, other_people_dir=strangers_dir)


@pytest.fixture(scope="module")
def stranger_embeddings(strangers_dir) -> np.ndarray:
    others = evaluate.other_people(strangers_dir)
    assert len(others.embeddings) == 6, others.notes
    return others.embeddings


# --- likeness on real faces -------------------------------------------------------------------------------------


def test_same_person_pairs_score_clearly_closer_than_different_people(scorer, stranger_embeddings):
    person = scorer.reference.embeddings
    assert len(person) >= 4
    same = [faces.identity_similarity(a, b) for a, b in itertools.combinations(person, 2)]
    person_vs_stranger = [faces.identity_similarity(a, b) for a in person for b in stranger_embeddings]
    stranger_vs_stranger = [faces.identity_similarity(a, b) for a, b in itertools.combinations(stranger_embeddings, 2)]
    different = person_vs_stranger + stranger_vs_stranger
    # Every same-person pair beats every different-person pair, with room to spare.
    gap = min(same) - max(different)
    assert gap > 0.02, f"same-person min {min(same):.3f} vs different-person max {max(different):.3f}"
    # dlib's own rule agrees: same person below 0.6, strangers above.
    assert max(faces.identity_distance(a, b) for a, b in itertools.combinations(person, 2)) < faces.SAME_PERSON_DISTANCE
    assert min(faces.identity_distance(a, b) for a in person for b in stranger_embeddings) > faces.SAME_PERSON_DISTANCE


def test_calibration_puts_the_person_near_the_ceiling_and_strangers_near_the_floor(scorer, strangers_dir):
    calibration = scorer.calibration
    assert calibration.known and calibration.floor.mean < calibration.ceiling.mean
    assert len(calibration.ceiling.values) == len(scorer.reference) and len(calibration.floor.values) == 6
    # A portrait of the person that is not in the training set, and each stranger's face on its own.
    held_out = scorer.measure([astronaut_crop(110)])[0]
    assert held_out.face.face_found and held_out.identity_match
    assert held_out.position > 0.7
    group = Image.open(strangers_dir / "t1.jpg")
    crops = [
        group.crop(
            (f.box[0] - f.width // 2, f.box[1] - f.height // 2, f.box[2] + f.width // 2, f.box[3] + f.height // 2)
        )
        for f in faces.detect_faces(group)
        if f.score >= faces.MIN_FACE_SCORE
    ]
    stranger_readings = scorer.measure(crops)
    positions = [reading.position for reading in stranger_readings if reading.similarity is not None]
    assert len(positions) >= 5
    assert max(positions) < 0.4 and held_out.position - max(positions) > 0.4
    assert not any(reading.identity_match for reading in stranger_readings)
    # The scorer interface: raw similarity, higher for the person; no face scores 0.
    scores = scorer.score([astronaut_crop(110), crops[0], Image.fromarray(data.coffee())], ["", "", ""])
    assert scores[0] > scores[1] > 0 and scores[2] == 0.0


def test_floor_is_unknown_without_other_people_and_likeness_is_still_reported(training_dir, tmp_path):
    scorer = evaluate.LikenessScorer.from_dataset(training_dir, other_people_dir=tmp_path / "nobody")
    assert not scorer.calibration.known
    assert any("does not exist" in note for note in scorer.notes)
    reading = scorer.measure([astronaut_crop(110)])[0]
    assert reading.similarity is not None and math.isnan(reading.position)


def write_two_crops_per_photo(training_dir: Path, folder: Path) -> Path:
    """A dataset in 01_capture's layout where every photo appears twice (as a main and a loose crop would),
    both rows naming the same `source`; here the second crop is a pixel copy, so its face is the same face."""
    (folder / "images").mkdir(parents=True)
    rows = []
    for index, path in enumerate(sorted(training_dir.glob("*.png"))):
        for variant in ("main", "loose"):
            name = f"images/{len(rows) + 1:04d}.png"
            Image.open(path).save(folder / name)
            rows.append(
                {
                    "file_name": name,
                    "text": "a photo of sks person",
                    "source": f"/photos/{index}.jpg",
                    "variant": variant,
                }
            )
    (folder / "metadata.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder


def test_crops_of_one_photo_count_as_one_photo_in_the_ceiling(scorer, training_dir, strangers_dir, tmp_path):
    """With capture_loose_crop=True both crops of a photo are in the reference; the leave-one-out ceiling must not
    use one crop as "another photo" of the other (that is the same face, and it lifts the ceiling)."""
    single = scorer
    doubled = evaluate.LikenessScorer.from_dataset(
        write_two_crops_per_photo(training_dir, tmp_path / "dataset"), other_people_dir=strangers_dir
    )
    assert len(doubled.reference) == 2 * len(single.reference) and doubled.reference.photos == len(single.reference)
    # The same ceiling as leaving one whole photo out, one value per source photo.
    for band in ("ceiling", "ceiling_nearest"):
        assert getattr(doubled.calibration, band).values == pytest.approx(getattr(single.calibration, band).values)
    assert max(doubled.calibration.ceiling_nearest.values) < 1 - 1e-6  # never a crop against its own twin (1.0)
    assert doubled.reference.centroid == pytest.approx(single.reference.centroid)
    (reading,) = doubled.measure([astronaut_crop(110)])
    assert 0.5 < reading.position == pytest.approx(single.measure([astronaut_crop(110)])[0].position, abs=1e-9)


def test_copy_threshold_ignores_crops_of_the_same_photo():
    rng = np.random.default_rng(0)
    photos = np.eye(16)[:4] + rng.normal(scale=0.05, size=(4, 16))  # four clearly different photos
    crops = np.vstack([photos, photos + rng.normal(scale=1e-3, size=photos.shape)])  # a second crop of each photo
    mirrored = -crops
    generated = np.vstack([photos[0] + rng.normal(scale=0.05, size=16), np.eye(16)[10]])  # a near copy, a new picture
    names = [f"{i:04d}.png" for i in range(8)]
    sources = [f"photo{i % 4}" for i in range(8)]
    alone = check_copies(generated, photos, -photos, names[:4])
    grouped = check_copies(generated, crops, mirrored, names, sources)
    assert grouped.threshold == pytest.approx(alone.threshold, abs=0.01)  # two *different* photos set the bar
    assert grouped.flags.tolist() == alone.flags.tolist() == [True, False]
    assert check_copies(generated, crops, mirrored, names).threshold < 0.01  # ungrouped: twins make the bar ~0
    assert math.isnan(check_copies(generated, crops[[0, 4]], mirrored[[0, 4]], names[:2], ["a", "a"]).threshold)


def test_the_floor_counts_every_stranger_found_also_look_alikes(training_dir, group_photo, tmp_path):
    """A face in the other-people set that dlib calls the person (here: the person's own portrait) stays in the
    floor: dropping the closest strangers would lower the floor and flatter every position."""
    folder = tmp_path / "others"
    folder.mkdir()
    group_photo.save(folder / "t1.jpg")
    astronaut_crop(110, size=240).save(folder / "look-alike.jpg")
    others = evaluate.other_people(folder)
    assert len(others.embeddings) == 7, others.notes
    scorer = evaluate.LikenessScorer.from_dataset(training_dir, other_people_dir=folder)
    calibration = scorer.calibration
    assert calibration.strangers == len(calibration.floor.values) == 7
    assert calibration.to_dict()["strangers"] == 7
    expected = likeness.cosine_rows(others.embeddings, scorer.reference.centroid).ravel()
    assert calibration.floor.mean == pytest.approx(float(expected.mean()))
    assert any("1 of the 7 other people's faces" in note and "still count" in note for note in calibration.notes)


def test_pose_features_follow_a_tilted_head():
    upright = likeness.read_face(astronaut_crop(110, size=320))
    tilted = likeness.read_face(astronaut_crop(110, size=320).rotate(15, resample=Image.Resampling.BICUBIC))
    assert upright.face_found and tilted.face_found
    # PIL turns the picture 15 degrees counter-clockwise: the eye line's angle (y grows downwards) drops by that much.
    assert upright.pose["face_roll"] - tilted.pose["face_roll"] == pytest.approx(math.radians(15), abs=math.radians(4))
    assert abs(upright.pose["face_yaw"]) < 0.15  # the portrait looks straight at the camera
    assert tilted.pose["mouth_width"] == pytest.approx(upright.pose["mouth_width"], abs=0.1)


# --- a whole evaluation ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def evaluated(training_dir, request, tmp_path_factory):
    """Two prompts x two checkpoints x two LoRA scales: the person, a training photo copied verbatim, no faces,
    a grayscale image and a file that is not an image."""
    try:
        scorer = request.getfixturevalue("scorer")
    except pytest.skip.Exception:  # no strangers (offline): everything but the calibrated position still runs
        scorer = evaluate.LikenessScorer.from_dataset(training_dir, download_floor=False)
    folder = tmp_path_factory.mktemp("run") / "samples"
    folder.mkdir()
    moon, vermeer = "a photo of sks person on the moon", "sks person painted by Vermeer"
    images = {
        "a.png": (astronaut_crop(100), moon, 0.5, "step_000010"),
        "b.png": (astronaut_crop(125), moon, 0.5, "step_000010"),
        "c.png": (noise(1), moon, 1.0, ""),
        "d.png": (astronaut_crop(90).convert("L"), vermeer, 1.0, ""),
        "e.png": (Image.fromarray(data.coffee()).resize((160, 107)), vermeer, 1.0, ""),
        "copy.png": (Image.open(training_dir / "0002.png"), vermeer, 1.0, ""),
    }
    rows = []
    for seed, (name, (image, prompt, scale, checkpoint)) in enumerate(images.items()):
        image.save(folder / name)
        rows.append({"file": name, "prompt": prompt, "seed": seed, "lora_scale": scale, "checkpoint": checkpoint})
    (folder / "broken.png").write_text("not a png")
    rows.append({"file": "broken.png", "prompt": moon, "seed": 9, "lora_scale": 1.0, "checkpoint": ""})
    rows.append({"file": "deleted.png", "prompt": moon, "seed": 10, "lora_scale": 1.0, "checkpoint": ""})
    write_samples(folder, rows)
    metrics = folder.parent / "metrics"
    result = evaluate.evaluate_folder(
        folder,
        metrics,
        dataset_dir=training_dir,
        clip_model="tiny",
        likeness=scorer,
        random_images=True,
        progress=False,
        run="test-run",
    )
    return result, metrics


def test_per_image_csv_columns_are_stable_and_documented(evaluated):
    result, metrics = evaluated
    import pandas as pd

    table = pd.read_csv(metrics / "per_image.csv")
    assert tuple(table.columns) == evaluate.PER_IMAGE_COLUMNS
    assert list(table["file"]) == ["a.png", "b.png", "c.png", "d.png", "e.png", "copy.png"]
    for column in evaluate.PER_IMAGE_COLUMNS:
        assert column in evaluate.__doc__, f"per_image.csv column {column} is not documented"


def test_summary_keys_are_stable_documented_and_strict_json(evaluated):
    result, metrics = evaluated

    def refuse(constant):
        raise ValueError(f"summary.json holds {constant}, which strict JSON readers reject")

    summary = json.loads((metrics / "summary.json").read_text(), parse_constant=refuse)
    assert tuple(summary) == evaluate.SUMMARY_KEYS
    assert set(evaluate.CALIBRATION_KEYS) <= set(summary["calibration"])
    calibration = summary["calibration"]
    assert calibration["strangers"] == calibration["floor"]["count"]  # 6 with the group photo, 0 offline
    assert calibration["training_photos"] == calibration["ceiling"]["count"] == calibration["training_faces"]
    groups = [
        summary["overall"],
        *summary["per_prompt"].values(),
        *summary["per_lora_scale"].values(),
        *summary["per_checkpoint"].values(),
    ]
    for stats in groups:
        assert set(evaluate.GROUP_KEYS) <= set(stats)
    assert set(summary["per_prompt"]) == {"a photo of sks person on the moon", "sks person painted by Vermeer"}
    assert set(summary["per_lora_scale"]) == {"0.5", "1"}
    assert set(summary["per_checkpoint"]) == {"step_000010", "final"}
    assert summary["per_checkpoint"]["step_000010"]["step"] == 10
    for key in (*evaluate.SUMMARY_KEYS, *evaluate.GROUP_KEYS):
        assert key in evaluate.__doc__, f"summary key {key} is not documented"
    for name in summary["files"]:
        assert (metrics / name).is_file()
    assert {
        "likeness_calibration.png",
        "likeness_vs_alignment.png",
        "likeness_per_checkpoint.png",
        "gallery.png",
    } <= set(summary["files"])


def test_headline_figures_are_the_summary_s(evaluated):
    result, _ = evaluated
    figures = evaluate.headline_figures(result)
    overall, calibration = result.summary["overall"], result.summary["calibration"]
    assert figures["images"] == 6 and figures["faces_found"] == overall["faces_found"] == 4
    assert figures["copies"] == overall["copies"] >= 1 and figures["clip_t_mean"] == overall["clip_t_mean"]
    assert (
        figures["strangers"] == calibration["strangers"]
        and figures["training_photos"] == calibration["training_photos"]
    )
    assert (figures["meaningful_images"], figures["meaningful_clip"]) == (False, False)
    json.dumps(figures, allow_nan=False)  # plain values for the notebook's recorded cell
    empty = evaluate.headline_figures(evaluate.Evaluation(result.per_image.iloc[0:0], {}))
    assert empty["images"] == 0 and empty["likeness_mean"] is None


def test_random_weight_numbers_are_labelled_meaningless(evaluated):
    summary = evaluated[0].summary
    assert "meaningless" in summary["note"] and "random" in summary["note"]
    assert summary["meaningful"] == {"images": False, "clip": False}


def test_faces_likeness_and_alignment_per_image(evaluated):
    table = evaluated[0].per_image.set_index("file")
    assert table.loc[["a.png", "b.png", "d.png", "copy.png"], "face_found"].all()
    assert not table.loc[["c.png", "e.png"], "face_found"].any()
    assert table.loc[["c.png", "e.png"], "likeness"].isna().all()
    assert "no face found" in table.loc["c.png", "note"] and "grayscale" in table.loc["d.png", "note"]
    if evaluated[0].calibration.known:
        assert (table.loc[["a.png", "b.png", "d.png"], "likeness_position"] > 0.7).all()
    assert table.loc[["a.png", "b.png", "d.png"], "identity_match"].all()
    # CLIP-T is scored against the intent: the subject token becomes the class word.
    assert table.loc["a.png", "intent"] == "a photo of person on the moon"
    assert table["clip_t"].between(-1, 1).all()
    summary = evaluated[0].summary
    assert summary["overall"]["faces_found"] == 4 and summary["overall"]["face_found_rate"] == pytest.approx(4 / 6)
    assert summary["overall"]["identity_match_rate"] == pytest.approx(4 / 6)  # no face counts as a miss


def test_copy_flag_fires_when_a_training_photo_is_among_the_samples(evaluated):
    table = evaluated[0].per_image.set_index("file")
    assert table.loc["copy.png", "copy_flag"]
    assert table.loc["copy.png", "copy_nearest_photo"] == "0002.png"
    assert table["copy_distance"].idxmin() == "copy.png"
    assert evaluated[0].summary["calibration"]["copy_threshold"] > table.loc["copy.png", "copy_distance"]
    assert evaluated[0].summary["overall"]["copies"] >= 1


def test_diversity_is_measured_within_each_prompt_scale_and_checkpoint(evaluated):
    table = evaluated[0].per_image.set_index("file")
    # a and b share prompt, scale and checkpoint: each is the other's only neighbour.
    assert table.loc["a.png", "diversity_clip"] == pytest.approx(table.loc["b.png", "diversity_clip"])
    assert table.loc["a.png", "diversity_clip"] > 0 and table.loc["a.png", "diversity_pose"] > 0
    # c is alone in its group (moon, scale 1, final): nothing to compare with.
    assert math.isnan(table.loc["c.png", "diversity_clip"])


def test_bad_rows_are_explained_and_the_rest_is_evaluated(evaluated):
    notes = " ".join(evaluated[0].notes)
    assert "broken.png could not be read" in notes
    assert "1 row(s)" in notes and "deleted.png" in notes


def test_compare_runs_table_and_plot(evaluated, tmp_path):
    result, metrics = evaluated
    other = tmp_path / "other" / "metrics"
    other.mkdir(parents=True)
    changed = json.loads((metrics / "summary.json").read_text())
    changed["run"] = "other-run"
    changed["overall"]["likeness_mean"] = 0.5
    (other / "summary.json").write_text(json.dumps(changed))
    comparison = evaluate.compare_runs(metrics.parent, other.parent, tmp_path / "never-evaluated")
    assert list(comparison.table["run"]) == ["test-run", "other-run"]
    assert list(comparison.table["likeness_mean"])[1] == 0.5
    assert comparison.figure is not None
    assert any("never-evaluated" in note for note in comparison.notes)
    by_prompt = evaluate.compare_runs(metrics.parent, other.parent, by="prompt")
    assert len(by_prompt.table) == 4 and "prompt" in by_prompt.table.columns


# --- bad input ------------------------------------------------------------------------------------------------


def test_empty_and_missing_samples_folders_say_so_and_write_nothing(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for folder in (empty, tmp_path / "missing"):
        result = evaluate.evaluate_folder(folder, tmp_path / "metrics", clip_model="tiny", progress=False)
        assert result.empty and result.notes
        assert str(folder) in result.notes[0]
    assert not (tmp_path / "metrics").exists()


def test_missing_training_set_skips_likeness_and_keeps_the_rest(tmp_path):
    samples = tmp_path / "samples"
    write_samples(
        samples,
        [
            {"file": "x.png", "prompt": "sks person", "seed": 0, "lora_scale": 1, "checkpoint": ""},
            {"file": "y.png", "prompt": "sks person", "seed": 1, "lora_scale": 1, "checkpoint": ""},
        ],
    )
    astronaut_crop(100).save(samples / "x.png")
    noise(2).save(samples / "y.png")
    result = evaluate.evaluate_folder(
        samples, tmp_path / "metrics", dataset_dir=tmp_path / "no-dataset", clip_model="tiny", progress=False
    )
    assert any("likeness is skipped" in note for note in result.notes)
    assert result.per_image["likeness"].isna().all() and result.per_image["face_found"].tolist() == [True, False]
    assert result.per_image["clip_t"].notna().all()
    assert (tmp_path / "metrics" / "summary.json").is_file()
    assert result.summary["overall"]["likeness_mean"] is None


def test_a_run_folder_instead_of_its_samples_folder_is_understood(tmp_path):
    samples = tmp_path / "run" / "samples"
    write_samples(samples, [{"file": "x.png", "prompt": "sks person", "seed": 0, "lora_scale": 1, "checkpoint": ""}])
    noise(3).save(samples / "x.png")
    found = inputs.find_samples(tmp_path / "run")
    assert [sample.file for sample in found.samples] == ["x.png"]
    assert "run folder" in found.notes[0]
    dataset = tmp_path / "run" / "dataset"
    (dataset / "images").mkdir(parents=True)
    noise(4).save(dataset / "images" / "0001.png")
    (dataset / "metadata.jsonl").write_text(
        '{"file_name": "images/0001.png", "text": "a photo of sks person"}\n'
        '{"file_name": "images/0002.png", "text": "a photo of sks person"}\n'
    )
    photos, notes = inputs.training_photos(tmp_path / "run")
    assert photos == [dataset / "images" / "0001.png"]
    assert "run folder" in notes[0] and "1 image(s) listed" in notes[1]


def test_any_folder_of_images_without_samples_csv(tmp_path):
    from PIL.PngImagePlugin import PngInfo

    folder = tmp_path / "pictures"
    (folder / "nested").mkdir(parents=True)
    info = PngInfo()
    info.add_text(
        "parameters",
        "a photo of sks person, oil painting\nNegative prompt: blurry\n"
        "Steps: 30, Sampler: Euler, CFG scale: 5.0, Seed: 42, Size: 128x128, Lora scale: 0.8, "
        "Lora checkpoint: step_000200",
    )
    noise(4).save(folder / "nested" / "with_parameters.png", pnginfo=info)
    noise(5).convert("L").save(folder / "nested" / "plain.jpg")
    noise(6).save(folder / "nested" / "grid_0.png")  # 03_sample's grids are not samples
    found = inputs.find_samples(folder)
    assert sorted(sample.file for sample in found.samples) == ["nested/plain.jpg", "nested/with_parameters.png"]
    assert any("subfolders" in note for note in found.notes)
    with_parameters = next(sample for sample in found.samples if sample.file.endswith(".png"))
    assert with_parameters.prompt == "a photo of sks person, oil painting" and with_parameters.seed == 42
    assert with_parameters.lora_scale == 0.8 and with_parameters.checkpoint == "step_000200"

    result = evaluate.evaluate_folder(folder, None, clip_model="tiny", progress=False)
    table = result.per_image.set_index("file")
    assert not math.isnan(table.loc["nested/with_parameters.png", "clip_t"])
    assert math.isnan(table.loc["nested/plain.jpg", "clip_t"])
    assert "grayscale" in table.loc["nested/plain.jpg", "note"]
    # No prompt anywhere: alignment skipped with a note; a prompt parameter fills the gap.
    (folder / "nested" / "with_parameters.png").unlink()
    skipped = evaluate.evaluate_folder(folder, None, clip_model="tiny", progress=False)
    assert any("alignment is skipped" in note for note in skipped.notes)
    filled = evaluate.evaluate_folder(folder, None, clip_model="tiny", prompt="sks person", progress=False)
    assert filled.per_image["clip_t"].notna().all()


def test_samples_csv_without_a_file_column_falls_back_to_the_folder(tmp_path):
    folder = tmp_path / "samples"
    folder.mkdir()
    (folder / "samples.csv").write_text("image,prompt\nx.png,sks person\n")
    noise(7).save(folder / "x.png")
    found = inputs.find_samples(folder)
    assert [sample.file for sample in found.samples] == ["x.png"]
    assert "no 'file' column" in found.notes[0]


def test_sdxlab_sample_png_parameters_are_read_back(tmp_path):
    infotext = pytest.importorskip("sdxlab.sample.infotext")
    params = {
        "prompt": "sks person, in a café: at night",
        "negative_prompt": "blurry",
        "seed": 7,
        "steps": 30,
        "guidance": 5.0,
        "width": 128,
        "height": 128,
        "scheduler": "dpmpp_2m_karras",
        "lora_scale": 0.7,
        "lora_file": "sks.safetensors",
        "checkpoint": "step_000300",
        "model": "tiny",
    }
    infotext.write_png(tmp_path / "x.png", noise(8), params)
    read = inputs.read_png_parameters(tmp_path / "x.png")
    assert (read["prompt"], read["negative_prompt"], read["seed"]) == (params["prompt"], "blurry", 7)
    assert read["lora_scale"] == 0.7 and read["checkpoint"] == "step_000300"


# --- CLIP and the scorer interface ----------------------------------------------------------------------------


def test_tiny_clip_loads_offline_and_scores():
    scorer = evaluate.make_scorer("clip_t", clip_model="tiny", device="cpu")
    assert isinstance(scorer, evaluate.Scorer) and scorer.name == "clip_t" and not scorer.meaningful
    images = [astronaut_crop(100), noise(9).convert("L")]
    scores = scorer.score(images, ["a photo of sks person", "a photo of sks person"])
    assert len(scores) == 2 and all(-1.0 <= score <= 1.0 for score in scores)
    assert scores != scorer.score(images, ["a red sports car", "a red sports car"])
    assert scores == scorer.score(images, ["a photo of sks person", "a photo of sks person"])  # deterministic
    # The subject token is invisible to CLIP: scoring the intent text gives the same numbers.
    assert scores == pytest.approx(scorer.score(images, ["a photo of person", "a photo of person"]))
    embeddings = scorer.clip.embed_images(images)
    assert embeddings.shape == (2, scorer.clip.dimension)
    assert np.allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)


def test_unreachable_clip_model_is_one_sentence_and_evaluation_goes_on(tmp_path):
    missing_folder = str(tmp_path / "no" / "such" / "clip")
    with pytest.raises(ModelLoadError, match="does not exist"):
        evaluate.load_clip(missing_folder)
    # local_files_only stands in for "no network" without waiting for the hub client's retries.
    with pytest.raises(ModelLoadError, match="no-such-org/no-such-clip") as error:
        evaluate.load_clip("no-such-org/no-such-clip", local_files_only=True)
    assert "\n" not in str(error.value) and "local" in str(error.value)
    samples = tmp_path / "samples"
    write_samples(samples, [{"file": "x.png", "prompt": "sks person", "seed": 0, "lora_scale": 1, "checkpoint": ""}])
    astronaut_crop(100).save(samples / "x.png")
    result = evaluate.evaluate_folder(samples, None, clip_model=missing_folder, progress=False)
    assert any("alignment, CLIP diversity and copy detection are skipped" in note for note in result.notes)
    assert result.per_image["face_found"].tolist() == [True] and result.per_image["clip_t"].isna().all()


def test_pickle_only_clip_folder_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="pickle"):
        evaluate.load_clip(str(tmp_path))


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a photo of sks person on the moon", "a photo of person on the moon"),
        ("sks as a knight", "person as a knight"),
        ("{subject} painted by Vermeer", "person painted by Vermeer"),
        ("a portrait of <s0><s1> person, (cinematic:1.3) <lora:sks:0.8>", "a portrait of person, cinematic"),
        ("asks a question", "asks a question"),
    ],
)
def test_intent_text_replaces_the_subject_with_the_class_word(prompt, expected):
    intent = evaluate.intent_text(prompt, ["sks", "<s0><s1>", "<s0>", "<s1>"], "person")
    assert intent == expected
    assert evaluate.intent_text(intent, ["sks", "<s0><s1>"], "person") == intent  # idempotent


def test_scorer_registry_takes_new_scorers():
    class Brightness:
        name = "brightness"

        def score(self, images, texts):
            return [float(np.asarray(image.convert("L")).mean()) / 255 for image in images]

    evaluate.register_scorer("brightness", lambda **kwargs: Brightness())
    assert {"clip_t", "likeness", "brightness"} <= set(evaluate.available_scorers())
    scorer = evaluate.make_scorer("brightness")
    assert isinstance(scorer, evaluate.Scorer)
    assert scorer.score([Image.new("RGB", (4, 4), "white")], [""]) == [1.0]
    with pytest.raises(ValueError, match="registered scorers: .*clip_t"):
        evaluate.make_scorer("no-such-scorer")


def test_mean_distance_within_groups():
    from sdxlab.evaluate.diversity import mean_distance_within_groups

    vectors = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [np.nan, np.nan]])
    result = mean_distance_within_groups(vectors, ["same", "same", "mixed", "mixed", "mixed"])
    assert result[:2].tolist() == [0.0, 0.0]  # identical images: no diversity
    assert result[2:4].tolist() == pytest.approx([1.0, 1.0])  # orthogonal embeddings: cosine distance 1
    assert math.isnan(result[4])
