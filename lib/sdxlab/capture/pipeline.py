"""Capture: photos in, a clean face-centred training set out.

`analyse_photos` reads every input (never writing to it), finds the face, measures it, crops it and writes
nothing; `write_dataset` then writes `images/`, `masks/`, `metadata.jsonl`, `report.csv` and
`contact_sheet.png`. Between the two a notebook can show the verdicts and let the person edit captions.
`capture_photos` does both.

Every file gets one row in the report. A file that cannot be used gets one sentence naming it and saying what
to do, and the capture goes on with the rest.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
from PIL import Image

from sdxlab import faces
from sdxlab.capture import checks
from sdxlab.capture.crops import LOOSE_CROP_FACTOR, Crop, make_crop
from sdxlab.capture.dataset import write_dataset
from sdxlab.capture.decode import UnreadablePhoto, load_photo
from sdxlab.capture.results import CaptureResult, CaptureSettings, DatasetEntry, PhotoResult
from sdxlab.capture.sources import PhotoSource, find_photos
from sdxlab.faces import Face

THUMBNAIL_SIDE = 320  # contact-sheet thumbnails (and the perceptual hash, which needs far less)


# --- one photo ----------------------------------------------------------------------------------------------


def analyse_photo(source: PhotoSource, settings: CaptureSettings) -> PhotoResult:
    """Decode, detect, measure and crop one input; problems become rejections, never exceptions."""
    result = PhotoResult(source=source, keep_anyway=source.matches(set(settings.keep_anyway)))
    if source.refused:
        result.reject("unsafe_name", source.refused)
        return result
    try:
        photo = load_photo(source)
    except UnreadablePhoto as problem:
        result.reject("unreadable", str(problem))
        return result
    image = photo.image
    result.notes, result.file_format, result.original_size, result.scale = (
        photo.notes,
        photo.file_format,
        photo.original_size,
        photo.scale,
    )
    result.thumbnail = _thumbnail(image)
    width, height = photo.original_size
    if min(width, height) < settings.min_photo_side:
        result.reject(
            "too_small", f"is only {width}x{height} pixels, a thumbnail rather than a photo; use the original photo"
        )
        return result

    confident = _confident_faces(image, settings)
    result.face_count = len(confident)
    if not confident:
        result.reject(
            "no_face",
            "has no face the detector is sure of; use a photo where your face is clearly visible, roughly frontal",
        )
        return result
    face = result.face = confident[0]
    _measure(result, image, face, confident, settings)
    result.embedding = faces.face_embedding(image, face)
    result.phash = checks.perceptual_hash(result.thumbnail)  # the hash sees 64 px; the thumbnail has plenty
    result.crops.append(make_crop(image, face, settings.resolution, settings.crop_scale))
    if settings.loose_crop:
        result.crops.append(make_crop(image, face, settings.resolution, settings.crop_scale * LOOSE_CROP_FACTOR))
    upscale = result.crops[0].upscale
    if upscale > settings.max_upscale:
        result.reject(
            "face_too_small",
            f"has a face only {result.face_px} px wide, so its crop would be enlarged {upscale:.1f}x to reach "
            f"{settings.resolution} px (limit {settings.max_upscale:g}x); use a closer or higher-resolution photo",
        )
    elif result.crops[0].upscaled:
        result.notes.append(f"crop upscaled {upscale:.2f}x")
    return result


def _confident_faces(image: Image.Image, settings: CaptureSettings) -> list[Face]:
    """Confident faces, best first. Detection without upsampling is 4x faster and enough for a selfie; it is
    repeated with upsampling when it finds nothing, or when a second face big enough to matter could be
    below the detector's window."""
    confident = _confirmed(image, _detect(image, 0, settings), settings)
    smallest_found = faces.HOG_MIN_FACE * max(1.0, max(image.size) / faces.DETECT_MAX_SIDE)  # in image pixels
    if settings.face_upsample > 0 and (
        not confident or confident[0].width * settings.prominent_face_ratio < smallest_found
    ):
        confident = _confirmed(image, _detect(image, settings.face_upsample, settings), settings)
    return confident


def _detect(image: Image.Image, upsample: int, settings: CaptureSettings) -> list[Face]:
    found = faces.detect_faces(image, upsample, settings.face_detector)
    return [face for face in found if face.score >= settings.face_min_score]


def _confirmed(image: Image.Image, candidates: list[Face], settings: CaptureSettings) -> list[Face]:
    """Drop HOG's false positives among the faces that decide a verdict (the main face and any face big
    enough to make a group photo) by asking the CNN detector about each (~0.1 s per face)."""
    if not settings.face_confirm or settings.face_detector == "cnn":
        return candidates
    kept: list[Face] = []
    for face in candidates:
        too_small_to_matter = kept and face.width < settings.prominent_face_ratio * kept[0].width
        if too_small_to_matter or faces.confirm_face(image, face) >= faces.MIN_CONFIRM_SCORE:
            kept.append(face)
    return kept


def _measure(
    result: PhotoResult, image: Image.Image, face: Face, confident: list[Face], settings: CaptureSettings
) -> None:
    others = checks.prominent_faces(confident, face, settings.face_min_score, settings.prominent_face_ratio)
    if others:
        result.reject(
            "group_photo",
            f"shows {len(others) + 1} prominent faces; use a photo of you alone or crop the others out "
            "(or list it in keep_anyway to use the largest face)",
        )
    region = checks.face_region(image, face)
    result.sharpness = checks.sharpness(region)
    result.brightness, result.clipped = checks.exposure(region)
    low, high = settings.exposure_range
    badly_exposed = result.brightness < low or result.brightness > high or result.clipped > settings.max_clipped
    # Sharpness is only judged in usable light: a face lost in shadow has no edges to measure.
    if not badly_exposed and result.sharpness < settings.min_sharpness:
        result.reject(
            "blurry",
            f"is blurry on the face (sharpness {result.sharpness:.0f}, minimum {settings.min_sharpness:g}); "
            "use a sharper photo or list it in keep_anyway",
        )
    if badly_exposed:
        problem = (
            "too dark"
            if result.brightness < low
            else "too bright"
            if result.brightness > high
            else "clipped to black or white"
        )
        result.reject(
            "exposure",
            f"is badly exposed: the face is {problem} (brightness {result.brightness:.2f}, allowed {low:g}-{high:g}; "
            f"clipped {result.clipped:.0%}); use a photo in even light or list it in keep_anyway",
        )


