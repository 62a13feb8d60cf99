"""Capture on a folder that mixes good photos with every kind of bad input people drop in.

The good photos are the bundled samples, some re-saved in the formats phones and people produce (16-bit PNG,
CMYK JPEG, HEIC, EXIF-rotated JPEG, a zip, a 50-megapixel JPEG); the bad ones are built from them and from
scikit-image's pictures. The test asserts that exactly the good ones are kept, that every other file has a
reason naming it, and that the input folder is byte-for-byte unchanged.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter, ImageOps
from skimage import data

from sdxlab import capture, faces

RESOLUTION = 384  # large enough that a distant face cannot reach it without enlarging its crop 2x
CROP_SCALE = 2.0  # face and hair: the photos below were made so that exactly the distant face needs more than 2x
SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"


def upright(name: str) -> Image.Image:
    return capture.load_photo(SAMPLE / name).image


def save_exif_rotated(image: Image.Image, path: Path) -> None:
    """As a phone saves a portrait: pixels stored sideways, EXIF orientation 6 says how to turn them."""
    exif = Image.Exif()
    exif[0x0112] = 6
    image.transpose(Image.Transpose.ROTATE_90).save(path, "JPEG", quality=90, exif=exif.tobytes())


def fifty_megapixel_jpeg(path: Path) -> None:
    """8660 x 5780 px: her portrait large on a plain backdrop (plain, so it encodes quickly)."""
    canvas = Image.new("RGB", (8660, 5780), (96, 110, 124))
    portrait = Image.fromarray(data.astronaut()).crop((60, 0, 460, 400)).resize((3600, 3600), Image.Resampling.BILINEAR)
    canvas.paste(portrait, (4200, 1400))
    canvas.save(path, "JPEG", quality=80)


def group_photo() -> Image.Image:
    """Two people side by side (her portrait and its mirror image: two prominent faces)."""
    portrait = Image.fromarray(data.astronaut())
    canvas = Image.new("RGB", (1024, 560), "white")
    canvas.paste(portrait, (0, 24))
    canvas.paste(portrait.transpose(Image.Transpose.FLIP_LEFT_RIGHT), (512, 24))
    return canvas


def tiny_face_photo() -> Image.Image:
    """Her portrait far away in a big frame: the face is ~45 px, its crop ~140 px, RESOLUTION needs 384."""
    canvas = ImageOps.fit(Image.fromarray(data.rocket()), (1280, 960))
    canvas.paste(Image.fromarray(data.astronaut()).resize((256, 256), Image.Resampling.LANCZOS), (600, 700))
    return canvas


def animated_gif(path: Path) -> None:
    portrait = Image.fromarray(data.astronaut())
    frames = [portrait.rotate(angle) for angle in (0, 5, 10)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)


def build_inputs(folder: Path) -> tuple[set[str], dict[str, str]]:
    """Fill `folder`; returns (names that must be kept, {name: the check that must reject it})."""
    folder.mkdir(parents=True, exist_ok=True)
    good = set()
    for name in (
        "01_portrait.jpg",
        "02_mirror_close.jpg",
        "05_rocket_launch.jpg",
        "06_night_sky.jpg",
        "08_evening_warm.jpg",
        "10_phone_portrait_exif6.jpg",
        "13_cutout.png",
        "14_brick_wall.webp",
    ):
        shutil.copy(SAMPLE / name, folder / name)
        good.add(name)
    nested = folder / "phone" / "DCIM"
    nested.mkdir(parents=True)
    # Formats: each from a different sample photo, so none is a near-duplicate of another good one.
    sixteen_bit = np.asarray(upright("03_tilt_left_hubble.jpg").convert("L"), dtype=np.uint16) * 257
    Image.fromarray(sixteen_bit).save(nested / "gray16.png")
    upright("04_tilt_right_coffee.jpg").convert("CMYK").save(nested / "cmyk.jpg", "JPEG", quality=90)
    import pillow_heif

    pillow_heif.from_pillow(upright("11_phone_sideways_exif8.jpg")).save(nested / "IMG_0001.HEIC", quality=75)
    save_exif_rotated(upright("12_upside_down_exif3.jpg"), nested / "IMG_0002.JPG")
    with zipfile.ZipFile(folder / "more.zip", "w") as archive:
        archive.write(SAMPLE / "16_high_contrast.jpg", "holiday/16_high_contrast.jpg")
        archive.write(SAMPLE / "09_black_and_white.jpg", "09_black_and_white.jpg")
    fifty_megapixel_jpeg(folder / "huge_50mp.jpg")
    good |= {
        "phone/DCIM/gray16.png",
        "phone/DCIM/cmyk.jpg",
        "phone/DCIM/IMG_0001.HEIC",
        "phone/DCIM/IMG_0002.JPG",
        "more.zip/holiday/16_high_contrast.jpg",
        "more.zip/09_black_and_white.jpg",
        "huge_50mp.jpg",
    }

    bad = {}
    (folder / "empty.jpg").write_bytes(b"")
    bad["empty.jpg"] = "unreadable"
    jpeg = (SAMPLE / "07_cool_daylight.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    bad["truncated.jpg"] = "unreadable"
    (folder / "notes.jpg").write_text("shopping list: milk, eggs\n")
    bad["notes.jpg"] = "unreadable"
    animated_gif(folder / "animated.gif")
    bad["animated.gif"] = "unreadable"
    upright("07_cool_daylight.jpg").resize((64, 64)).save(folder / "thumbnail.jpg")
    bad["thumbnail.jpg"] = "too_small"
    Image.fromarray(data.coffee()).save(folder / "coffee.jpg")
    bad["coffee.jpg"] = "no_face"
    group_photo().save(folder / "group.jpg")
    bad["group.jpg"] = "group_photo"
    tiny_face_photo().save(folder / "far_away.jpg")
    bad["far_away.jpg"] = "face_too_small"
    sharp = upright("02_mirror_close.jpg")
    sharp.filter(ImageFilter.GaussianBlur(sharp.width / 120)).save(folder / "blurred.jpg", quality=90)
    bad["blurred.jpg"] = "blurry"
    dark = upright("07_cool_daylight.jpg").point(lambda level: level // 7)
    dark.save(folder / "dark.jpg", quality=90)
    bad["dark.jpg"] = "exposure"
    rocket = upright("05_rocket_launch.jpg")
    rocket.resize((rocket.width * 3 // 4, rocket.height * 3 // 4)).save(folder / "rocket_copy.jpg", quality=70)
    bad["rocket_copy.jpg"] = "duplicate"
    return good, bad


def folder_hashes(folder: Path) -> dict[str, tuple[str, float]]:
    """Every file's content hash and modification time, to prove capture only read them."""
    return {
        path.relative_to(folder).as_posix(): (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def mixed_capture(tmp_path_factory):
    root = tmp_path_factory.mktemp("capture")
    inputs = root / "photos"
    good, bad = build_inputs(inputs)
    before = folder_hashes(inputs)
    result = capture.capture_photos(
        inputs, root / "dataset", resolution=RESOLUTION, min_photos=8, progress=False, crop_scale=CROP_SCALE
    )
    return {"inputs": inputs, "dataset": root / "dataset", "good": good, "bad": bad, "before": before, "result": result}


def test_exactly_the_good_photos_are_kept(mixed_capture):
    result = mixed_capture["result"]
    kept = {photo.name for photo in result.kept}
    assert kept == mixed_capture["good"], result.messages()


def test_every_other_file_is_rejected_by_the_right_check_with_a_sentence_naming_it(mixed_capture):
    rejected = {photo.name: photo for photo in mixed_capture["result"].rejected}
    assert set(rejected) == set(mixed_capture["bad"])
    for name, check in mixed_capture["bad"].items():
        photo = rejected[name]
        assert photo.rejections[0].check == check, (name, photo.reason)
        assert photo.reason.startswith(name) and photo.reason.endswith("."), photo.reason
    assert "near-duplicate of 05_rocket_launch.jpg" in rejected["rocket_copy.jpg"].reason
    assert "animation" in rejected["animated.gif"].reason
    assert "empty" in rejected["empty.jpg"].reason


def test_input_folder_is_unchanged(mixed_capture):
    assert folder_hashes(mixed_capture["inputs"]) == mixed_capture["before"]


def test_report_has_one_row_per_file_with_measurements(mixed_capture):
    import pandas as pd

    report = pd.read_csv(mixed_capture["dataset"] / "report.csv")
    assert len(report) == len(mixed_capture["good"]) + len(mixed_capture["bad"])
    assert set(report["file"]) == mixed_capture["good"] | set(mixed_capture["bad"])
    kept = report[report["status"] == "kept"]
    assert set(kept["file"]) == mixed_capture["good"]
    assert kept[["face_px", "sharpness", "brightness", "identity_distance"]].notna().all().all()
    assert (report.loc[report["status"] == "rejected", "reason"].str.len() > 20).all()
    blurred = report.set_index("file").loc["blurred.jpg"]
    assert blurred["sharpness"] < report.set_index("file").loc["02_mirror_close.jpg", "sharpness"] / 3


def test_formats_come_out_upright_and_in_colour(mixed_capture):
    rows = {Path(row["source"]).name: row for row in capture.read_metadata(mixed_capture["dataset"])}
    dataset = mixed_capture["dataset"]
    for name in (
        "IMG_0002.JPG",
        "10_phone_portrait_exif6.jpg",
        "IMG_0001.HEIC",
        "cmyk.jpg",
        "gray16.png",
        "huge_50mp.jpg",
    ):
        row = rows[name]
        image = Image.open(dataset / row["file_name"])
        assert image.mode == "RGB" and image.size == (RESOLUTION, RESOLUTION)
        # Upright: the face is found without turning the crop, and it sits near the centre.
        face = faces.main_face(image)
        assert face is not None, name
        assert abs(face.center[0] - RESOLUTION / 2) < RESOLUTION * 0.2, name
    # The 16-bit PNG was scaled to 8 bit, not clipped to white.
    gray = np.asarray(Image.open(dataset / rows["gray16.png"]["file_name"]).convert("L"))
    assert 60 < gray.mean() < 200
    # Stored sideways, reported upright: original_size is the upright photo's [height, width].
    turned_back = upright("12_upside_down_exif3.jpg")
    assert rows["IMG_0002.JPG"]["original_size"] == [turned_back.height, turned_back.width]
    assert turned_back.height != turned_back.width
    assert rows["huge_50mp.jpg"]["original_size"] == [5780, 8660]


def test_zip_members_are_read_in_place(mixed_capture):
    sources = [row["source"] for row in capture.read_metadata(mixed_capture["dataset"])]
    assert any(source.endswith("more.zip/holiday/16_high_contrast.jpg") for source in sources)


def test_zip_members_named_outside_the_archive_get_a_report_row_saying_why(tmp_path):
    """`../x.jpg` and `/x.jpg` used to vanish (or be read); now each is skipped unread, with its own row."""
    archive = tmp_path / "photos.zip"
    photo = (SAMPLE / "01_portrait.jpg").read_bytes()
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr(zipfile.ZipInfo("../escape.jpg"), photo)
        handle.writestr(zipfile.ZipInfo("/etc/absolute.jpg"), photo)
        handle.writestr(zipfile.ZipInfo("holiday/../../twice.jpg"), photo)
    result = capture.analyse_photos(archive, resolution=128, progress=False)
    report = result.report().set_index("file")
    assert sorted(report.index) == sorted(
        ["photos.zip//etc/absolute.jpg", "photos.zip/../escape.jpg", "photos.zip/holiday/../../twice.jpg"]
    )
    assert set(report["check"]) == {"unsafe_name"} and set(report["status"]) == {"rejected"}
    assert "skipped without being read" in report.loc["photos.zip/../escape.jpg", "reason"]
    assert "'..'" in report.loc["photos.zip/../escape.jpg", "reason"]
    assert "absolute path" in report.loc["photos.zip//etc/absolute.jpg", "reason"]
    assert "3 unsafe name" in result.summary()


def test_overrides_leave_the_callers_settings_as_they_were(tmp_path):
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr(zipfile.ZipInfo("../escape.jpg"), b"x")
    settings = capture.CaptureSettings(min_photos=3)
    result = capture.analyse_photos(archive, settings, resolution=256, progress=False)
    assert (result.settings.resolution, result.settings.min_photos) == (256, 3)
    assert settings.resolution == capture.CaptureSettings().resolution  # the caller's object is unchanged


def test_a_too_large_zip_member_gets_the_limit_and_what_to_do(tmp_path, monkeypatch):
    from sdxlab.capture import sources

    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("holiday.mov", b"\0" * 5000)
    monkeypatch.setattr(sources, "MAX_FILE_BYTES", 4000)  # a real one would be a 300 MB file
    result = capture.analyse_photos(archive, resolution=128, progress=False)
    [reason] = result.messages()
    assert reason.startswith("photos.zip/holiday.mov is 0 MB, more than the 0 MB limit for one photo")
    assert "export it as a JPEG" in reason and "remove it from the zip" in reason


def test_resolution_that_is_not_a_multiple_of_8_is_refused_before_any_photo_is_read(tmp_path):
    with pytest.raises(ValueError) as raised:  # before the missing folder is even looked at
        capture.analyse_photos(tmp_path / "nowhere", resolution=100, progress=False)
    message = str(raised.value)
    assert message.startswith("resolution must be a multiple of 8") and "e.g. 96 or 104" in message
    assert "\n" not in message


def test_keep_anyway_overrides_a_rejection_but_cannot_invent_a_face(tmp_path):
    inputs = tmp_path / "photos"
    inputs.mkdir()
    for name in ("01_portrait.jpg", "02_mirror_close.jpg", "05_rocket_launch.jpg"):
        shutil.copy(SAMPLE / name, inputs / name)
    sharp = upright("07_cool_daylight.jpg")
    sharp.filter(ImageFilter.GaussianBlur(sharp.width / 120)).save(inputs / "soft.jpg")
    Image.fromarray(data.coffee()).save(inputs / "coffee.jpg")
    result = capture.analyse_photos(inputs, resolution=128, keep_anyway=["soft.jpg", "coffee.jpg"], progress=False)
    status = {photo.name: photo.status for photo in result.photos}
    assert status["soft.jpg"] == "kept anyway"
    assert status["coffee.jpg"] == "rejected"
    assert any(line.startswith("kept anyway: soft.jpg is blurry") for line in result.messages())


def test_too_few_usable_photos_stops_with_counts_and_reasons(tmp_path):
    inputs = tmp_path / "photos"
    inputs.mkdir()
    for name in ("01_portrait.jpg", "02_mirror_close.jpg"):
        shutil.copy(SAMPLE / name, inputs / name)
    (inputs / "broken.jpg").write_bytes(b"not a photo")
    with pytest.raises(capture.CaptureError) as raised:
        capture.capture_photos(inputs, tmp_path / "dataset", resolution=128, min_photos=8, progress=False)
    message = str(raised.value)
    assert "Only 2 of 3 files" in message and "at least 8" in message and "broken.jpg" in message
    # The report and contact sheet are written so the person can see why; no half dataset is.
    assert (tmp_path / "dataset" / "report.csv").is_file()
    assert (tmp_path / "dataset" / "contact_sheet.png").is_file()
    assert not (tmp_path / "dataset" / "metadata.jsonl").exists()


def test_missing_folder_gives_one_clear_sentence(tmp_path):
    with pytest.raises(capture.CaptureError, match="does not exist"):
        capture.analyse_photos(tmp_path / "nowhere", progress=False)


def test_captions_default_hook_and_override(tmp_path):
    inputs = tmp_path / "photos"
    inputs.mkdir()
    for name in ("01_portrait.jpg", "02_mirror_close.jpg", "05_rocket_launch.jpg"):
        shutil.copy(SAMPLE / name, inputs / name)

    def describe(image, source):
        assert image.size == (128, 128)
        return "smiling, rocket in the background" if "rocket" in source else None

    result = capture.analyse_photos(
        inputs,
        resolution=128,
        subject_token="ohwx",
        class_word="woman",
        caption_hook=describe,
        captions_override={"02_mirror_close.jpg": "a close-up photo of ohwx woman"},
        loose_crop=True,
        min_photos=3,
        progress=False,
    )
    captions = {(entry.photo.name, entry.variant): entry.caption for entry in result.entries}
    assert captions[("01_portrait.jpg", "main")] == "a photo of ohwx woman"
    assert captions[("02_mirror_close.jpg", "main")] == "a close-up photo of ohwx woman"
    assert captions[("05_rocket_launch.jpg", "main")] == "a photo of ohwx woman, smiling, rocket in the background"
    assert len(result.entries) == 6  # a loose crop per photo
    result.set_caption("0001.png", "edited in the notebook")
    capture.write_dataset(result, tmp_path / "dataset", progress=False)
    rows = capture.read_metadata(tmp_path / "dataset")
    assert rows[0]["text"] == "edited in the notebook"
    assert [row["variant"] for row in rows] == ["main", "loose"] * 3
    # The loose crop is wider in the source than the main crop of the same photo.
    assert rows[1]["crop_box"][2] - rows[1]["crop_box"][0] > rows[0]["crop_box"][2] - rows[0]["crop_box"][0]


def test_rerun_replaces_the_dataset_without_leftovers(tmp_path):
    inputs = tmp_path / "photos"
    inputs.mkdir()
    for name in ("01_portrait.jpg", "02_mirror_close.jpg", "05_rocket_launch.jpg"):
        shutil.copy(SAMPLE / name, inputs / name)
    capture.capture_photos(inputs, tmp_path / "dataset", resolution=128, min_photos=1, progress=False)
    (inputs / "05_rocket_launch.jpg").unlink()
    capture.capture_photos(inputs, tmp_path / "dataset", resolution=128, min_photos=1, progress=False)
    assert sorted(path.name for path in (tmp_path / "dataset" / "images").iterdir()) == ["0001.png", "0002.png"]
    assert len((tmp_path / "dataset" / "metadata.jsonl").read_text().splitlines()) == 2
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".")] == []


