"""Capture: from a folder of phone photos to a clean, face-centred training set (notebook 01_capture).

- `sources`: finding inputs (folders, zips); `decode`: reading any photo format upright as RGB;
- `checks`: sharpness, exposure, extra faces, near-duplicates, identity;
- `crops`: face-centred square crops and their masks;
- `pipeline`: the stage itself (`analyse_photos`, `capture_photos`); `results`: settings and verdicts;
- `dataset`: writing the dataset folder; `sheet`: the contact sheet;
- `upload`: the notebook's upload widget and caption editor.
"""

from sdxlab.lazy import lazy_exports

# name -> module it lives in; imported on first use (sdxlab.lazy says why)
_EXPORTS = {
    "CaptureError": "sources",
    "CaptureResult": "results",
    "CaptureSettings": "results",
    "Crop": "crops",
    "DUPLICATE_MAX_DISTANCE": "checks",
    "DatasetEntry": "results",
    "IDENTITY_MAX_DISTANCE": "checks",
    "MIN_SHARPNESS": "checks",
    "Photo": "decode",
    "PhotoResult": "results",
    "PhotoSource": "sources",
    "UnreadablePhoto": "decode",
    "analyse_photos": "pipeline",
    "caption_editor": "upload",
    "capture_photos": "pipeline",
    "contact_sheet": "sheet",
    "crop_box": "crops",
    "decode_photo": "decode",
    "find_photos": "sources",
    "in_jupyter_frontend": "upload",
    "load_photo": "decode",
    "make_crop": "crops",
    "masked_previews": "dataset",
    "perceptual_hash": "checks",
    "read_metadata": "dataset",
    "save_uploads": "upload",
    "upload_widget": "upload",
    "write_dataset": "dataset",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
