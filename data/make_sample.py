"""Make data/sample/: sixteen "phone photos" of one person from scikit-image's public-domain pictures.

Every photo derives from `skimage.data.astronaut()` (NASA's portrait of astronaut Eileen Collins, public
domain), varied the way a day of selfies varies: crops and zoom, small tilts, a mirror image, white balance,
light and colour, backgrounds taken from other public-domain / CC0 pictures bundled with scikit-image, and the
file formats phones and people produce (JPEG with EXIF orientation, PNG with alpha, WebP, HEIC, grayscale).

The script checks its own output: every photo must show exactly one confident face of the same person and
no two photos may be near-duplicates by the capture stage's own perceptual-hash test.

Run from the project folder (needs the dev extra, for scikit-image):

    .venv/bin/python data/make_sample.py
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps
from skimage import data

OUT = Path(__file__).resolve().parent / "sample"
JPEG_QUALITY = 85
RNG = np.random.default_rng(20261125)


def astronaut() -> Image.Image:
    return Image.fromarray(data.astronaut())


def gray_background(name: str) -> Image.Image:
    return Image.fromarray(getattr(data, name)()).convert("RGB")


def person_alpha(size: int = 512, feather: int = 22) -> Image.Image:
    """A soft mask around her head and shoulders in the 512x512 portrait, to place her on other backgrounds."""
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    draw.ellipse((120, 20, 330, 250), fill=255)  # head and hair
    draw.polygon([(150, 215), (300, 215), (470, 360), (500, 512), (0, 512), (20, 360)], fill=255)  # neck, suit
    return mask.filter(ImageFilter.GaussianBlur(feather))


def on_background(
    background: Image.Image, canvas: tuple[int, int], person_height: int, anchor: tuple[float, float]
) -> Image.Image:
    """Her head and shoulders over a background filling `canvas`, her portrait scaled to `person_height`.

    `anchor` is where the portrait's top-left corner goes, as fractions of the free space.
    """
    canvas_image = ImageOps.fit(background, canvas, Image.Resampling.LANCZOS)
    person = astronaut().resize((person_height, person_height), Image.Resampling.LANCZOS)
    alpha = person_alpha().resize(person.size, Image.Resampling.LANCZOS)
    x = round((canvas[0] - person_height) * anchor[0])
    y = canvas[1] - person_height if anchor[1] >= 1 else round((canvas[1] - person_height) * anchor[1])
    canvas_image.paste(person, (x, y), alpha)
    return canvas_image


def scaled(image: Image.Image, longest: int) -> Image.Image:
    factor = longest / max(image.size)
    return image.resize((round(image.width * factor), round(image.height * factor)), Image.Resampling.LANCZOS)


def tilted(image: Image.Image, degrees: float, fill: Image.Image) -> Image.Image:
    """Rotate about the centre; the corners that open up show `fill` (another picture), not black."""
    rgba = image.convert("RGBA").rotate(degrees, Image.Resampling.BICUBIC, expand=False)
    base = ImageOps.fit(fill, image.size, Image.Resampling.LANCZOS).convert("RGBA")
    base.alpha_composite(rgba)
    return base.convert("RGB")


def white_balance(image: Image.Image, red: float, green: float, blue: float) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float32) * np.array([red, green, blue], dtype=np.float32)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def gamma(image: Image.Image, value: float) -> Image.Image:
    return image.point(lambda level: round(255 * (level / 255) ** value))


def sensor_noise(image: Image.Image, sigma: float) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float32)
    noisy = pixels + RNG.normal(0, sigma, pixels.shape).astype(np.float32)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def crop(box: tuple[int, int, int, int]) -> Image.Image:
    return astronaut().crop(box)


# --- the photos: name -> (how to make the upright picture, how to save it) -----------------------------------


def save_jpeg(image: Image.Image, path: Path, orientation: int | None = None) -> None:
    """JPEG as a phone writes it; with `orientation` the pixels are stored turned and the EXIF tag says how to turn them back."""
    exif = Image.Exif()
    if orientation:
        # EXIF orientation 6: the viewer turns the stored pixels 90 degrees clockwise, so store them turned
        # counter-clockwise (and similarly for 8 and 3).
        stored = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270, 3: Image.Transpose.ROTATE_180}[
            orientation
        ]
        image = image.transpose(stored)
        exif[0x0112] = orientation
    exif[0x010F] = "sdxlab sample"  # Make
    exif[0x0110] = "data/make_sample.py"  # Model
    image.save(path, "JPEG", quality=JPEG_QUALITY, optimize=True, exif=exif.tobytes())


def save_png(image: Image.Image, path: Path) -> None:
    image.save(path, "PNG", optimize=True)


def save_webp(image: Image.Image, path: Path) -> None:
    image.save(path, "WEBP", quality=80, method=6)


def save_heic(image: Image.Image, path: Path) -> None:
    import pillow_heif

    pillow_heif.from_pillow(image).save(path, quality=70)


def cutout_png() -> Image.Image:
    """A "portrait mode" export: her head and shoulders on a transparent background."""
    image = crop((20, 0, 500, 480)).convert("RGBA")
    image.putalpha(person_alpha().crop((20, 0, 500, 480)))
    return scaled(image, 560)


PHOTOS: dict[str, tuple[Callable[[], Image.Image], Callable[[Image.Image, Path], None]]] = {
    "01_portrait.jpg": (lambda: scaled(crop((40, 0, 440, 512)), 1200), save_jpeg),
    "02_mirror_close.jpg": (
        lambda: scaled(crop((110, 10, 350, 330)).transpose(Image.Transpose.FLIP_LEFT_RIGHT), 1100),
        save_jpeg,
    ),
    "03_tilt_left_hubble.jpg": (
        lambda: scaled(tilted(crop((30, 0, 450, 512)), 8, gray_background("hubble_deep_field")), 1100),
        save_jpeg,
    ),
    "04_tilt_right_coffee.jpg": (
        lambda: scaled(tilted(crop((70, 0, 470, 480)), -7, gray_background("coffee")), 1000),
        save_jpeg,
    ),
    "05_rocket_launch.jpg": (
        lambda: white_balance(on_background(gray_background("rocket"), (960, 1280), 760, (0.15, 1.0)), 1.08, 1.0, 0.9),
        save_jpeg,
    ),
    "06_night_sky.jpg": (
        lambda: gamma(on_background(gray_background("hubble_deep_field"), (1280, 960), 720, (0.8, 1.0)), 1.25),
        save_jpeg,
    ),
    "07_cool_daylight.jpg": (
        lambda: white_balance(scaled(crop((140, 20, 320, 250)), 900), 0.88, 0.98, 1.15),
        save_jpeg,
    ),
    "08_evening_warm.jpg": (
        lambda: sensor_noise(white_balance(gamma(scaled(crop((0, 0, 380, 512)), 1024), 1.35), 1.12, 1.0, 0.82), 4.0),
        save_jpeg,
    ),
    "09_black_and_white.jpg": (lambda: scaled(crop((90, 0, 410, 430)), 1000).convert("L"), save_jpeg),
    "10_phone_portrait_exif6.jpg": (
        lambda: scaled(crop((60, 30, 420, 510)), 1280),
        lambda image, path: save_jpeg(image, path, orientation=6),
    ),
    "11_phone_sideways_exif8.jpg": (
        lambda: scaled(
            tilted(crop((100, 0, 500, 533)).transpose(Image.Transpose.FLIP_LEFT_RIGHT), 4, gray_background("chelsea")),
            1200,
        ),
        lambda image, path: save_jpeg(image, path, orientation=8),
    ),
    "12_upside_down_exif3.jpg": (
        lambda: ImageEnhance.Color(scaled(crop((20, 40, 500, 512)), 1000)).enhance(1.4),
        lambda image, path: save_jpeg(image, path, orientation=3),
    ),
    "13_cutout.png": (cutout_png, save_png),
    "14_brick_wall.webp": (
        lambda: on_background(gray_background("brick"), (1000, 1000), 640, (0.5, 1.0)),
        save_webp,
    ),
    "15_iphone.heic": (
        lambda: ImageEnhance.Contrast(on_background(gray_background("grass"), (960, 1280), 820, (0.3, 1.0))).enhance(
            1.15
        ),
        save_heic,
    ),
    "16_high_contrast.jpg": (
        lambda: ImageEnhance.Contrast(
            scaled(tilted(crop((0, 60, 450, 512)), -3, gray_background("gravel")), 1000)
        ).enhance(1.3),
        save_jpeg,
    ),
}


def check(folder: Path) -> None:
    """Every photo: one confident face, the same person, and no near-duplicates (the capture stage's rules)."""
    import itertools

    from sdxlab import capture, faces

    embeddings, hashes = {}, {}
    for path in sorted(folder.iterdir()):
        image = capture.load_photo(path).image
        found = [face for face in faces.detect_faces(image) if face.score >= faces.MIN_FACE_SCORE]
        assert len(found) == 1, f"{path.name}: {len(found)} confident faces"
        embeddings[path.name] = faces.face_embedding(image, found[0])
        hashes[path.name] = capture.perceptual_hash(image)
        print(
            f"{path.name:32s} {image.size[0]:5d}x{image.size[1]:<5d} face {found[0].width:4d} px  "
            f"score {found[0].score:.2f}  {path.stat().st_size / 1024:6.0f} KB"
        )
    centre = np.median(np.stack(list(embeddings.values())), axis=0)
    for name, embedding in embeddings.items():
        assert faces.identity_distance(embedding, centre) < faces.SAME_PERSON_DISTANCE, name
    closest = min((a - b, na, nb) for (na, a), (nb, b) in itertools.combinations(hashes.items(), 2))
    print(f"closest pair by perceptual hash: {closest[1]} / {closest[2]}, distance {closest[0]}")
    assert closest[0] > capture.DUPLICATE_MAX_DISTANCE, "two sample photos are near-duplicates"
    total = sum(path.stat().st_size for path in folder.iterdir())
    print(f"{len(embeddings)} photos, {total / 1e6:.2f} MB")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.iterdir():
        old.unlink()
    for name, (make, save) in PHOTOS.items():
        save(make(), OUT / name)
    check(OUT)


if __name__ == "__main__":
    sys.exit(main())
