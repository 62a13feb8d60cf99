"""What capture decides: its settings, the verdict on every input file, and the training images to write.

`CaptureResult` is what `analyse_photos` returns and `write_dataset` writes; in a notebook it is the object
the person looks at (`report()`, `messages()`, `captions()`) and edits (`set_caption`) in between.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from sdxlab.capture.crops import Crop
from sdxlab.capture.settings import DEFAULT_CAPTION, CaptionHook, CaptureSettings
from sdxlab.capture.sources import PhotoSource
from sdxlab.faces import Face

__all__ = ["DEFAULT_CAPTION", "CaptionHook", "CaptureResult", "CaptureSettings", "DatasetEntry", "PhotoResult"]

# Checks a person may overrule with keep_anyway; without a readable photo and a face there is nothing to crop.
OVERRIDABLE = {"group_photo", "face_too_small", "blurry", "exposure", "duplicate", "different_person"}


@dataclass
class Rejection:
    check: str  # unsafe_name, unreadable, too_small, no_face, group_photo, face_too_small, blurry, exposure, duplicate, different_person
    sentence: str  # one sentence naming the file and what to do


@dataclass
class PhotoResult:
    """One input file: what was measured, why it was rejected (if it was) and its crops."""

    source: PhotoSource
    rejections: list[Rejection] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    original_size: tuple[int, int] | None = None  # (width, height), upright, full resolution
    file_format: str = ""
    scale: float = 1.0  # decoded pixels per original pixel
    face: Face | None = None  # in decoded pixels
    face_count: int = 0  # confident faces
    sharpness: float | None = None
    brightness: float | None = None
    clipped: float | None = None
    identity_distance: float | None = None
    duplicate_of: str | None = None
    embedding: np.ndarray | None = None
    phash: object | None = None
    thumbnail: Image.Image | None = None
    crops: list[Crop] = field(default_factory=list)
    keep_anyway: bool = False

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def kept(self) -> bool:
        if not self.crops:
            return False
        return not self.rejections or (self.keep_anyway and all(r.check in OVERRIDABLE for r in self.rejections))

    @property
    def status(self) -> str:
        if self.kept:
            return "kept anyway" if self.rejections else "kept"
        return "rejected"

    @property
    def reason(self) -> str:
        return " ".join(rejection.sentence for rejection in self.rejections)

    @property
    def face_px(self) -> int | None:
        """Face width in the original photo's pixels."""
        return None if self.face is None else round(self.face.width / self.scale)

    def reject(self, check: str, text: str) -> None:
        self.rejections.append(Rejection(check, f"{self.name} {text}."))


@dataclass
class DatasetEntry:
    """One training image to be written: a crop of a kept photo and its caption (editable before writing)."""

    file_name: str  # "images/0001.png"
    photo: PhotoResult
    crop: Crop
    variant: str  # "main" or "loose"
    caption: str

    @property
    def mask_file(self) -> str:
        return self.file_name.replace("images/", "masks/", 1)


@dataclass
class CaptureResult:
    photos_dir: Path
    settings: CaptureSettings
    photos: list[PhotoResult]
    entries: list[DatasetEntry]

    @property
    def kept(self) -> list[PhotoResult]:
        return [photo for photo in self.photos if photo.kept]

    @property
    def rejected(self) -> list[PhotoResult]:
        return [photo for photo in self.photos if not photo.kept]

    def messages(self) -> list[str]:
        """One line per file that was rejected or kept despite a rejection."""
        lines = []
        for photo in self.photos:
            if photo.rejections:
                prefix = "kept anyway: " if photo.kept else ""
                lines.append(prefix + photo.reason)
        return lines

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for photo in self.rejected:
            check = photo.rejections[0].check if photo.rejections else "unknown"
            counts[check] = counts.get(check, 0) + 1
        why = ", ".join(f"{count} {check.replace('_', ' ')}" for check, count in sorted(counts.items()))
        return f"{len(self.kept)} of {len(self.photos)} files usable -> {len(self.entries)} training images" + (
            f"; rejected: {why}" if why else ""
        )

    def report(self):
        """The report table: one row per input file (pandas DataFrame), as written to report.csv."""
        import pandas as pd

        outputs: dict[str, list[str]] = {}
        for entry in self.entries:
            outputs.setdefault(entry.photo.name, []).append(entry.file_name)
        rows = []
        for photo in self.photos:
            main_crop = photo.crops[0] if photo.crops else None
            rows.append(
                {
                    "file": photo.name,
                    "status": photo.status,
                    "check": ",".join(rejection.check for rejection in photo.rejections),
                    "reason": photo.reason,
                    "notes": "; ".join(photo.notes),
                    "format": photo.file_format,
                    "width": photo.original_size[0] if photo.original_size else None,
                    "height": photo.original_size[1] if photo.original_size else None,
                    "faces": photo.face_count,
                    "face_px": photo.face_px,
                    "face_score": _round(photo.face.score if photo.face else None, 2),
                    "sharpness": _round(photo.sharpness, 1),
                    "brightness": _round(photo.brightness, 3),
                    "clipped": _round(photo.clipped, 3),
                    "identity_distance": _round(photo.identity_distance, 3),
                    "duplicate_of": photo.duplicate_of,
                    "upscale": _round(main_crop.upscale if main_crop else None, 2),
                    "outputs": " ".join(outputs.get(photo.name, [])),
                }
            )
        return pd.DataFrame(rows)

    def captions(self):
        """The training images and their captions (pandas DataFrame), as they will be written."""
        import pandas as pd

        rows = [
            {"image": e.file_name, "source": e.photo.name, "variant": e.variant, "caption": e.caption}
            for e in self.entries
        ]
        return pd.DataFrame(rows, columns=["image", "source", "variant", "caption"])

    def set_caption(self, name: str, caption: str) -> None:
        """Change a caption before writing: `name` is an output ("0001.png", "images/0001.png") or a source file."""
        matched = [
            e for e in self.entries if name in (e.file_name, Path(e.file_name).name) or e.photo.source.matches({name})
        ]
        if not matched:
            raise KeyError(
                f"No training image or kept photo is called {name!r}; names look like '0001.png' or a photo's file name."
            )
        for entry in matched:
            entry.caption = caption


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)
