"""Writing the dataset folder (the contract in docs/ARCHITECTURE.md): images/, masks/, metadata.jsonl,
report.csv and contact_sheet.png, swapped into place only once complete."""

from __future__ import annotations

import json
import os
from pathlib import Path

from sdxlab import files
from sdxlab.capture.crops import crop_mask
from sdxlab.capture.results import CaptureResult, DatasetEntry
from sdxlab.capture.sources import CaptureError, PhotoSource


def metadata_row(entry: DatasetEntry) -> dict:
    photo, crop = entry.photo, entry.crop
    to_original = 1 / photo.scale
    return {
        "file_name": entry.file_name,
        "text": entry.caption,
        "mask_file": entry.mask_file,
        "source": _source_path(photo.source),
        "face_box": [int(value) for value in crop.face.box],
        "crop_box": [round(value * to_original) for value in crop.box],
        "original_size": [photo.original_size[1], photo.original_size[0]],
        "upscaled": crop.upscaled,
        "variant": entry.variant,
    }


def _source_path(source: PhotoSource) -> str:
    """The original's absolute path (a zip member as archive.zip/member)."""
    path = source.path.resolve()
    return f"{path}/{source.member}" if source.member is not None else str(path)


def write_dataset(result: CaptureResult, dataset_dir: str | os.PathLike, progress: bool = True) -> Path:
    """Write the dataset folder, replacing any earlier one only once the new one is complete.

    With fewer usable photos than `min_photos`, only report.csv and contact_sheet.png are written (so the
    person can see why) and CaptureError says how many were usable and why the others were not.
    """
    from tqdm.auto import tqdm

    from sdxlab.capture.sheet import contact_sheet

    dataset_dir = Path(dataset_dir)
    with files.atomic_folder(dataset_dir) as staging:
        enough = len(result.kept) >= result.settings.min_photos
        if enough:
            rows = []
            for entry in tqdm(result.entries, desc="writing", unit="image", disable=not progress):
                # zlib level 3: a third of the default's time for files 8% larger (still lossless).
                files.write_image(staging / entry.file_name, entry.crop.image, compress_level=3)
                files.write_image(
                    staging / entry.mask_file,
                    crop_mask(entry.crop, result.settings.background_weight),
                    compress_level=3,
                )
                rows.append(metadata_row(entry))
            files.write_jsonl(staging / "metadata.jsonl", rows)
        files.write_csv(staging / "report.csv", result.report())
        files.write_image(staging / "contact_sheet.png", contact_sheet(result))
    if not enough:
        raise CaptureError(_too_few_message(result, dataset_dir))
    return dataset_dir


def _too_few_message(result: CaptureResult, dataset_dir: Path) -> str:
    reasons = "\n".join(f"  - {line}" for line in result.messages())
    why = f"; the others were not:\n{reasons}" if reasons else "; none was rejected, there are just too few."
    return (
        f"Only {len(result.kept)} of {len(result.photos)} files in {result.photos_dir} are usable; training needs at "
        f"least {result.settings.min_photos} (min_photos). Add more photos, or fix the rejected ones, and run capture "
        f"again (report: {dataset_dir / 'report.csv'}){why}"
    )


def read_metadata(dataset_dir: str | os.PathLike) -> list[dict]:
    """The rows of a dataset's metadata.jsonl (what the trainer reads)."""
    lines = (Path(dataset_dir) / "metadata.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def masked_previews(dataset_dir: str | os.PathLike, limit: int = 12) -> tuple[list, list[str]]:
    """What the trainer sees: the first `limit` crops, each seen through its face mask, and their captions.

    A pixel keeps its brightness where the mask weighs the loss 1.0 (the face) and is dimmed to the mask's
    weight elsewhere (black where a pixel does not count at all).
    """
    from PIL import Image

    folder = Path(dataset_dir)
    rows = read_metadata(folder)[:limit]
    previews = []
    for row in rows:
        with Image.open(folder / row["file_name"]) as image, Image.open(folder / row["mask_file"]) as mask:
            crop = image.convert("RGB")
            previews.append(Image.composite(crop, Image.new("RGB", crop.size, "black"), mask.convert("L")))
    return previews, [row["text"] for row in rows]
