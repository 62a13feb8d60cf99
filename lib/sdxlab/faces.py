"""Faces: detection, landmarks, identity embeddings and face masks (shared by capture and evaluate).

Everything runs offline on dlib's models, which ship inside the `face-recognition-models` package:
the frontal HOG detector (fast, default), the MMOD CNN detector (optional, slow on CPU), the 68-point
landmark model and the ResNet identity model (128-d descriptors; two photos of one person are usually
closer than 0.6 in Euclidean distance).

The model files are located without importing `face_recognition_models`, whose `__init__` needs
`pkg_resources` (gone from new setuptools). Models load lazily, once per process.
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# Largest side of the copy the detector sees: HOG time grows with the pixel count (1.5 s on 16 MP, ~0.1 s
# at 1024 px) while faces in selfies stay far above dlib's 80 px minimum at this size.
DETECT_MAX_SIDE = 1024
# HOG scores below this are mostly false positives (skimage's astronaut: the face scores 1.16, the
# mission patch on the suit 0.12 at upsample 1). Real faces, even turned a little, score well above it.
MIN_FACE_SCORE = 0.35
MODEL_FILES = {
    "landmarks_68": "shape_predictor_68_face_landmarks.dat",
    "landmarks_5": "shape_predictor_5_face_landmarks.dat",
    "identity": "dlib_face_recognition_resnet_model_v1.dat",
    "cnn_detector": "mmod_human_face_detector.dat",
}
SAME_PERSON_DISTANCE = 0.6
MIN_CONFIRM_SCORE = 0.3  # `confirm_face`: real faces score ~1.0 with the CNN, HOG's false positives 0
HOG_MIN_FACE = 80  # the HOG detector's window: smaller faces are found only with upsampling (each step doubles)  # dlib's usual threshold on `identity_distance`

_load_lock = threading.Lock()


@dataclass
class Face:
    """One detected face, in the pixel coordinates of the image it was found in."""

    box: tuple[int, int, int, int]  # left, top, right, bottom
    score: float  # detector confidence (HOG: ~0..3; CNN: ~0..1.5)
    landmarks: np.ndarray = field(repr=False)  # 68 x 2 float (x, y)

    @property
    def width(self) -> int:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> int:
        return self.box[3] - self.box[1]

    @property
    def center(self) -> tuple[float, float]:
        return ((self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2)

    @property
    def area(self) -> int:
        return max(self.width, 0) * max(self.height, 0)


# --- models -------------------------------------------------------------------------------------------------


def models_dir() -> Path:
    """The folder holding dlib's model files inside the installed `face-recognition-models` package."""
    spec = importlib.util.find_spec("face_recognition_models")  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "dlib's face models are missing: install the 'face-recognition-models' package "
            "(pip install face-recognition-models)."
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def model_path(name: str) -> Path:
    path = models_dir() / MODEL_FILES[name]
    if not path.is_file():
        raise RuntimeError(f"dlib model file {path} is missing; reinstall the 'face-recognition-models' package.")
    return path


@cache
def _model(name: str):
    import dlib

    loaders = {
        "hog": lambda: dlib.get_frontal_face_detector(),
        "cnn_detector": lambda: dlib.cnn_face_detection_model_v1(str(model_path("cnn_detector"))),
        "landmarks_68": lambda: dlib.shape_predictor(str(model_path("landmarks_68"))),
        "identity": lambda: dlib.face_recognition_model_v1(str(model_path("identity"))),
    }
    return loaders[name]()


def load_model(name: str):
    """A dlib model by name ('hog', 'cnn_detector', 'landmarks_68', 'identity'), loaded once per process."""
    with _load_lock:  # two notebook threads must not both pay the (seconds-long) load of the same file
        return _model(name)


# --- detection ----------------------------------------------------------------------------------------------


