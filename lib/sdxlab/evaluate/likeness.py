"""Likeness: how close a generated face is to the person's own photos, and what that number means.

Identity is dlib's 128-d ResNet descriptor (`sdxlab.faces`). A generated face is compared with the centroid
of the training photos' descriptors and with the nearest single training photo (cosine similarity; dlib's
Euclidean distance is kept too, since "below 0.6 = same person" is dlib's published rule).

A raw cosine means little to a reader (two strangers are often above 0.8), so it is calibrated:

- ceiling: each training photo against the centroid of the *other* training photos (leave-one-out): how
  similar the person's own selfies are to the rest of the set, which is as good as a generated face can hope for;
- floor: other people's faces against the same centroid: what "not this person" scores. Every stranger found
  counts, also one that dlib would call a look-alike: dropping the closest strangers would lower the floor and
  flatter every position.

Crops of one source photo (01_capture's main and loose crop share `source` in metadata.jsonl) count as one
photo: the centroid weighs every photo once, and "the other photos" of the leave-one-out ceiling never include
another crop of the same picture (that would be the same face, not another selfie).

`position = (similarity - floor mean) / (ceiling mean - floor mean)`: 0 looks like a stranger, 1 looks like
another of the person's selfies (values outside 0..1 happen and are kept).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from sdxlab import faces

POSE_FEATURES = ("face_yaw", "face_pitch", "face_roll", "mouth_open", "mouth_width")


class LikenessUnavailable(RuntimeError):
    """Likeness cannot be measured (no training faces); the message says why and what to do."""


@dataclass
class FaceReading:
    """What one image's main face looks like to dlib."""

    face_found: bool
    face_count: int = 0  # confident faces in the image
    face_score: float | None = None
    face_size: float | None = None  # face box width over the image's shorter side
    embedding: np.ndarray | None = None
    pose: dict[str, float] = field(default_factory=dict)  # POSE_FEATURES, empty without a face


def read_face(image: Image.Image, upsample: int = 1) -> FaceReading:
    """Detect the main face of an image, embed it and measure its pose and expression from the landmarks."""
    pixels = faces.as_rgb_array(image)
    confident = [face for face in faces.detect_faces(pixels, upsample) if face.score >= faces.MIN_FACE_SCORE]
    if not confident:
        return FaceReading(face_found=False)
    face = faces.rank_faces(confident)[0]
    return FaceReading(
        face_found=True,
        face_count=len(confident),
        face_score=face.score,
        face_size=face.width / min(pixels.shape[:2]),
        embedding=faces.face_embedding(pixels, face),
        pose=pose_features(face.landmarks),
    )


def pose_features(landmarks: np.ndarray) -> dict[str, float]:
    """Head pose and expression proxies from dlib's 68 landmarks, in units of the distance between the eyes.

    face_yaw: nose tip left/right of the eyes' midpoint (0 = frontal); face_pitch: how far down between eyes
    and mouth the nose tip sits (about 0.5-0.6 frontal; up/down tilts move it); face_roll: eye line angle in
    radians; mouth_open: gap between the inner lips; mouth_width: corner to corner (a smile widens it).
    """
    points = np.asarray(landmarks, dtype=np.float64)
    left_eye, right_eye = points[36:42].mean(axis=0), points[42:48].mean(axis=0)
    eye_axis = right_eye - left_eye
    eye_distance = max(float(np.linalg.norm(eye_axis)), 1e-6)
    across = eye_axis / eye_distance
    down = np.array([-across[1], across[0]])  # perpendicular to the eye line, pointing to the mouth
    eyes_middle = (left_eye + right_eye) / 2
    mouth_middle = (points[48] + points[54]) / 2
    nose = points[30] - eyes_middle
    eyes_to_mouth = max(float((mouth_middle - eyes_middle) @ down), 1e-6)
    return {
        "face_yaw": float(nose @ across / eye_distance),
        "face_pitch": float(nose @ down / eyes_to_mouth),
        "face_roll": float(math.atan2(eye_axis[1], eye_axis[0])),
        "mouth_open": float(np.linalg.norm(points[66] - points[62]) / eye_distance),
        "mouth_width": float(np.linalg.norm(points[54] - points[48]) / eye_distance),
    }


