"""Other people's faces: the floor of the likeness calibration ("what a stranger scores").

By default the floor is the six people of the group photo `t1.jpg` that ships inside the `insightface`
wheel on PyPI. That photo's licence is not stated, so it is never committed: it is read from the wheel,
downloaded once with pip, and kept under `sdxlab.models.cache_dir()`. Without network (and no cached copy)
the floor is unknown and likeness is reported raw, with a note. Users can point `other_people_dir` at a
folder of photos of other people instead: every confident face in every image there counts as one person.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sdxlab import files
from sdxlab.evaluate.inputs import IMAGE_SUFFIXES, open_rgb
from sdxlab.models import cache_dir
from sdxlab.wheels import WheelUnavailable, read_wheel_member, sha256

INSIGHTFACE_WHEEL = "insightface==2.1"  # a pure-Python wheel (1.2 MB) that carries the group photo
GROUP_PHOTO_MEMBER = "insightface/data/images/t1.jpg"
GROUP_PHOTO_SHA256 = "47f682e945b659f93a9e490b9c9c4a2a864abe64dace9e1a2893845ddfd69489"
DEFAULT_FLOOR_SOURCE = "six people in insightface's t1.jpg (PyPI wheel insightface==2.1)"


@dataclass
class OtherPeople:
    embeddings: np.ndarray  # (faces, 128); empty when the floor is unknown
    labels: list[str]
    source: str
    notes: list[str] = field(default_factory=list)


def group_photo_path(download: bool = True, timeout: float = 120) -> tuple[Path | None, str]:
    """The cached group photo (downloading the wheel once if allowed), and a note when it is unavailable."""
    target = cache_dir() / "other-people" / "insightface-2.1-t1.jpg"
    if target.is_file() and sha256(target.read_bytes()) == GROUP_PHOTO_SHA256:
        return target, ""
    if not download:
        return None, "The default other-people photo is not cached and downloading was turned off."
    try:
        data = read_wheel_member(INSIGHTFACE_WHEEL, GROUP_PHOTO_MEMBER, timeout)
    except WheelUnavailable as error:
        return None, (
            f"Could not fetch the default other-people photo ({INSIGHTFACE_WHEEL} from PyPI: "
            f"{error}); is there network? Pass evaluate_other_people_dir instead."
        )
    if sha256(data) != GROUP_PHOTO_SHA256:
        return None, f"The group photo in {INSIGHTFACE_WHEEL} is not the expected file; it was not used."
    return files.write_bytes(target, data), ""


def other_people(other_people_dir: str | Path | None = None, download: bool = True, upsample: int = 1) -> OtherPeople:
    """Identity descriptors of other people: from `other_people_dir`, else the default group photo."""
    from sdxlab import faces

    if other_people_dir is not None:
        folder = Path(other_people_dir)
        if not folder.is_dir():
            return OtherPeople(
                np.zeros((0, 128)),
                [],
                "",
                [
                    f"Other-people folder {folder} does not exist; the likeness floor is unknown. Point "
                    "evaluate_other_people_dir at a folder of photos of other people, or set it to None for the default."
                ],
            )
        paths = sorted(path for path in folder.rglob("*") if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES)
        source = f"{len(paths)} photo(s) in {folder}"
    else:
        path, note = group_photo_path(download)
        if path is None:
            return OtherPeople(np.zeros((0, 128)), [], "", [note + " The likeness floor is unknown."])
        paths, source = [path], DEFAULT_FLOOR_SOURCE

    embeddings, labels, notes = [], [], []
    for path in paths:
        image, problem = open_rgb(path)
        if image is None:
            notes.append(problem)
            continue
        found = [face for face in faces.detect_faces(image, upsample) if face.score >= faces.MIN_FACE_SCORE]
        for index, face in enumerate(found):
            embeddings.append(faces.face_embedding(image, face))
            labels.append(f"{path.name}#{index}")
    if not embeddings:
        notes.append(f"No faces found in the other-people photos ({source}); the likeness floor is unknown.")
    stacked = np.stack(embeddings) if embeddings else np.zeros((0, 128))
    return OtherPeople(stacked, labels, source, notes)


def group_photo_faces(download: bool = True) -> list:
    """The group photo's six faces as PIL crops (for figures and tests), or [] when it is unavailable."""
    from PIL import Image

    from sdxlab import faces

    path, _ = group_photo_path(download)
    if path is None:
        return []
    image = Image.open(io.BytesIO(path.read_bytes())).convert("RGB")
    crops = []
    for face in faces.detect_faces(image):
        if face.score < faces.MIN_FACE_SCORE:
            continue
        margin = face.width // 2
        left, top, right, bottom = face.box
        crops.append(
            image.crop(
                (
                    max(0, left - margin),
                    max(0, top - margin),
                    min(image.width, right + margin),
                    min(image.height, bottom + margin),
                )
            )
        )
    return crops