def as_rgb_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """An 8-bit RGB array (H x W x 3, contiguous), which is what dlib accepts."""
    if isinstance(image, Image.Image):
        return np.ascontiguousarray(np.asarray(image if image.mode == "RGB" else image.convert("RGB"), dtype=np.uint8))
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    if array.shape[-1] == 4:
        array = array[..., :3]
    if array.dtype != np.uint8:
        scale = 255.0 if array.dtype.kind == "f" and array.max() <= 1.0 else 1.0
        array = np.clip(array * scale, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(array)


def _size(image: Image.Image | np.ndarray) -> tuple[int, int]:
    """(width, height) of an image or array."""
    return image.size if isinstance(image, Image.Image) else (np.asarray(image).shape[1], np.asarray(image).shape[0])


def _downscaled(image: Image.Image | np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """An RGB array whose longer side is at most `max_side`, and the factor that maps its pixels back.

    A PIL image is resized before it becomes an array: turning a 12 MP photo into an array costs more than
    detecting faces in its 1024 px copy."""
    width, height = _size(image)
    longest = max(width, height)
    if longest <= max_side:
        return as_rgb_array(image), 1.0
    factor = longest / max_side
    size = (max(1, round(width / factor)), max(1, round(height / factor)))
    picture = image if isinstance(image, Image.Image) else Image.fromarray(as_rgb_array(image))
    small = picture.convert("RGB") if picture.mode != "RGB" else picture
    return as_rgb_array(small.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)), factor


def _region(
    image: Image.Image | np.ndarray, box: tuple[int, int, int, int], margin: float
) -> tuple[np.ndarray, tuple[int, int]]:
    """The pixels around `box` (grown by `margin` x its size, clipped to the image) and the region's top-left corner."""
    width, height = _size(image)
    extra = round(max(box[2] - box[0], box[3] - box[1]) * margin)
    left, top = max(0, box[0] - extra), max(0, box[1] - extra)
    right, bottom = min(width, box[2] + extra), min(height, box[3] + extra)
    if isinstance(image, Image.Image):
        return as_rgb_array(image.crop((left, top, right, bottom))), (left, top)
    return as_rgb_array(np.asarray(image)[top:bottom, left:right]), (left, top)


def _shape(
    pixels: np.ndarray, offset: tuple[int, int], box: tuple[int, int, int, int], landmarks: np.ndarray | None = None
):
    """dlib's landmark object for a face in a region: fitted by the 68-point model, or built from known landmarks."""
    import dlib

    dx, dy = offset
    rectangle = dlib.rectangle(int(box[0] - dx), int(box[1] - dy), int(box[2] - dx), int(box[3] - dy))
    if landmarks is not None and len(landmarks) == 68:
        points = dlib.points([dlib.point(round(x - dx), round(y - dy)) for x, y in landmarks])
        return dlib.full_object_detection(rectangle, points)
    return load_model("landmarks_68")(pixels, rectangle)


def _landmarks(image: Image.Image | np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """68 landmarks fitted at full resolution, on the face's neighbourhood only (cheap on a 12 MP photo)."""
    pixels, (dx, dy) = _region(image, box, margin=0.3)
    shape = _shape(pixels, (dx, dy), box)
    return np.array([(point.x + dx, point.y + dy) for point in shape.parts()], dtype=np.float64)


def detect_faces(
    image: Image.Image | np.ndarray,
    upsample: int = 1,
    detector: str = "hog",
    max_side: int = DETECT_MAX_SIDE,
    adjust_threshold: float = 0.0,
) -> list[Face]:
    """All faces in an image, best first (confident faces before doubtful ones, then larger before smaller).

    Detection runs on a copy at most `max_side` pixels on its longer side; boxes are mapped back to the
    image's own pixels and landmarks are fitted there, at full resolution.
    `detector="cnn"` uses dlib's MMOD CNN detector: better on turned faces, seconds per image on a CPU.
    """
    small, factor = _downscaled(image, max_side)
    if detector == "hog":
        rectangles, scores, _ = load_model("hog").run(small, upsample, adjust_threshold)
    elif detector == "cnn":
        found = load_model("cnn_detector")(small, upsample)
        rectangles, scores = [item.rect for item in found], [item.confidence for item in found]
    else:
        raise ValueError(f"Unknown face detector {detector!r}; use 'hog' or 'cnn'.")

    width, height = _size(image)
    faces = []
    for rectangle, score in zip(rectangles, scores, strict=True):
        left = max(0, round(rectangle.left() * factor))
        top = max(0, round(rectangle.top() * factor))
        right = min(width, round(rectangle.right() * factor))
        bottom = min(height, round(rectangle.bottom() * factor))
        if right <= left or bottom <= top:
            continue
        box = (left, top, right, bottom)
        faces.append(Face(box=box, score=float(score), landmarks=_landmarks(image, box)))
    return rank_faces(faces)


def rank_faces(faces: list[Face], min_score: float = MIN_FACE_SCORE) -> list[Face]:
    """Confident faces first, largest first within each group; doubtful detections last."""
    return sorted(faces, key=lambda face: (face.score >= min_score, face.area, face.score), reverse=True)


def main_face(
    image: Image.Image | np.ndarray,
    upsample: int = 1,
    min_score: float = MIN_FACE_SCORE,
    detector: str = "hog",
) -> Face | None:
    """The confident, largest face, or None; low-score detections (patches, textures) are ignored."""
    confident = [face for face in detect_faces(image, upsample, detector) if face.score >= min_score]
    return rank_faces(confident, min_score)[0] if confident else None


def confirm_face(image: Image.Image | np.ndarray, face: Face, face_size: int = 90, margin: float = 0.4) -> float:
    """The CNN detector's confidence that `face` (found by HOG) is a face; 0.0 when it sees none there.

    HOG fires on face-like patterns (a round mission patch scores 0.9 at some scales); dlib's MMOD CNN does
    not. Running it on the whole photo takes seconds on a CPU, but on a small crop around one candidate,
    resized so the face is `face_size` px, it takes about 0.1 s.
    """
    pixels = image if isinstance(image, Image.Image) else Image.fromarray(as_rgb_array(image))
    extra = round(max(face.width, face.height) * margin)
    left, top, right, bottom = face.box
    region = pixels.crop((left - extra, top - extra, right + extra, bottom + extra))  # past the edge: black
    factor = face_size / max(face.width, 1)
    side = (max(1, round(region.width * factor)), max(1, round(region.height * factor)))
    crop = as_rgb_array(region.resize(side, Image.Resampling.BILINEAR, reducing_gap=2.0))
    centre_x, centre_y = side[0] / 2, side[1] / 2
    confidences = [
        float(found.confidence)
        for found in load_model("cnn_detector")(crop, 0)
        if found.rect.left() <= centre_x <= found.rect.right() and found.rect.top() <= centre_y <= found.rect.bottom()
    ]
    return max(confidences, default=0.0)


# --- identity -----------------------------------------------------------------------------------------------


def face_embedding(image: Image.Image | np.ndarray, face: Face) -> np.ndarray:
    """dlib's 128-d identity descriptor of one face (float32); the face is aligned from its landmarks.

    Only the face's neighbourhood is handed to dlib (the aligned 150 px chip comes from there)."""
    pixels, offset = _region(image, face.box, margin=0.6)
    shape = _shape(pixels, offset, face.box, face.landmarks)
    descriptor = load_model("identity").compute_face_descriptor(pixels, shape)
    return np.asarray(descriptor, dtype=np.float32)


def embed_main_face(image: Image.Image | np.ndarray, upsample: int = 1) -> np.ndarray | None:
    """The identity descriptor of the image's main face, or None when there is no confident face."""
    face = main_face(image, upsample)
    return None if face is None else face_embedding(image, face)


def identity_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance between two descriptors; below ~0.6 (SAME_PERSON_DISTANCE) usually means one person."""
    return float(np.linalg.norm(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)))


def identity_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity between two descriptors (1 = same direction)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    norms = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / norms) if norms > 0 else 0.0


# --- masks --------------------------------------------------------------------------------------------------


def _convex_hull(points: np.ndarray) -> np.ndarray:
    """Andrew's monotone chain: the hull of 2-D points, counter-clockwise."""
    ordered = sorted(map(tuple, np.asarray(points, dtype=np.float64)))
    if len(ordered) < 3:
        return np.array(ordered)

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list = []
    for point in ordered:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], point) <= 0:
            lower.pop()
        lower.append(point)
    upper: list = []
    for point in reversed(ordered):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], point) <= 0:
            upper.pop()
        upper.append(point)
    return np.array(lower[:-1] + upper[:-1])


