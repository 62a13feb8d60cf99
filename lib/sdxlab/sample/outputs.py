"""What the sample stage writes: PNGs with their parameters, the samples.csv index and the grids' files
(the grids themselves are drawn by `sdxlab.sample.plots`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from sdxlab.files import save_figure, write_csv
from sdxlab.sample.infotext import write_png
from sdxlab.sample.sampler import GeneratedImage

SAMPLES_CSV = "samples.csv"
# docs/ARCHITECTURE.md's columns, in order; `model` (the base model) follows them.
CSV_COLUMNS = [
    "file",
    "prompt",
    "negative_prompt",
    "seed",
    "steps",
    "guidance",
    "width",
    "height",
    "scheduler",
    "lora_scale",
    "lora_file",
    "checkpoint",
    "model",
]


def save_samples(generated: Sequence[GeneratedImage], folder: str | os.PathLike, name: str = "batch") -> pd.DataFrame:
    """Write one PNG per image (`<name>_NNN_seedS.png`, parameters inside) and update `samples.csv`.

    A set is replaced as a whole: re-running a set removes its old PNGs and rows, other sets' stay (the
    batch, the LoRA-scale sweep and the playground share one folder and one index). Returns the set's rows.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not name or Path(name).name != name or "_" in name:
        raise ValueError(
            f"Sample set name {name!r} must be a plain word without '_' or folders (it prefixes file names)."
        )
    rows, written = [], set()
    for index, item in enumerate(generated):
        file_name = f"{name}_{index:03d}_seed{item.params['seed']}.png"
        write_png(folder / file_name, item.image, item.params)
        written.add(file_name)
        rows.append({"file": file_name, **{key: item.params.get(key, "") for key in CSV_COLUMNS[1:]}})
    for stale in folder.glob(f"{name}_*.png"):
        if stale.name not in written:
            stale.unlink()
    new_rows = pd.DataFrame(rows, columns=CSV_COLUMNS)
    index = read_samples(folder)
    if index is not None:
        index = index[~index["file"].astype(str).str.startswith(f"{name}_")]
        new_rows = pd.concat([index, new_rows], ignore_index=True) if len(index) else new_rows
    write_csv(folder / SAMPLES_CSV, new_rows)
    return pd.DataFrame(rows, columns=CSV_COLUMNS)


def read_samples(folder: str | os.PathLike) -> pd.DataFrame | None:
    """The samples.csv of a samples folder (None if there is none yet); empty prompts stay empty strings."""
    path = Path(folder) / SAMPLES_CSV
    if not path.is_file():
        return None
    return pd.read_csv(path, keep_default_na=False)


def save_grid(figure, folder: str | os.PathLike, name: str) -> Path:
    """Save a grid figure as `grid_<name>.png` in the samples folder."""
    return save_figure(Path(folder) / f"grid_{name}.png", figure)
