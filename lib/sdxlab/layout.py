"""Where things live: the project folder, the outputs folder and the folders of one run.

Data flows one way through one run folder: dataset/ -> lora/ -> samples/ -> metrics/ -> prompt_search/.
Every stage finds its inputs and writes its outputs through `RunLayout`, so no path is spelled twice.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

OUTPUTS_ENV = "SDXLAB_OUTPUTS"  # overrides the default outputs folder (tests point it at a temporary folder)
PROJECT_ENV = "SDXLAB_PROJECT"  # the checkout, for notebooks executed from a copy elsewhere (make test's nbmake run)
RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def project_root(start: str | os.PathLike | None = None) -> Path:
    """The sdxlab checkout: the nearest folder at or above `start` (default: the working folder) holding pyproject.toml and notebooks/.

    Without `start`, $SDXLAB_PROJECT names it when set: notebooks executed from a copy outside the checkout
    (as `make test` does, so the executed copies can be kept) still find data/ and env/ there.
    """
    if start is None and os.environ.get(PROJECT_ENV):
        return Path(os.environ[PROJECT_ENV]).expanduser().resolve()
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "notebooks").is_dir():
            return folder
    return here


def resolve_path(path: str | os.PathLike, start: str | os.PathLike | None = None) -> Path:
    """A path from a parameter: absolute as given, relative to the project folder otherwise.

    Notebooks run with their own folder as the working folder, papermill and the command line with another;
    resolving against the project folder makes `data/sample` mean the same thing everywhere.
    """
    path = Path(path).expanduser()
    return path if path.is_absolute() else project_root(start) / path


def outputs_root(outputs_dir: str | os.PathLike | None = None) -> Path:
    """The outputs folder: the parameter if given, else $SDXLAB_OUTPUTS, else <project>/outputs."""
    if outputs_dir:
        return resolve_path(outputs_dir)
    if os.environ.get(OUTPUTS_ENV):
        return Path(os.environ[OUTPUTS_ENV]).expanduser().resolve()
    return project_root() / "outputs"


@dataclass(frozen=True)
class RunLayout:
    """The folders and files of one run, `outputs/<run>/`."""

    root: Path

    @classmethod
    def for_run(cls, run: str, outputs_dir: str | os.PathLike | None = None) -> RunLayout:
        if not RUN_NAME.match(run):
            raise ValueError(f"Run name {run!r} is not usable as a folder name; use letters, digits, '.', '_' or '-'.")
        return cls(outputs_root(outputs_dir) / run)

    @property
    def dataset(self) -> Path:
        return self.root / "dataset"

    @property
    def lora(self) -> Path:
        return self.root / "lora"

    @property
    def samples(self) -> Path:
        return self.root / "samples"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics"

    @property
    def prompt_search(self) -> Path:
        return self.root / "prompt_search"

    @property
    def notebooks(self) -> Path:
        return self.root / "notebooks"

    def ensure(self, stage_folder: Path) -> Path:
        """Create a stage folder (and the run folder) if needed and return it."""
        stage_folder.mkdir(parents=True, exist_ok=True)
        return stage_folder
