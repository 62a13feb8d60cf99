"""What makes a photo unfit for training, measured: sharpness, exposure, extra faces, duplicates, identity.

Per-photo measurements are taken on the face region resized to a fixed size, so a thresholds means the
same thing for a 12-megapixel selfie and a 1-megapixel crop. Set-level checks (near-duplicates, a
different person) compare photos with each other once all are measured.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from sdxlab.faces import Face

MEASURE_SIZE = 128  # face region side (px) on which sharpness and exposure are measured
# Variance of the Laplacian of the face at MEASURE_SIZE. The sample photos (upscaled 2-3x, so already soft)
# measure 120-280 and real phone selfies more; blurring them by 1% of the face's width brings them to 20-40.
MIN_SHARPNESS = 50.0
# Mean brightness of the face (0 black .. 1 white). A face below 0.2 is lost in shadow (backlit), above 0.88 washed out.
EXPOSURE_RANGE = (0.2, 0.88)
MAX_CLIPPED_FRACTION = 0.3  # share of face pixels at pure black or pure white
# A second confident face at least this fraction of the main face's width makes it a group photo.
PROMINENT_FACE_RATIO = 0.6
# Perceptual hashes of 16x16 DCT coefficients (256 bits). A copy re-saved, resized, recoloured or turned gray
# differs in 0-8 bits, a copy cropped by a few percent in ~30; different photos of the sample set, even with the
# same framing, differ in 64 or more (the common 64-bit hash cannot tell those apart: 6 bits for two samples).
HASH_SIZE = 16
HASH_BITS = HASH_SIZE * HASH_SIZE
DUPLICATE_MAX_DISTANCE = 40
# Identity: distance from the set's robust centre above this means someone else. dlib's same-person
# threshold between two photos is 0.6; a centre sits between photos, so same-person distances to it are smaller.
IDENTITY_MAX_DISTANCE = 0.55
MIN_PHOTOS_FOR_IDENTITY = 3  # with fewer photos there is no majority to compare against


def face_region(image: Image.Image, face: Face, size: int = MEASURE_SIZE) -> np.ndarray:
    """The face box as a size x size grayscale float array (0..255)."""
    gray = image.convert("L").crop(face.box) if image.mode != "L" else image.crop(face.box)
    return np.asarray(gray.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0), dtype=np.float64)


def sharpness(region: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian: low when edges are soft (blur, focus missed, motion)."""
    laplacian = region[:-2, 1:-1] + region[2:, 1:-1] + region[1:-1, :-2] + region[1:-1, 2:] - 4.0 * region[1:-1, 1:-1]
    return float(laplacian.var())


def exposure(region: np.ndarray) -> tuple[float, float]:
    """(mean brightness 0..1, share of clipped pixels) of a face region."""
    clipped = float(((region <= 3) | (region >= 252)).mean())
    return float(region.mean() / 255.0), clipped


def prominent_faces(
    found: Sequence[Face], main: Face, min_score: float, ratio: float = PROMINENT_FACE_RATIO
) -> list[Face]:
    """Other confident faces big enough to compete with the main one (a friend, not a poster far behind)."""
    return [face for face in found if face is not main and face.score >= min_score and face.width >= ratio * main.width]


def robust_identity_centre(
    embeddings: np.ndarray, max_distance: float = IDENTITY_MAX_DISTANCE, rounds: int = 5
) -> np.ndarray:
    """The centre of the majority's identity: start at the coordinate-wise median, then average the photos
    close to it, a few times. A friend's photo or two cannot drag it the way they would drag a plain mean."""
    centre = np.median(embeddings, axis=0)
    for _ in range(rounds):
        distances = np.linalg.norm(embeddings - centre, axis=1)
        inliers = embeddings[distances <= max_distance]
        if len(inliers) < max(2, len(embeddings) // 2):
            break  # no clear majority near the median: keep the median
        centre = inliers.mean(axis=0)
    return centre


def identity_distances(embeddings: np.ndarray, max_distance: float = IDENTITY_MAX_DISTANCE) -> np.ndarray:
    """Each photo's distance from the set's robust identity centre."""
    centre = robust_identity_centre(embeddings, max_distance)
    return np.linalg.norm(embeddings - centre, axis=1)


def perceptual_hash(image: Image.Image):
    """A DCT hash (HASH_BITS bits) of the whole picture: the same shot re-saved, resized or recoloured hashes alike."""
    import imagehash

    return imagehash.phash(image, hash_size=HASH_SIZE)


def hash_distance(a, b) -> int:
    return int(a - b)
