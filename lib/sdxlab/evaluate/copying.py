"""Copying: did the model memorise a selfie instead of learning a face?

In CLIP image-embedding space (the one diversity uses), a generated image is flagged when its nearest
training photo is closer to it than any two training photos are to each other: the person's own selfies
set the bar for "the same picture". Training photos are also compared mirrored, because training usually
flips them. Crops of one source photo (01_capture's main and loose crop) are one photo: the distance between
them does not set the bar. With fewer than two training photos there is no bar and nothing is flagged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sdxlab.evaluate.diversity import pairwise_distances


@dataclass
class CopyCheck:
    threshold: float  # the smallest distance between crops of two different source photos (NaN: fewer than two)
    distances: np.ndarray  # per generated image: distance to its nearest training photo (mirrored or not)
    nearest: list[str]  # that photo's file name
    flags: np.ndarray  # per generated image: distance < threshold

    @property
    def copies(self) -> int:
        return int(self.flags.sum())


def check_copies(
    generated: np.ndarray,
    training: np.ndarray,
    training_mirrored: np.ndarray,
    training_files: Sequence[str],
    training_sources: Sequence[str] | None = None,
) -> CopyCheck:
    """Nearest-training-photo distances of generated images and the flags against the training set's own spread.

    `training_sources` (one per training image) names the photo each was cropped from; images of one source
    are never compared with each other for the threshold. Without it every image is its own photo.
    """
    generated = np.asarray(generated, dtype=np.float64).reshape(len(generated), -1)
    training = np.asarray(training, dtype=np.float64)
    mirrored = np.asarray(training_mirrored, dtype=np.float64)
    count = len(training)
    if count == 0 or len(generated) == 0:
        return CopyCheck(
            math.nan, np.full(len(generated), np.nan), [""] * len(generated), np.zeros(len(generated), bool)
        )
    both = np.vstack([training, mirrored])
    between = pairwise_distances(np.vstack([both, generated]))
    training_block = between[:count, : 2 * count].copy()
    sources = list(training_sources) if training_sources is not None else list(range(count))
    same_photo = np.array([[a == b for b in sources] for a in sources])
    # a photo against itself, its own mirror image or another crop of the same photo does not count
    training_block[np.hstack([same_photo, same_photo])] = np.inf
    threshold = float(training_block.min()) if len(set(sources)) >= 2 else math.nan
    to_training = between[2 * count :, : 2 * count]
    nearest = to_training.argmin(axis=1)
    distances = to_training[np.arange(len(generated)), nearest]
    flags = distances < threshold if not math.isnan(threshold) else np.zeros(len(generated), bool)
    return CopyCheck(threshold, distances, [training_files[index % count] for index in nearest], flags)