def _thumbnail(image: Image.Image) -> Image.Image:
    thumbnail = (
        image.copy()
        if max(image.size) <= THUMBNAIL_SIDE * 2
        else image.reduce(max(1, max(image.size) // (THUMBNAIL_SIDE * 2)))
    )
    thumbnail.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.LANCZOS)
    return thumbnail


# --- the set ------------------------------------------------------------------------------------------------


def check_duplicates(photos: list[PhotoResult], max_distance: int) -> None:
    """Of the usable photos that hash alike, keep the best (largest face, then sharpest); reject the others.

    Photos already rejected for another reason do not take part (a blurred copy is reported as blurry), unless
    the person keeps them anyway."""
    candidates = [photo for photo in photos if photo.phash is not None and photo.kept]
    candidates.sort(key=lambda photo: (photo.face_px or 0, photo.sharpness or 0), reverse=True)
    chosen: list[PhotoResult] = []
    for photo in candidates:
        twin = next((c for c in chosen if checks.hash_distance(c.phash, photo.phash) <= max_distance), None)
        if twin is None:
            chosen.append(photo)
            continue
        photo.duplicate_of = twin.name
        photo.reject(
            "duplicate",
            f"is a near-duplicate of {twin.name} (perceptual hash distance {checks.hash_distance(twin.phash, photo.phash)} "
            f"of {checks.HASH_BITS} bits, limit {max_distance}); one of the two is enough, the sharper one with the larger face was kept",
        )


def check_identity(photos: list[PhotoResult], max_distance: float) -> None:
    """Reject photos whose face is far from the majority's identity (a friend's photo dropped in by mistake)."""
    with_face = [photo for photo in photos if photo.embedding is not None]
    if len(with_face) < checks.MIN_PHOTOS_FOR_IDENTITY:
        return
    distances = checks.identity_distances(np.stack([photo.embedding for photo in with_face]), max_distance)
    for photo, distance in zip(with_face, distances, strict=True):
        photo.identity_distance = float(distance)
        if distance > max_distance:
            photo.reject(
                "different_person",
                f"looks like a different person from the rest of the set (identity distance {distance:.2f} from the "
                f"set's centre, limit {max_distance:.2f}); remove it, or list it in keep_anyway if it really is you",
            )


def caption_for(photo: PhotoResult, crop: Crop, settings: CaptureSettings) -> str:
    """The default caption, or the hook's: a description without the token gets appended to the default."""
    caption = settings.default_caption()
    if settings.caption_hook is not None:
        try:
            described = settings.caption_hook(crop.image, photo.name)
        except Exception as error:  # one failing caption must not stop the capture
            photo.notes.append(f"caption hook failed ({type(error).__name__}: {error}); default caption used")
            described = None
        if described:
            described = " ".join(str(described).split())
            caption = described if settings.subject_token in described else f"{caption}, {described}"
    return caption


def build_entries(photos: list[PhotoResult], settings: CaptureSettings) -> list[DatasetEntry]:
    entries: list[DatasetEntry] = []
    for photo in photos:
        if not photo.kept:
            continue
        for index, crop in enumerate(photo.crops):
            file_name = f"images/{len(entries) + 1:04d}.png"
            entries.append(
                DatasetEntry(
                    file_name, photo, crop, "main" if index == 0 else "loose", caption_for(photo, crop, settings)
                )
            )
    overrides = settings.captions_override or {}
    for entry in entries:
        for key in (entry.file_name, Path(entry.file_name).name, entry.photo.name, Path(entry.photo.name).name):
            if key in overrides:
                entry.caption = overrides[key]
                break
    return entries


def analyse_photos(
    photos_dir: str | os.PathLike, settings: CaptureSettings | None = None, progress: bool = True, **overrides
) -> CaptureResult:
    """Read and judge every input under `photos_dir` (a folder or a .zip); nothing is written anywhere."""
    from tqdm.auto import tqdm

    settings = settings or CaptureSettings()
    unknown = sorted(set(overrides) - {item.name for item in dataclasses.fields(settings)})
    if unknown:
        raise TypeError(f"Unknown capture setting(s) {', '.join(unknown)}.")
    settings = dataclasses.replace(settings, **overrides)  # checked again, and the caller's settings stay as they were
    photos_dir = Path(photos_dir)
    sources = find_photos(photos_dir)
    photos = [
        analyse_photo(source, settings) for source in tqdm(sources, desc="photos", unit="photo", disable=not progress)
    ]
    check_duplicates(photos, settings.duplicate_max_distance)
    check_identity(photos, settings.identity_max_distance)
    return CaptureResult(photos_dir, settings, photos, build_entries(photos, settings))


def capture_photos(
    photos_dir: str | os.PathLike,
    dataset_dir: str | os.PathLike,
    settings: CaptureSettings | None = None,
    progress: bool = True,
    **overrides,
) -> CaptureResult:
    """Analyse every photo and write the dataset folder: the whole stage in one call."""
    result = analyse_photos(photos_dir, settings, progress=progress, **overrides)
    write_dataset(result, dataset_dir, progress=progress)
    return result
