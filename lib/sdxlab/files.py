"""Atomic writes: a file is either the old version or the complete new one, never half written.

Every writer puts the data in a temporary file in the same folder, flushes it to disk and renames it over
the target (rename is atomic on one file system), so Ctrl-C or a crashed kernel cannot leave a truncated
LoRA, manifest or CSV that looks complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `target`; on success it replaces `target`, on error it is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial" + target.suffix, dir=target.parent)
    os.close(handle)
    temporary = Path(temporary)
    try:
        yield temporary
        with open(temporary, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def write_with(target: str | os.PathLike, writer: Callable[[Path], Any]) -> Path:
    """Atomically write `target` with a function that writes to the path it is given (e.g. `image.save`)."""
    with atomic_path(target) as temporary:
        writer(temporary)
    return Path(target)


def write_bytes(target: str | os.PathLike, data: bytes) -> Path:
    return write_with(target, lambda path: path.write_bytes(data))


def write_text(target: str | os.PathLike, text: str) -> Path:
    return write_with(target, lambda path: path.write_text(text, encoding="utf-8"))


def write_json(target: str | os.PathLike, value: Any) -> Path:
    return write_text(target, json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n")


def write_jsonl(target: str | os.PathLike, rows: list[dict[str, Any]]) -> Path:
    return write_text(target, "".join(json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in rows))


def write_csv(target: str | os.PathLike, frame) -> Path:
    """Atomically write a pandas DataFrame as CSV (no index column)."""
    return write_with(target, lambda path: frame.to_csv(path, index=False))


def write_image(target: str | os.PathLike, image, **save_options: Any) -> Path:
    """Atomically save a PIL image; the format comes from the target's suffix."""
    file_format = Path(target).suffix.lstrip(".").upper().replace("JPG", "JPEG")
    return write_with(target, lambda path: image.save(path, format=file_format, **save_options))


def write_safetensors(target: str | os.PathLike, tensors: dict, metadata: dict[str, str] | None = None) -> Path:
    from safetensors.torch import save_file

    return write_with(target, lambda path: save_file(tensors, str(path), metadata=metadata))


def save_figure(target: str | os.PathLike, figure, **savefig_options: Any) -> Path:
    """Atomically save a matplotlib figure (PNG unless the suffix says otherwise)."""
    file_format = Path(target).suffix.lstrip(".") or "png"
    savefig_options.setdefault("dpi", 120)
    savefig_options.setdefault("bbox_inches", "tight")
    return write_with(target, lambda path: figure.savefig(path, format=file_format, **savefig_options))


def publish_folder(staging: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Rename a complete staging folder to `target`; an older `target` is removed only after the swap."""
    staging, target = Path(staging), Path(target)
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target


@contextlib.contextmanager
def atomic_folder(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty staging folder beside `target`; on success it becomes `target`, on error it is removed.

    For things built as a whole folder (a model, a dataset): an interrupted build never looks complete.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        yield staging
        publish_folder(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def file_sizes(paths: list[str | os.PathLike | None], root: str | os.PathLike):
    """A table (pandas DataFrame) of written files: `file` relative to `root`, `kB` (a folder: all files inside).

    `None` entries (a file a run did not write, such as embeddings without pivotal tuning) are left out.
    """
    import pandas as pd

    rows = []
    for path in (Path(path) for path in paths if path is not None):
        inside = [path] if path.is_file() else [item for item in path.rglob("*") if item.is_file()]
        rows.append({"file": path.relative_to(root).as_posix(), "kB": round(sum(f.stat().st_size for f in inside) / 1024, 1)})
    return pd.DataFrame(rows, columns=["file", "kB"])