def face_region_points(face: Face, forehead: float = 0.6) -> np.ndarray:
    """Landmarks plus the brows lifted towards the hairline (the 68 points stop at the eyebrows)."""
    landmarks = np.asarray(face.landmarks, dtype=np.float64)
    brows = landmarks[17:27]
    chin = landmarks[8]
    brow_centre = brows.mean(axis=0)
    lift = (brow_centre - chin) * forehead  # from chin to brows, continued upwards
    return np.vstack([landmarks, brows + lift])


def face_mask(
    size: tuple[int, int],
    face: Face,
    background_weight: float = 0.5,
    dilate: float = 0.08,
    soften: float = 0.04,
) -> Image.Image:
    """A mode-L loss-weight mask of `size` (width, height): 255 on the face, round(255 * background_weight) elsewhere.

    The face region is the convex hull of the landmarks and a forehead estimate, grown by `dilate` x face
    size so hairline and ears count as face, with an edge softened over `soften` x face size.
    """
    if not 0.0 <= background_weight <= 1.0:
        raise ValueError(f"background_weight must be between 0 and 1, got {background_weight}.")
    width, height = size
    background = round(255 * background_weight)
    hull = _convex_hull(face_region_points(face))
    centre = hull.mean(axis=0)
    extent = max(face.width, face.height, 1)
    radial = hull - centre
    lengths = np.linalg.norm(radial, axis=1, keepdims=True)
    grown = hull + radial / np.maximum(lengths, 1e-6) * dilate * extent
    mask = Image.new("L", (width, height), background)
    ImageDraw.Draw(mask).polygon([tuple(point) for point in grown], fill=255)
    radius = soften * extent
    if radius >= 0.5:
        mask = mask.filter(ImageFilter.GaussianBlur(radius))
        # Blurring pulls the face's inside below 255; restore the core so the face weight stays exactly 1.0.
        core = Image.new("L", (width, height), 0)
        ImageDraw.Draw(core).polygon([tuple(point) for point in hull], fill=255)
        mask.paste(255, mask=core)
    return mask
