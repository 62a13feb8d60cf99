"""Atomic writes: a file is either the old version or the complete new one, never half written.

Every writer puts the data in a temporary file in the same folder, flushes it to disk and renames it over
the target (rename is atomic on one file system), so Ctrl-C or a crashed kernel cannot leave a truncated
LoRA, manifest or CSV that looks complete. Written files and folders get the permissions the umask gives any
other program's files (0644 / 0755 with the usual umask), not the private 0600 of a temporary file.

Temporary names start with a dot and contain `.partial`; a process killed with SIGKILL cannot remove its
own, so writers of whole folders call `remove_stale_partials` when they next open the folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

PARTIAL_MARK = ".partial"  # in every temporary name this module makes
_umask_lock = threading.Lock()


def current_umask() -> int:
    """The process's umask (read by setting it and putting it back: POSIX has no read-only call)."""
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _as_if_created(path: Path, folder: bool = False) -> None:
    """Give a temporary file (mkstemp: 0600) or folder (mkdtemp: 0700) the mode a plain open()/mkdir() gives."""
    os.chmod(path, (0o777 if folder else 0o666) & ~current_umask())


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `target`; on success it replaces `target`, on error it is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=PARTIAL_MARK + target.suffix, dir=target.parent
    )
    os.close(handle)
    temporary = Path(temporary)
    try:
        _as_if_created(temporary)
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


def write_together(writers: dict[str | os.PathLike, Callable[[Path], Any]]) -> list[Path]:
    """Write several files of one folder as a group: either all new versions are in place, or all old ones.

    Every file is first written in full into a hidden staging folder beside the targets; only then are they
    renamed into place, the old versions set aside until the last rename succeeded (and put back if one fails).
    """
    targets = [Path(target) for target in writers]
    folders = {target.parent for target in targets}
    if len(folders) != 1:
        raise ValueError(f"write_together writes into one folder, not {len(folders)}: {sorted(map(str, folders))}.")
    folder = folders.pop()
    staging = make_temporary_folder(folder, "together")
    try:
        for target, writer in zip(targets, writers.values(), strict=True):
            staged = staging / target.name
            writer(staged)
            with open(staged, "rb+") as written:
                os.fsync(written.fileno())
        moved_aside: list[Path] = []
        placed: list[Path] = []
        try:
            for target in targets:
                if target.exists():
                    os.replace(target, staging / f"{target.name}.old")
                    moved_aside.append(target)
                os.replace(staging / target.name, target)
                placed.append(target)
        except BaseException:
            for target in placed:  # put the old versions back: the group stays as it was
                if target not in moved_aside:
                    target.unlink(missing_ok=True)
            for target in moved_aside:
                os.replace(staging / f"{target.name}.old", target)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return targets


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
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=PARTIAL_MARK, dir=target.parent))
    try:
        _as_if_created(staging, folder=True)
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
        rows.append(
            {"file": path.relative_to(root).as_posix(), "kB": round(sum(f.stat().st_size for f in inside) / 1024, 1)}
        )
    return pd.DataFrame(rows, columns=["file", "kB"])


def make_temporary_folder(parent: str | os.PathLike, name: str) -> Path:
    """A new, empty hidden folder in `parent` (named after `name`, marked partial) with the umask's mode."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=PARTIAL_MARK, dir=parent))
    _as_if_created(folder, folder=True)
    return folder


def is_partial(path: str | os.PathLike) -> bool:
    """Whether a name is one of this module's temporary names (a hidden name containing `.partial`)."""
    name = Path(path).name
    return name.startswith(".") and PARTIAL_MARK in name


def remove_stale_partials(folder: str | os.PathLike) -> list[Path]:
    """Delete temporary files and folders left in `folder` by a writer that was killed; returns what went.

    Call it only where no other writer is at work in the same folder (a trainer on its own output folder).
    """
    folder = Path(folder)
    removed = []
    if folder.is_dir():
        for entry in folder.iterdir():
            if is_partial(entry):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
                removed.append(entry)
    return removed
