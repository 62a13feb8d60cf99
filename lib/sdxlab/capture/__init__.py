"""Capture: from a folder of phone photos to a clean, face-centred training set (notebook 01_capture).

- `sources`: finding inputs (folders, zips); `decode`: reading any photo format upright as RGB;
- `checks`: sharpness, exposure, extra faces, near-duplicates, identity;
- `crops`: face-centred square crops and their masks;
- `pipeline`: the stage itself (`analyse_photos`, `capture_photos`); `results`: settings and verdicts;
- `dataset`: writing the dataset folder; `sheet`: the contact sheet;
- `upload`: the notebook's upload widget and caption editor.
"""

from sdxlab.capture.checks import DUPLICATE_MAX_DISTANCE, IDENTITY_MAX_DISTANCE, MIN_SHARPNESS, perceptual_hash
from sdxlab.capture.crops import Crop, crop_box, make_crop
from sdxlab.capture.dataset import masked_previews, read_metadata, write_dataset
from sdxlab.capture.decode import Photo, UnreadablePhoto, decode_photo, load_photo
from sdxlab.capture.pipeline import analyse_photos, capture_photos
from sdxlab.capture.results import CaptureResult, CaptureSettings, DatasetEntry, PhotoResult
from sdxlab.capture.sheet import contact_sheet
from sdxlab.capture.sources import CaptureError, PhotoSource, find_photos
from sdxlab.capture.upload import caption_editor, in_jupyter_frontend, save_uploads, upload_widget

__all__ = [
    "DUPLICATE_MAX_DISTANCE",
    "IDENTITY_MAX_DISTANCE",
    "MIN_SHARPNESS",
    "CaptureError",
    "CaptureResult",
    "CaptureSettings",
    "Crop",
    "DatasetEntry",
    "Photo",
    "PhotoResult",
    "PhotoSource",
    "UnreadablePhoto",
    "analyse_photos",
    "caption_editor",
    "capture_photos",
    "contact_sheet",
    "crop_box",
    "decode_photo",
    "find_photos",
    "in_jupyter_frontend",
    "load_photo",
    "make_crop",
    "masked_previews",
    "perceptual_hash",
    "read_metadata",
    "save_uploads",
    "upload_widget",
    "write_dataset",
]