def test_a_different_person_is_rejected(tmp_path, group_photo):
    inputs = tmp_path / "photos"
    inputs.mkdir()
    for name in (
        "01_portrait.jpg",
        "02_mirror_close.jpg",
        "05_rocket_launch.jpg",
        "07_cool_daylight.jpg",
        "14_brick_wall.webp",
    ):
        shutil.copy(SAMPLE / name, inputs / name)
    stranger = faces.detect_faces(group_photo)[0]
    left, top, right, bottom = stranger.box
    margin = stranger.width
    group_photo.crop((left - margin, top - margin, right + margin, bottom + 2 * margin)).save(inputs / "friend.jpg")
    result = capture.analyse_photos(inputs, resolution=128, progress=False)
    verdicts = {photo.name: photo for photo in result.photos}
    assert [photo.name for photo in result.rejected] == ["friend.jpg"]
    assert verdicts["friend.jpg"].rejections[0].check == "different_person"
    assert verdicts["friend.jpg"].identity_distance > max(
        verdicts[name].identity_distance for name in verdicts if name != "friend.jpg"
    )


def test_upload_saves_into_the_folder_without_replacing_files(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buffer, "JPEG")
    uploads = [{"name": "selfie.jpg", "content": buffer.getvalue()}, {"name": "../selfie.jpg", "content": b"x"}]
    saved = capture.save_uploads(uploads, tmp_path / "me")
    assert [path.name for path in saved] == ["selfie.jpg", "selfie_1.jpg"]
    assert all(path.parent == tmp_path / "me" for path in saved)
    assert capture.load_photo(saved[0]).image.size == (512, 512)


def test_metadata_rows_follow_the_contract(mixed_capture):
    rows = [json.loads(line) for line in (mixed_capture["dataset"] / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == len(mixed_capture["good"])
    for row in rows:
        assert {"file_name", "text", "mask_file", "source", "face_box", "crop_box", "original_size", "upscaled"} <= set(
            row
        )
        assert (mixed_capture["dataset"] / row["file_name"]).is_file() and (
            mixed_capture["dataset"] / row["mask_file"]
        ).is_file()
