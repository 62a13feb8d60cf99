"""The training set: read and check the capture stage's dataset folder, and its hash.

Everything here reads files only (image headers, the manifest), so every problem with the dataset is
reported in one sentence before a model is loaded. The format is the one in docs/ARCHITECTURE.md
(`dataset/metadata.jsonl`, diffusers imagefolder convention).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sdxlab.train.config import TrainError

MANIFEST = "metadata.jsonl"


@dataclass(frozen=True)
class Example:
    """One training image with what the trainer needs from its manifest row."""

    image: Path
    caption: str
    mask: Path | None
    crop_box: tuple[float, float, float, float] | None  # left, top, right, bottom in the upright source
    original_size: tuple[int, int] | None  # height, width of the upright source


def read_dataset(dataset_dir: Path, resolution: int, need_masks: bool = False) -> list[Example]:
    """The dataset's examples, after checking every file the manifest names; TrainError on the first problem."""
    dataset_dir = Path(dataset_dir)
    manifest = dataset_dir / MANIFEST
    if not dataset_dir.is_dir():
        raise TrainError(
            f"Dataset folder {dataset_dir} does not exist; run 01_capture for this run first "
            "(or point the run at the run folder that holds dataset/)."
        )
    if not manifest.is_file():
        raise TrainError(f"Dataset folder {dataset_dir} has no {MANIFEST}; run 01_capture for this run first.")
    rows = _read_manifest(manifest)
    if not rows:
        raise TrainError(f"{manifest} lists no images; run 01_capture again with more usable photos.")
    examples = [_example(dataset_dir, manifest, number, row, need_masks) for number, row in rows]
    for example in examples:
        _check_size(example.image, resolution, "image")
        if example.mask is not None:
            _check_size(example.mask, resolution, "mask")
    return examples


def _read_manifest(manifest: Path) -> list[tuple[int, dict]]:
    rows = []
    for number, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise TrainError(
                f"{manifest} line {number} is not valid JSON ({error.msg}); "
                "fix or delete that line, or run 01_capture again."
            ) from None
        if not isinstance(row, dict) or "file_name" not in row:
            raise TrainError(f"{manifest} line {number} has no file_name; every row needs file_name and text.")
        rows.append((number, row))
    return rows


def _example(dataset_dir: Path, manifest: Path, number: int, row: dict, need_masks: bool) -> Example:
    image = dataset_dir / row["file_name"]
    if not image.is_file():
        raise TrainError(
            f"{manifest} line {number} names {row['file_name']}, which does not exist in {dataset_dir}; "
            "run 01_capture again or remove that line."
        )
    mask = dataset_dir / row["mask_file"] if row.get("mask_file") else None
    if mask is not None and not mask.is_file():
        raise TrainError(
            f"{manifest} line {number} names mask {row['mask_file']}, which does not exist; "
            "run 01_capture again, or set train_masked_loss=False."
        )
    if need_masks and mask is None:
        raise TrainError(
            f"{manifest} line {number} ({row['file_name']}) has no mask_file, which the face-masked "
            "loss needs; run 01_capture again, or set train_masked_loss=False."
        )
    crop_box = tuple(float(v) for v in row["crop_box"]) if row.get("crop_box") else None
    original_size = tuple(int(v) for v in row["original_size"]) if row.get("original_size") else None
    return Example(
        image=image, caption=str(row.get("text") or ""), mask=mask, crop_box=crop_box, original_size=original_size
    )


def _check_size(path: Path, resolution: int, what: str) -> None:
    try:
        with Image.open(path) as image:
            size = image.size  # reads the header only
    except Exception as error:
        raise TrainError(f"Cannot read {what} {path} ({type(error).__name__}); run 01_capture again.") from None
    if size != (resolution, resolution):
        raise TrainError(
            f"{path} is {size[0]}×{size[1]} but the training resolution is {resolution}; run 01_capture "
            f"with resolution={resolution}, or train with resolution={size[0]}."
        )


def dataset_hash(dataset_dir: Path, examples: list[Example]) -> str:
    """sha256 over the manifest and every image and mask it names: any change to the training data changes it."""
    digest = hashlib.sha256((Path(dataset_dir) / MANIFEST).read_bytes())
    for example in examples:
        for path in (example.image, example.mask):
            if path is not None:
                digest.update(path.read_bytes())
    return digest.hexdigest()


# --- pixels ------------------------------------------------------------------------------------------


def load_pixels(path: Path) -> torch.Tensor:
    """An RGB image as a [3, H, W] float tensor in [-1, 1], the VAE's input range."""
    with Image.open(path) as image:
        array = np.asarray(image.convert("RGB"), dtype=np.float32)
    return torch.from_numpy(array).permute(2, 0, 1) / 127.5 - 1.0


def load_mask(path: Path | None, resolution: int) -> torch.Tensor:
    """A loss-weight mask as a [1, H, W] tensor in [0, 1] (all ones when there is no mask)."""
    if path is None:
        return torch.ones(1, resolution, resolution)
    with Image.open(path) as image:
        array = np.asarray(image.convert("L"), dtype=np.float32)
    return torch.from_numpy(array)[None] / 255.0
