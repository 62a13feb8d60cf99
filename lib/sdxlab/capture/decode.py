"""Decoding the photos people actually have into upright 8-bit RGB.

JPEG (EXIF orientation honoured, so phone portraits come out upright), PNG (8/16-bit, palette, alpha), WebP,
HEIC/HEIF (the iPhone default, through pillow-heif), GIF, TIFF, grayscale and CMYK. Very large JPEGs are
decoded at a reduced scale (the JPEG decoder can do that for free), so a 50-megapixel photo does not
exhaust memory. Anything that cannot be used raises `UnreadablePhoto` with a reason a person can act on.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from sdxlab.capture.sources import PhotoSource, TooLarge

# Above this many pixels a JPEG is decoded at 1/2, 1/4 or 1/8 scale (a 50 MP photo becomes 12.5 MP); the
# face crop of a selfie still has far more pixels than the training resolution needs.
MAX_DECODE_PIXELS = 26_000_000
# Formats without reduced decoding are refused above this (a 16-bit 200 MP PNG would need gigabytes).
MAX_PIXELS = 120_000_000
ANIMATED_FORMATS = {"GIF", "PNG", "WEBP", "MPO_ANIMATED"}
TRANSPARENT_FILL = (255, 255, 255)  # what shows through transparent pixels (cut-outs, stickers)


class UnreadablePhoto(Exception):
    """A file that cannot be used as a photo; str() is the reason, to follow the file's name."""


@dataclass
class Photo:
    """A decoded photo: upright RGB pixels and what was done to get them."""

    image: Image.Image  # upright, RGB, 8 bit
    original_size: tuple[int, int]  # (width, height) of the upright photo at full resolution
    file_format: str
    notes: list[str] = field(default_factory=list)

    @property
    def scale(self) -> float:
        """Decoded pixels per original pixel (below 1 when a huge JPEG was decoded reduced)."""
        return self.image.width / self.original_size[0]


@cache
def _register_heif() -> bool:
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


HEIF_BRANDS = {b"ftypheic", b"ftypheix", b"ftyphevc", b"ftypheim", b"ftypheis", b"ftypmif1", b"ftypmsf1"}


def _open(data: bytes, suffix: str) -> Image.Image:
    heif_available = _register_heif()  # once per process; afterwards Image.open reads HEIC like any format
    try:
        return Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        if not heif_available and (suffix in {".heic", ".heif", ".hif"} or data[4:12] in HEIF_BRANDS):
            raise UnreadablePhoto(
                "is a HEIC/HEIF photo but pillow-heif is not installed; pip install pillow-heif, or export it as JPEG"
            ) from None
        named = f" despite its {suffix} name" if suffix else ""
        raise UnreadablePhoto(
            f"is not an image that can be read{named} (JPEG, PNG, WebP, HEIC, GIF, TIFF); remove it or export it as JPEG"
        ) from None


def _reduce_large_jpeg(image: Image.Image, notes: list[str]) -> None:
    width, height = image.size
    if image.format != "JPEG" or width * height <= MAX_DECODE_PIXELS:
        return
    for factor in (2, 4, 8):  # the scales the JPEG decoder offers
        if width * height / factor**2 <= MAX_DECODE_PIXELS:
            break
    image.draft(image.mode if image.mode in {"RGB", "L"} else None, (width // factor, height // factor))
    notes.append(f"{width * height / 1e6:.0f} MP photo decoded at 1/{factor} scale")


def _to_rgb(image: Image.Image, notes: list[str]) -> Image.Image:
    """8-bit RGB from any mode: 16/32-bit scaled (not clipped), alpha composited, CMYK and palettes converted."""
    mode = image.mode
    if mode.startswith("I;16") or mode in {"I", "F"}:
        pixels = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode != "F" or pixels.max() > 1.0 else 1.0
        if mode == "I" and pixels.max() <= 255:
            top = 255.0
        notes.append(f"{'16-bit' if mode != 'F' else 'floating-point'} pixels scaled to 8 bit")
        gray = Image.fromarray(np.clip(pixels / top * 255.0 + 0.5, 0, 255).astype(np.uint8))
        return gray.convert("RGB")
    has_alpha = mode in {"RGBA", "LA", "PA", "RGBa", "La"} or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        if rgba.getextrema()[3][0] < 255:
            notes.append("transparent background filled with white")
        background = Image.new("RGBA", rgba.size, (*TRANSPARENT_FILL, 255))
        background.alpha_composite(rgba)
        return background.convert("RGB")
    if mode == "CMYK":
        notes.append("CMYK converted to RGB")
    return image.convert("RGB") if mode != "RGB" else image


def decode_photo(data: bytes, suffix: str = "") -> Photo:
    """Decode a photo's bytes into upright 8-bit RGB, or raise UnreadablePhoto with the reason."""
    if not data:
        raise UnreadablePhoto("is empty (0 bytes); copy the photo again from your phone")
    notes: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = _open(data, suffix)
            file_format = image.format or suffix.lstrip(".").upper()
            frames = getattr(image, "n_frames", 1)
            if frames > 1 and file_format in ANIMATED_FORMATS:
                raise UnreadablePhoto(
                    f"is an animation ({frames} frames), not a photo; save the frame you want as a JPEG or PNG"
                )
            width, height = image.size
            if width * height > MAX_PIXELS and file_format != "JPEG":
                raise UnreadablePhoto(
                    f"is {width}x{height} ({width * height / 1e6:.0f} MP), too large to decode safely; export a smaller copy"
                )
            _reduce_large_jpeg(image, notes)
            image.load()
        except UnreadablePhoto:
            raise
        except Image.DecompressionBombError:
            raise UnreadablePhoto(
                "declares an absurd pixel count (a decompression bomb?); export a normal-size copy"
            ) from None
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            raise UnreadablePhoto(
                f"could not be decoded ({_first_line(error)}): the file looks damaged or truncated; copy or export it again"
            ) from None
    reduction = width / image.size[0]  # 1, or 2/4/8 when a huge JPEG was decoded reduced
    upright = _upright(image, notes)
    if file_format in {"HEIF", "HEIC"}:
        notes.append("HEIC decoded")
    rgb = _to_rgb(upright, notes)
    original = (round(rgb.width * reduction), round(rgb.height * reduction))
    return Photo(image=rgb, original_size=original, file_format=file_format, notes=notes)


def _upright(image: Image.Image, notes: list[str]) -> Image.Image:
    try:
        orientation = image.getexif().get(0x0112, 1)
    except Exception:  # broken EXIF blocks are common; the pixels are still fine
        notes.append("EXIF unreadable; used the pixels as stored")
        return image
    if orientation in (None, 1):
        return image
    try:
        turned = ImageOps.exif_transpose(image)
    except Exception:
        notes.append(f"EXIF orientation {orientation} could not be applied; used the pixels as stored")
        return image
    notes.append(f"turned upright (EXIF orientation {orientation})")
    return turned


def load_photo(source: PhotoSource | str | os.PathLike) -> Photo:
    """Read (never write) one input and decode it; raises UnreadablePhoto with the reason."""
    if not isinstance(source, PhotoSource):
        path = Path(source)
        source = PhotoSource(path.name, path)
    try:
        data = source.read_bytes()
    except TooLarge as error:
        raise UnreadablePhoto(str(error)) from None
    except OSError as error:
        raise UnreadablePhoto(f"could not be read ({_first_line(error)})") from None
    return decode_photo(data, source.suffix)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
