"""Diversity: how different the images made for one prompt are from each other.

Two views, both as "mean distance from an image to the other images of its group" (a group is one prompt at
one LoRA scale and checkpoint, so a scale sweep does not count as variety). Averaging that per-image number
over a group gives the group's mean pairwise distance.

- CLIP: cosine distance (1 - cosine) between CLIP image embeddings: composition, setting, style.
- Pose: Euclidean distance between head-pose and expression vectors from the face landmarks
  (`likeness.POSE_FEATURES`), for images where a face was found: a model that always renders the same
  frontal, closed-mouth face has low pose diversity even when the backgrounds vary.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence

import numpy as np


def mean_distance_within_groups(vectors: np.ndarray, groups: Sequence[Hashable], metric: str = "cosine") -> np.ndarray:
    """Per row: mean distance to the other rows of its group; NaN for a row alone in its group or with NaNs."""
    vectors = np.asarray(vectors, dtype=np.float64)
    result = np.full(len(vectors), np.nan)
    members: dict[Hashable, list[int]] = defaultdict(list)
    for index, group in enumerate(groups):
        if len(vectors) and not np.isnan(vectors[index]).any():
            members[group].append(index)
    for indices in members.values():
        if len(indices) < 2:
            continue
        block = vectors[indices]
        distances = pairwise_distances(block, metric)
        result[indices] = distances.sum(axis=1) / (len(indices) - 1)
    return result


def pairwise_distances(vectors: np.ndarray, metric: str = "cosine") -> np.ndarray:
    """Square matrix of distances between rows: "cosine" (1 - cosine similarity) or "euclidean"."""
    vectors = np.asarray(vectors, dtype=np.float64)
    if metric == "cosine":
        unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        distances = 1.0 - unit @ unit.T
    elif metric == "euclidean":
        distances = np.linalg.norm(vectors[:, None, :] - vectors[None, :, :], axis=-1)
    else:
        raise ValueError(f"Unknown metric {metric!r}; use 'cosine' or 'euclidean'.")
    np.fill_diagonal(distances, 0.0)
    return np.clip(distances, 0.0, None)
