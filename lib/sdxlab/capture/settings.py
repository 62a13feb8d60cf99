"""The capture stage's settings (notebook 01_capture), declared once: default, help and allowed values."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image

from sdxlab import faces
from sdxlab.capture import checks
from sdxlab.capture.crops import CROP_SCALE
from sdxlab.settings import CommonSettings, Settings, internal, like, setting
from sdxlab.settings.common import CLASS_WORD, SUBJECT_TOKEN

DEFAULT_CAPTION = "a photo of {subject_token} {class_word}"

CaptionHook = Callable[[Image.Image, str], "str | None"]


def _caption_template(value: str) -> str | None:
    try:
        value.format(subject_token=SUBJECT_TOKEN, class_word=CLASS_WORD)
    except (KeyError, IndexError, ValueError):
        return "a caption whose only {placeholders} are {subject_token} and {class_word}"
    return None


@dataclass
class CaptureSettings(Settings):
    """Every knob of the capture stage; the notebook's parameters are `capture_<field>` (and photos_dir,
    keep_anyway, captions_override), the rest are set from code."""

    prefix = "capture_"

    photos_dir: str = setting(
        "data/sample",
        "your photos: a folder (searched recursively, zips inside included) or a .zip; only ever read",
        parameter="photos_dir",
    )
    upload_dir: str = setting(
        "data/me", "where JupyterLab's upload button saves photos (git-ignored); then set photos_dir to it"
    )
    keep_anyway: list[str] = setting(
        [],
        'files to keep although a check rejected them, e.g. ["IMG_0042.jpg"] (not for unreadable or faceless files)',
        parameter="keep_anyway",
    )
    captions_override: dict[str, str] = setting(
        {},
        'your own captions: {"IMG_0042.jpg" or "0001.png": "a photo of sks person laughing"}',
        parameter="captions_override",
    )
    caption_template: str = setting(DEFAULT_CAPTION, "default caption of every training image", check=_caption_template)
    min_photos: int = setting(8, "stop with an explanation if fewer photos than this are usable", minimum=1)
    loose_crop: bool = setting(False, "also keep a looser crop of each photo (more variety, twice the images)")
    crop_scale: float = setting(
        CROP_SCALE,
        "crop side as a multiple of the face width (1.5: the face, 2: face and hair, 3: head and shoulders)",
        minimum=1,
    )
    max_upscale: float = setting(
        2.0, "reject a photo whose crop must be enlarged more than this to reach `resolution`", minimum=1
    )
    background_weight: float = setting(
        0.5,
        "mask value outside the face: the loss weight the trainer uses there (the face gets 1.0)",
        minimum=0,
        maximum=1,
        parameter="capture_mask_background_weight",
    )
    min_sharpness: float = setting(
        checks.MIN_SHARPNESS,
        "reject faces less sharp than this (variance of the Laplacian on the face at 128 px)",
        minimum=0,
    )
    duplicate_max_distance: int = setting(
        checks.DUPLICATE_MAX_DISTANCE,
        f"photos whose perceptual hashes differ in at most this many of {checks.HASH_BITS} bits are duplicates",
        minimum=0,
        maximum=checks.HASH_BITS,
        parameter="capture_duplicate_distance",
    )
    identity_max_distance: float = setting(
        checks.IDENTITY_MAX_DISTANCE,
        "reject faces farther than this from the identity centre of the set (dlib distance)",
        above=0,
        parameter="capture_identity_distance",
    )
    # the common block: the side of the square training images, and who is in them
    resolution: int = like(CommonSettings, "resolution")
    subject_token: str = like(CommonSettings, "subject_token")
    class_word: str = like(CommonSettings, "class_word")
    # set from code only
    caption_hook: CaptionHook | None = internal()  # (crop, source name) -> description or caption, e.g. a captioner
    min_photo_side: int = internal(256)  # shorter side below this: a thumbnail, not a photo
    exposure_range: tuple[float, float] = internal(checks.EXPOSURE_RANGE)
    max_clipped: float = internal(checks.MAX_CLIPPED_FRACTION)
    prominent_face_ratio: float = internal(checks.PROMINENT_FACE_RATIO)
    face_min_score: float = internal(faces.MIN_FACE_SCORE)
    face_upsample: int = internal(1)
    face_detector: str = internal("hog")  # "hog" (fast) or "cnn" (better on turned faces, slow on a CPU)
    face_confirm: bool = internal(True)  # confirm HOG's deciding faces with the CNN detector (drops patches, posters)

    def default_caption(self) -> str:
        return self.caption_template.format(subject_token=self.subject_token, class_word=self.class_word)
