"""Where photos come from: a folder (searched recursively), a .zip archive, or zips inside a folder.

Each input file becomes one `PhotoSource` that can only be read: capture never opens an original for
writing, so the user's folder is byte-for-byte the same afterwards.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

# Files that operating systems leave next to photos; they are not the user's photos and are skipped quietly.
SYSTEM_FILES = {".DS_Store", "Thumbs.db", "desktop.ini", "Icon\r"}
MAX_FILE_BYTES = 300 * 1024 * 1024  # no phone photo is this big; larger files are refused before reading


class CaptureError(RuntimeError):
    """Capture cannot go on (no photos, too few usable ones); the message says what to do."""


class TooLarge(OSError):
    """A file far larger than any photo; str() is the whole sentence after the file's name, with advice."""


@dataclass(frozen=True)
class PhotoSource:
    """One input file: a file on disk, or a member of a zip archive."""

    name: str  # how the report names it: the path relative to the input (zip members as "photos.zip/IMG_1.jpg")
    path: Path  # the file on disk (the archive, for zip members)
    member: str | None = None  # the member's name inside the archive
    refused: str | None = None  # why it is skipped without being read (a zip member named outside the archive)

    @property
    def suffix(self) -> str:
        return Path(self.member or self.path.name).suffix.lower()

    @property
    def size_bytes(self) -> int:
        if self.member is None:
            return self.path.stat().st_size
        with zipfile.ZipFile(self.path) as archive:
            return archive.getinfo(self.member).file_size

    def read_bytes(self) -> bytes:
        """The file's bytes (read only; refused above MAX_FILE_BYTES so a stray video cannot fill memory)."""
        size = self.size_bytes
        if size > MAX_FILE_BYTES:
            where = "the zip" if self.member else "the folder"
            raise TooLarge(
                f"is {size / 1e6:.0f} MB, more than the {MAX_FILE_BYTES / 1e6:.0f} MB limit for one photo, so it was "
                f"not read; if it is a photo, export it as a JPEG (phone photos are 2-10 MB), otherwise remove it "
                f"from {where}"
            )
        if self.member is None:
            with open(self.path, "rb") as handle:
                return handle.read()
        with zipfile.ZipFile(self.path) as archive:
            return archive.read(self.member)

    def matches(self, names: set[str]) -> bool:
        """Whether a user's list (keep_anyway, captions) means this file: by full name or by file name."""
        return self.name in names or Path(self.member or self.path.name).name in names


def _is_skipped(relative: str) -> bool:
    parts = Path(relative).parts
    return any(part.startswith(".") or part == "__MACOSX" for part in parts) or parts[-1] in SYSTEM_FILES


def unsafe_member(member: str) -> str | None:
    """Why a zip member's name points outside the archive (an absolute path, a `..` part), else None."""
    parts = member.replace("\\", "/").split("/")
    if member.startswith(("/", "\\")) or (len(member) > 1 and member[1] == ":"):
        return "is stored under an absolute path"
    if ".." in parts:
        return "has '..' in its path, which points outside the archive"
    return None


def _zip_members(archive_path: Path, display: str) -> list[PhotoSource]:
    try:
        with zipfile.ZipFile(archive_path) as archive:
            members = [info.filename for info in archive.infolist() if not info.is_dir()]
    except (zipfile.BadZipFile, OSError):
        return [PhotoSource(display, archive_path)]  # decoding will report it as unreadable, naming the file
    sources = []
    for member in sorted(members):
        problem = unsafe_member(member)
        if problem:  # never read, but reported: a file must not vanish from the report
            sources.append(
                PhotoSource(
                    f"{display}/{member}",
                    archive_path,
                    member,
                    refused=(
                        f"was skipped without being read: inside the zip it {problem} (how a zip smuggles files out of "
                        "the folder it is unpacked into); if it is your photo, re-create the zip from the photos themselves"
                    ),
                )
            )
        elif not _is_skipped(member):
            sources.append(PhotoSource(f"{display}/{member}", archive_path, member))
    return sources


def find_photos(photos: str | os.PathLike) -> list[PhotoSource]:
    """Every input file under a folder (recursive, zips expanded) or in a zip, sorted by name.

    Hidden files and operating-system clutter (.DS_Store, __MACOSX/) are skipped; every other file is an
    input, so a stray document gets a line in the report instead of vanishing silently.
    """
    root = Path(photos).expanduser()
    if not root.exists():
        raise CaptureError(
            f"The photos folder {root} does not exist; put your photos there or set photos_dir to where they are."
        )
    if root.is_file():
        return _zip_members(root, root.name) if root.suffix.lower() == ".zip" else [PhotoSource(root.name, root)]
    sources: list[PhotoSource] = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if not path.is_file() or _is_skipped(relative):
            continue
        sources.extend(_zip_members(path, relative) if path.suffix.lower() == ".zip" else [PhotoSource(relative, path)])
    if not sources:
        raise CaptureError(f"The photos folder {root} holds no files; put your photos there (JPEG, PNG, WebP or HEIC).")
    return sources
