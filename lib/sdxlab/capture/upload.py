"""Notebook helpers for capture: an upload widget (JupyterLab only) and a caption editor.

Both are thin ipywidgets front ends. Under papermill (no person at the keyboard) the upload widget is
replaced by a line of text saying how to use it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from sdxlab import files

UPLOAD_ACCEPT = ".jpg,.jpeg,.png,.webp,.heic,.heif,.gif,.tif,.tiff,.zip,image/*"


def in_jupyter_frontend() -> bool:
    """Whether a person is at a notebook front end (JupyterLab sets JPY_SESSION_NAME; papermill does not)."""
    return bool(os.environ.get("JPY_SESSION_NAME"))


def _safe_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._ -]+", "_", Path(name).name).strip(" .")
    return cleaned or "photo"


def save_uploads(uploads, target_dir: str | os.PathLike) -> list[Path]:
    """Save FileUpload values (dicts with 'name' and 'content') into `target_dir`, never over an existing file."""
    target_dir = Path(target_dir)
    target_dir.mkdir(parents=True, exist_ok=True)
    saved = []
    for upload in uploads:
        name = _safe_name(upload["name"])
        target = target_dir / name
        counter = 1
        while target.exists():
            target = target_dir / f"{Path(name).stem}_{counter}{Path(name).suffix}"
            counter += 1
        files.write_bytes(target, bytes(upload["content"]))
        saved.append(target)
    return saved


def upload_widget(target_dir: str | os.PathLike):
    """A FileUpload button that saves photos (or a .zip) into `target_dir`; in papermill, a text message instead."""
    target_dir = Path(target_dir)
    if not in_jupyter_frontend():
        print(
            f"Upload: open this notebook in JupyterLab to upload photos into {target_dir} with a button; "
            "this run reads photos_dir as it is."
        )
        return None
    import ipywidgets as widgets

    button = widgets.FileUpload(accept=UPLOAD_ACCEPT, multiple=True, description="Upload photos")
    status = widgets.HTML(
        f"Photos you upload are saved into <code>{target_dir}</code> (existing files are never replaced)."
    )

    def on_upload(change):
        saved = save_uploads(change["new"], target_dir)
        status.value = (
            f"Saved {len(saved)} file(s) into <code>{target_dir}</code>. Set <code>photos_dir</code> to that folder "
            "in the parameters cell and run the notebook again."
        )

    button.observe(on_upload, names="value")
    return widgets.VBox([button, status])


def caption_editor(result):
    """One text box per training image; edits change the captions that `write_dataset` writes."""
    import ipywidgets as widgets

    rows = []
    for entry in result.entries:
        box = widgets.Text(
            value=entry.caption, description=Path(entry.file_name).name, layout=widgets.Layout(width="90%")
        )

        def on_change(change, entry=entry):
            entry.caption = change["new"]

        box.observe(on_change, names="value")
        rows.append(box)
    return widgets.VBox(rows)
