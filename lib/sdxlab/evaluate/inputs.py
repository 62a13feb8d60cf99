"""What evaluation reads: generated images with their prompts, and the person's training photos.

Generated images come from 03_sample's `samples/` folder (`samples.csv` says which prompt, seed, LoRA scale
and checkpoint made each PNG) or from any folder of images: then the prompt is read from the PNG's
AUTOMATIC1111 `parameters` text chunk when there is one, or taken from a parameter. Layout mistakes (a run
folder instead of its samples folder, a CSV without a `file` column, rows naming missing files) are
explained in notes and worked around where the intent is clear; nothing here raises on bad input.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".heic", ".heif"}
GRID_PREFIX = "grid_"  # 03_sample's contact grids: pictures of pictures, not samples
LORA_TAG = re.compile(r"<lora:([^:>]+)(?::([-+]?\d*\.?\d+))?[^>]*>", re.IGNORECASE)


@dataclass
class Sample:
    """One generated image and what is known about how it was made."""

    path: Path
    file: str  # as named in samples.csv, or the path relative to the samples folder
    prompt: str | None = None
    negative_prompt: str | None = None
    seed: int | None = None
    lora_scale: float | None = None
    checkpoint: str = "final"  # a training checkpoint's folder name (step_000400), or "final"
    lora_file: str = ""


@dataclass
class SampleSet:
    folder: Path
    samples: list[Sample] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    source: str = "folder"  # "samples.csv", "png parameters" or "folder"


def find_samples(samples_dir: str | Path, prompt: str | None = None) -> SampleSet:
    """The generated images to evaluate, with prompts and parameters where known."""
    folder = Path(samples_dir)
    found = SampleSet(folder=folder)
    if not folder.exists():
        found.notes.append(
            f"Samples folder {folder} does not exist; run 03_sample first, or point evaluate_samples_dir "
            "at a folder of images."
        )
        return found
    if folder.is_file():
        found.notes.append(f"{folder} is a file, not a folder; point evaluate_samples_dir at the folder of images.")
        return found
    if not (folder / "samples.csv").is_file() and (folder / "samples").is_dir():
        found.notes.append(f"{folder} looks like a run folder; evaluating its samples/ subfolder.")
        folder = found.folder = folder / "samples"
    if (folder / "samples.csv").is_file():
        _read_samples_csv(found)
    if not found.samples:
        _scan_folder(found)
    if prompt:
        for sample in found.samples:
            sample.prompt = sample.prompt or prompt
    if found.samples and all(sample.prompt is None for sample in found.samples):
        found.notes.append(
            "No prompts are known for these images (no samples.csv, no PNG parameters); prompt "
            "alignment is skipped: pass evaluate_prompt to score them against one prompt."
        )
    elif not found.samples and not found.notes:
        found.notes.append(
            f"No images found in {folder}; run 03_sample first, or point evaluate_samples_dir at a "
            "folder of PNG/JPEG images."
        )
    return found


def _read_samples_csv(found: SampleSet) -> None:
    table = found.folder / "samples.csv"
    try:
        with open(table, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        found.notes.append(f"Could not read {table} ({error}); evaluating the images in the folder instead.")
        return
    if rows and "file" not in rows[0]:
        found.notes.append(
            f"{table} has no 'file' column (columns: {', '.join(rows[0])}); evaluating the images in "
            "the folder instead, with prompts from their PNG parameters where present."
        )
        return
    missing = []
    for row in rows:
        path = found.folder / (row.get("file") or "")
        if not row.get("file") or not path.is_file():
            missing.append(row.get("file") or "(empty)")
            continue
        embedded = read_png_parameters(path)
        found.samples.append(
            Sample(
                path=path,
                file=row["file"],
                prompt=_text(row.get("prompt")) or embedded.get("prompt"),
                negative_prompt=_text(row.get("negative_prompt")) or embedded.get("negative_prompt"),
                seed=_int(row.get("seed")) if _int(row.get("seed")) is not None else embedded.get("seed"),
                lora_scale=_float(row.get("lora_scale"))
                if _float(row.get("lora_scale")) is not None
                else embedded.get("lora_scale"),
                checkpoint=_checkpoint_label(row.get("checkpoint")),
                lora_file=_text(row.get("lora_file")) or "",
            )
        )
    found.source = "samples.csv"
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        found.notes.append(
            f"{len(missing)} row(s) of {table} name images that are not there ({shown}); they were "
            "left out. Re-run 03_sample if files were deleted."
        )
    listed = {sample.path.resolve() for sample in found.samples}
    unlisted = [path for path in _image_files(found.folder) if path.resolve() not in listed]
    if unlisted and found.samples:
        found.notes.append(
            f"{len(unlisted)} image(s) in {found.folder} are not listed in samples.csv and were left out "
            f"(e.g. {unlisted[0].name})."
        )


def _scan_folder(found: SampleSet) -> None:
    files = _image_files(found.folder)
    if not files:
        nested = sorted(path for path in found.folder.rglob("*") if _is_sample_image(path))
        if nested:
            found.notes.append(
                f"No images directly in {found.folder}; evaluating the {len(nested)} image(s) in its subfolders."
            )
        files = nested
    with_parameters = 0
    for path in files:
        embedded = read_png_parameters(path)
        with_parameters += bool(embedded)
        found.samples.append(
            Sample(
                path=path,
                file=str(path.relative_to(found.folder)),
                prompt=embedded.get("prompt"),
                negative_prompt=embedded.get("negative_prompt"),
                seed=embedded.get("seed"),
                lora_scale=embedded.get("lora_scale"),
                checkpoint=_checkpoint_label(embedded.get("checkpoint")),
            )
        )
    found.source = "png parameters" if with_parameters else "folder"


def _image_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if _is_sample_image(path))


def _is_sample_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith((GRID_PREFIX, "."))


# --- AUTOMATIC1111 parameters ---------------------------------------------------------------------------------

_KEY_VALUE = re.compile(r'\s*([A-Za-z][\w \-/]*?):\s*("(?:\\.|[^"\\])*"|[^,]*)\s*(?:,|$)')


def parse_a1111_parameters(text: str) -> dict[str, Any]:
    """Read AUTOMATIC1111's `parameters` text: prompt, `Negative prompt: ...`, then `Steps: 30, Seed: 1, ...`.

    Returns `prompt`, `negative_prompt`, `seed`, `lora_scale` (from a `Lora scale` field or a `<lora:name:w>`
    tag), `checkpoint`, and every key-value pair of the last line under its own name.
    """
    lines = text.strip().splitlines()
    settings: dict[str, str] = {}
    if lines and re.match(r"^\s*Steps:\s*\d", lines[-1]):
        settings = {key.strip(): value.strip().strip('"') for key, value in _KEY_VALUE.findall(lines.pop())}
    prompt_lines, negative_lines, target = [], [], None
    for line in lines:
        if line.startswith("Negative prompt:"):
            target = negative_lines
            line = line[len("Negative prompt:") :].strip()
        (negative_lines if target is negative_lines else prompt_lines).append(line)
    result: dict[str, Any] = dict(settings)
    result["prompt"] = "\n".join(prompt_lines).strip() or None
    appended = re.search(rf"\s*{LORA_TAG.pattern}\s*\Z", result["prompt"] or "", re.IGNORECASE)
    if appended and settings.get("Lora") and settings.get("Version", "").startswith("sdxlab"):
        # sdxlab appends the LoRA's tag for AUTOMATIC1111; the prompt it drew with is the text before it
        result["prompt"] = result["prompt"][: appended.start()].strip() or None
    result["negative_prompt"] = "\n".join(negative_lines).strip() or None
    result["seed"] = _int(settings.get("Seed"))
    scale = _float(settings.get("Lora scale") or settings.get("LoRA scale") or settings.get("Lora weight"))
    if scale is None and result["prompt"]:
        tag = LORA_TAG.search(result["prompt"])
        scale = _float(tag.group(2)) if tag and tag.group(2) else (1.0 if tag else None)
    result["lora_scale"] = scale
    result["checkpoint"] = settings.get("Checkpoint") or settings.get("Lora checkpoint") or "final"
    return result


def read_png_parameters(path: Path) -> dict[str, Any]:
    """The parsed `parameters` chunk of a PNG, or {} (JPEGs, PNGs without one, unreadable files)."""
    if path.suffix.lower() != ".png":
        return {}
    try:
        with Image.open(path) as image:
            text = image.info.get("parameters")
    except (OSError, UnidentifiedImageError):
        return {}
    return parse_a1111_parameters(text) if isinstance(text, str) and text.strip() else {}


# --- images ---------------------------------------------------------------------------------------------------


def open_rgb(path: Path) -> tuple[Image.Image | None, str]:
    """An upright RGB copy of the image and a note ("" when fine, "grayscale" when converted, or why it failed).

    Phone photos (a user's own training folder) are turned upright from their EXIF orientation; HEIC opens
    through pillow-heif when it is installed.
    """
    _register_heif()
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            rgb = ImageOps.exif_transpose(image).convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as error:
        return None, f"{path} could not be read as an image ({type(error).__name__}); it was skipped."
    return rgb, "grayscale" if mode in ("L", "LA", "1", "I", "I;16", "F") else ""


@lru_cache(maxsize=1)
def _register_heif() -> bool:
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return False
    register_heif_opener()
    return True


# --- training photos ------------------------------------------------------------------------------------------


def training_photos(dataset_dir: str | Path | None) -> tuple[list[Path], list[str]]:
    """The person's training images: `metadata.jsonl`'s files, else `images/`, else the folder's images."""
    if dataset_dir is None:
        return [], ["No training set given; likeness is skipped (the other metrics still run)."]
    folder = Path(dataset_dir)
    if not folder.is_dir():
        return [], [
            f"Training set {folder} does not exist; likeness is skipped (the other metrics still run). "
            "Run 01_capture first, or point evaluate_dataset_dir at a folder of your photos."
        ]
    notes: list[str] = []
    if not (folder / "metadata.jsonl").is_file() and (folder / "dataset" / "metadata.jsonl").is_file():
        notes.append(f"{folder} looks like a run folder; using its dataset/ subfolder as the training set.")
        folder = folder / "dataset"
    metadata = folder / "metadata.jsonl"
    if metadata.is_file():
        paths, missing = [], 0
        for line in metadata.read_text(encoding="utf-8").splitlines():
            try:
                name = json.loads(line).get("file_name") if line.strip() else None
            except ValueError:
                name = None
            if not name:
                continue
            if (folder / name).is_file():
                paths.append(folder / name)
            else:
                missing += 1
        if missing:
            notes.append(
                f"{missing} image(s) listed in {metadata} are missing; re-run 01_capture if that is unexpected."
            )
        if paths:
            return paths, notes
    images_folder = folder / "images" if (folder / "images").is_dir() else folder
    paths = sorted(path for path in images_folder.iterdir() if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        notes.append(f"No images in the training set {folder}; likeness is skipped (the other metrics still run).")
    return paths, notes


def photo_sources(paths: Sequence[str | Path]) -> list[str]:
    """The source photo each training image was cropped from, as 01_capture's `metadata.jsonl` names it.

    With `capture_loose_crop=True` two crops (main and loose) come from one photo and share its `source`;
    likeness and copy detection count them as one photo. An image without a metadata row is its own source.
    """
    resolved = [Path(path).resolve() for path in paths]
    by_file: dict[Path, str] = {}
    for folder in {path.parent for path in resolved} | {path.parent.parent for path in resolved}:
        metadata = folder / "metadata.jsonl"
        if not metadata.is_file():
            continue
        for line in metadata.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line) if line.strip() else {}
            except ValueError:
                continue
            if isinstance(row, dict) and row.get("file_name") and row.get("source"):
                by_file[(folder / row["file_name"]).resolve()] = str(row["source"])
    return [by_file.get(path, str(path)) for path in resolved]


# --- small parsers --------------------------------------------------------------------------------------------


def _text(value: Any) -> str | None:
    return str(value).strip() or None if value is not None else None


def _int(value: Any) -> int | None:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _checkpoint_label(value: Any) -> str:
    """A checkpoint as written by 03_sample (a folder name or path like step_000400) or "final" for the final LoRA."""
    text = _text(value) or ""
    if text.lower() in {"", "none", "nan", "final"}:
        return "final"
    return Path(text.rstrip("/\\")).name or text


def checkpoint_step(label: str) -> int | None:
    """The training step in a checkpoint label (`step_000400` -> 400), None for the final LoRA or no number."""
    numbers = re.findall(r"\d+", label or "")
    return int(numbers[-1]) if numbers else None