def cosine_rows(embeddings: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of `embeddings` with the vector `other` (or each row of a matrix)."""
    a = np.asarray(embeddings, dtype=np.float64)
    b = np.asarray(other, dtype=np.float64)
    a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
    return a @ b.T


@dataclass
class IdentityReference:
    """The person's identity: one descriptor per training photo in which a face was found."""

    embeddings: np.ndarray  # (images, 128)
    files: list[str]
    notes: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)  # per image, the photo it was cropped from; [] = each its own

    @classmethod
    def from_photos(
        cls, paths: Sequence[Path], upsample: int = 1, sources: Sequence[str] | None = None
    ) -> IdentityReference:
        """Descriptors of the faces in `paths`; `sources` (one per path) groups crops of one photo."""
        from sdxlab.evaluate.inputs import open_rgb

        embeddings, files, kept_sources, without_face, notes = [], [], [], [], []
        for index, path in enumerate(paths):
            image, problem = open_rgb(Path(path))
            if image is None:
                notes.append(problem)
                continue
            reading = read_face(image, upsample)
            if reading.embedding is None:
                without_face.append(Path(path).name)
                continue
            embeddings.append(reading.embedding)
            files.append(Path(path).name)
            kept_sources.append(str(sources[index]) if sources is not None else str(path))
        if without_face:
            notes.append(
                f"No face found in {len(without_face)} training photo(s) ({', '.join(without_face[:4])}"
                f"{', ...' if len(without_face) > 4 else ''}); they do not count for likeness."
            )
        if not embeddings:
            raise LikenessUnavailable(
                f"No face was found in any of the {len(paths)} training photo(s), so likeness cannot be measured; "
                "check that evaluate_dataset_dir holds the person's photos (01_capture's dataset/)."
            )
        return cls(np.stack(embeddings), files, notes, kept_sources)

    @property
    def photo_index(self) -> np.ndarray:
        """For each descriptor, the number of the source photo it comes from (0, 1, ...; crops of one photo share it)."""
        keys = self.sources if len(self.sources) == len(self.embeddings) else [str(i) for i in range(len(self))]
        numbers: dict[str, int] = {}
        return np.array([numbers.setdefault(key, len(numbers)) for key in keys], dtype=int)

    @property
    def photos(self) -> int:
        """How many different source photos the descriptors come from."""
        return len(set(self.photo_index.tolist()))

    def _photo_means(self) -> np.ndarray:
        index = self.photo_index
        return np.stack([self.embeddings[index == photo].mean(axis=0) for photo in range(index.max() + 1)])

    @property
    def centroid(self) -> np.ndarray:
        """The person's identity: the mean descriptor, each source photo weighing once."""
        return self._photo_means().mean(axis=0)

    def __len__(self) -> int:
        return len(self.embeddings)

    def leave_one_out(self) -> tuple[np.ndarray, np.ndarray]:
        """Per source photo: its similarity to the centroid of the *other* photos, and to its nearest other photo.

        A photo with several crops gets the mean over its crops. Crops of the same photo are never each
        other's "other photo". Empty with fewer than two source photos.
        """
        index = self.photo_index
        count = index.max() + 1 if len(index) else 0
        if count < 2:
            return np.zeros(0), np.zeros(0)
        means = self._photo_means()
        pairwise = cosine_rows(self.embeddings, self.embeddings)
        pairwise[index[:, None] == index[None, :]] = -np.inf
        to_centroid, nearest = [], []
        for photo in range(count):
            crops = index == photo
            others = np.delete(means, photo, axis=0).mean(axis=0)
            to_centroid.append(float(cosine_rows(self.embeddings[crops], others).mean()))
            nearest.append(float(pairwise[crops].max(axis=1).mean()))
        return np.array(to_centroid), np.array(nearest)


@dataclass
class Band:
    """A set of similarities summarised: its mean and its spread (10th to 90th percentile)."""

    values: list[float]

    @property
    def mean(self) -> float:
        return float(np.mean(self.values)) if self.values else math.nan

    @property
    def low(self) -> float:
        return float(np.percentile(self.values, 10)) if self.values else math.nan

    @property
    def high(self) -> float:
        return float(np.percentile(self.values, 90)) if self.values else math.nan

    def to_dict(self) -> dict:
        return {"mean": self.mean, "low": self.low, "high": self.high, "count": len(self.values)}


@dataclass
class Calibration:
    """Ceiling (the person's own photos, leave-one-out) and floor (other people) for likeness."""

    ceiling: Band  # training photo vs centroid of the others
    ceiling_nearest: Band  # training photo vs its nearest other training photo
    floor: Band  # other person vs the training centroid
    floor_nearest: Band  # other person vs the nearest training photo
    floor_source: str
    notes: list[str] = field(default_factory=list)

    @property
    def strangers(self) -> int:
        """How many other people's faces the floor is made of."""
        return len(self.floor.values)

    @property
    def known(self) -> bool:
        return bool(self.ceiling.values) and bool(self.floor.values) and self.ceiling.mean > self.floor.mean

    def position(self, similarity: float | None) -> float:
        """Where a similarity to the centroid sits: 0 = floor (strangers), 1 = ceiling (own selfies); NaN if unknown."""
        if similarity is None or not self.known or math.isnan(similarity):
            return math.nan
        return (similarity - self.floor.mean) / (self.ceiling.mean - self.floor.mean)

    def to_dict(self) -> dict:
        return {
            "ceiling": self.ceiling.to_dict(),
            "ceiling_nearest": self.ceiling_nearest.to_dict(),
            "floor": self.floor.to_dict(),
            "floor_nearest": self.floor_nearest.to_dict(),
            "floor_source": self.floor_source,
            "strangers": self.strangers,
            "notes": list(self.notes),
        }


def calibrate(reference: IdentityReference, others: np.ndarray, floor_source: str) -> Calibration:
    """The ceiling from the training photos (leave-one-photo-out) and the floor from every other person's descriptor."""
    notes = []
    to_centroid, nearest = reference.leave_one_out()
    if len(reference) < 2:
        notes.append(
            "Only one training photo has a face, so there is no leave-one-out ceiling; likeness is "
            "reported raw, without a position between floor and ceiling."
        )
    elif reference.photos < 2:
        notes.append(
            f"All {len(reference)} training images with a face are crops of one photo, so there is no "
            "leave-one-out ceiling; likeness is reported raw, without a position between floor and ceiling."
        )
    others = (
        np.asarray(others, dtype=np.float64).reshape(-1, reference.embeddings.shape[1])
        if len(others)
        else np.zeros((0, 128))
    )
    if len(others):
        distances = np.linalg.norm(others - reference.centroid, axis=1)
        close = int((distances < faces.SAME_PERSON_DISTANCE).sum())
        if close:  # kept: leaving the closest strangers out would lower the floor and flatter every position
            notes.append(
                f"{close} of the {len(others)} other people's faces are within identity distance "
                f"{faces.SAME_PERSON_DISTANCE} of the person (dlib would call them the same person); they "
                "still count for the floor. If the other-people photos show the person, remove those."
            )
    if not len(others):
        notes.append(
            "Floor unknown: no other people's faces were available, so likeness is reported raw, without "
            "a position between floor and ceiling; pass evaluate_other_people_dir to set one."
        )
        floor, floor_nearest = Band([]), Band([])
    else:
        floor = Band(cosine_rows(others, reference.centroid).ravel().tolist())
        floor_nearest = Band(cosine_rows(others, reference.embeddings).max(axis=1).tolist())
    calibration = Calibration(
        Band(to_centroid.tolist()),
        Band(nearest.tolist()),
        floor,
        floor_nearest,
        floor_source if len(others) else "",
        notes,
    )
    if calibration.ceiling.values and calibration.floor.values and not calibration.known:
        notes.append(
            "The other people score as close to the training centroid as the person's own photos do, so "
            "the floor/ceiling calibration is meaningless here; check the two photo sets."
        )
    return calibration


@dataclass
class LikenessReading:
    """One generated image's likeness; the similarities are None when no face was found."""

    face: FaceReading
    similarity: float | None = None  # cosine to the training centroid
    similarity_nearest: float | None = None  # cosine to the nearest training photo
    nearest_photo: str | None = None  # that photo's file name
    distance: float | None = None  # Euclidean identity distance to the centroid (dlib: < 0.6 = same person)
    distance_nearest: float | None = None
    position: float = math.nan  # calibrated: 0 = floor, 1 = ceiling

    @property
    def identity_match(self) -> bool:
        return self.distance is not None and self.distance < faces.SAME_PERSON_DISTANCE


def compare(face: FaceReading, reference: IdentityReference, calibration: Calibration | None) -> LikenessReading:
    """A face's likeness to the person, raw and calibrated."""
    if face.embedding is None:
        return LikenessReading(face=face)
    similarities = cosine_rows(reference.embeddings, face.embedding).ravel()
    nearest = int(np.argmax(similarities))
    similarity = float(cosine_rows(face.embedding, reference.centroid))
    return LikenessReading(
        face=face,
        similarity=similarity,
        similarity_nearest=float(similarities[nearest]),
        nearest_photo=reference.files[nearest],
        distance=faces.identity_distance(face.embedding, reference.centroid),
        distance_nearest=faces.identity_distance(face.embedding, reference.embeddings[nearest]),
        position=calibration.position(similarity) if calibration is not None else math.nan,
    )
