"""Where a training writes while it runs, and how its result replaces the previous one: whole, or not at all.

`outputs/<run>/lora/` always holds one complete training: its LoRA files, `train_config.json`, `loss.csv`,
`checkpoints/` and `validation/` (or nothing yet). A training writes into the sibling folder
`outputs/<run>/lora.unfinished/` instead, checkpoints included, and only when its final export and
`train_config.json` are written is that folder renamed to `lora/` (`publish`). So

- a refused model, a crash, Ctrl-C or kill -9 leaves the previous result untouched, and never pairs the
  previous LoRA with the new run's checkpoints;
- `train_resume=True` continues the unfinished training from its newest intact checkpoint; resuming a
  finished training starts an unfinished folder from hard links to its checkpoints (no copying of weights);
- things in `lora/` that no training wrote (`class_images/`, a note of yours) move into the new result.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sdxlab import files
from sdxlab.train import checkpoint as ckpt
from sdxlab.train.config import COMMON_PARAMETERS
from sdxlab.train.history import write_loss_files

UNFINISHED_SUFFIX = ".unfinished"
# what a training writes besides the LoRA files named in train_config.json
RESULT_NAMES = ("checkpoints", "validation", "loss.csv", "loss.png", "validation_grid.png", "train_config.json")
CONFIG_FILE = "train_config.json"  # written last into the unfinished folder: it marks a complete result


def unfinished_dir(output_dir: Path) -> Path:
    """The folder a training works in until it is complete: `lora.unfinished` beside `lora`."""
    return output_dir.with_name(output_dir.name + UNFINISHED_SUFFIX)


def prepare(work_dir: Path, output_dir: Path, resume_from: Path | None, say: Callable[[str], None] = print) -> Path:
    """Make `work_dir` ready for a training that continues `resume_from` (a checkpoint folder) or starts fresh.

    Called once the model has loaded, so that nothing is discarded for a training that cannot even start.
    """
    if resume_from is not None and resume_from.parent.parent == work_dir:
        files.remove_stale_partials(work_dir)  # what a killed process left; checkpoints/ cleans its own
        files.remove_stale_partials(work_dir / "checkpoints")
        return work_dir
    if work_dir.exists():
        found = ckpt.list_checkpoints(work_dir / "checkpoints")
        if found:
            say(
                f"Discarding the unfinished training in {work_dir} (newest checkpoint {found[-1][1].name}): "
                "this training starts over (train_resume=False)."
            )
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True)
    if resume_from is not None:  # continuing a finished training: start from its files, as hard links
        source = resume_from.parent.parent
        step = int(ckpt.STEP_FOLDER.match(resume_from.name).group(1))
        for number, folder in ckpt.list_checkpoints(source / "checkpoints"):
            if number <= step:
                shutil.copytree(folder, work_dir / "checkpoints" / folder.name, copy_function=_link_or_copy)
        if (source / "validation").is_dir():
            shutil.copytree(source / "validation", work_dir / "validation", copy_function=_link_or_copy)
        if (source / "loss.csv").is_file():
            _link_or_copy(source / "loss.csv", work_dir / "loss.csv")
    return work_dir


def publish(work_dir: Path, output_dir: Path) -> Path:
    """Replace `output_dir` by the complete training in `work_dir`, carrying over what no training wrote."""
    if not (work_dir / CONFIG_FILE).is_file():
        raise RuntimeError(
            f"{work_dir} holds no {CONFIG_FILE}: it is not a complete training; this is a bug in sdxlab."
        )
    files.remove_stale_partials(work_dir)
    if output_dir.is_dir():
        written_by_training = result_names(output_dir) | result_names(work_dir)
        for entry in output_dir.iterdir():
            if entry.name in written_by_training or files.is_partial(entry) or (work_dir / entry.name).exists():
                continue
            os.replace(entry, work_dir / entry.name)  # class_images/, or anything a person put there
    return files.publish_folder(work_dir, output_dir)


def result_names(folder: Path) -> set[str]:
    """The names in a LoRA folder that its training wrote (the fixed ones plus the files train_config.json names)."""
    names = set(RESULT_NAMES)
    try:
        config = json.loads((folder / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return names
    names |= {
        config[key]
        for key in ("lora_file", "kohya_file", "embeddings_file")
        if isinstance(config.get(key), str) and Path(config[key]).name == config[key]
    }
    return names


def _link_or_copy(source, target) -> None:
    """A hard link where the file system allows it (checkpoint files are never changed in place), else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


# --- the files a training writes besides the LoRA -------------------------------------------------------


def config_json(config, data_hash: str, batch_size: int) -> dict[str, Any]:
    """train_config.json's parameters, named as the notebook's parameters cell names them."""
    values = config.to_dict()
    out: dict[str, Any] = {key: values[key] for key in COMMON_PARAMETERS}
    out.update({f"train_{key}": value for key, value in values.items() if key not in COMMON_PARAMETERS})
    out["train_batch_size_used"] = batch_size
    out["dataset_hash"] = data_hash
    return out


def finish(work_dir: Path, output_dir: Path, values: dict[str, Any], history: list[dict[str, float]]) -> Path:
    """Write the loss files and train_config.json (last: it marks the folder complete), then publish."""
    write_loss_files(work_dir, history)
    files.write_json(work_dir / CONFIG_FILE, values)
    return publish(work_dir, output_dir)  # the new training replaces the previous one whole


def train_config_values(
    config,
    data_hash: str,
    batch_size: int,
    exported,
    wall_seconds: float,
    cost: str,
    history: list[dict[str, float]],
    processes: int,
) -> dict[str, Any]:
    """train_config.json: the parameters (`config_json`), the files exported, and how the training went."""
    values = config_json(config, data_hash, batch_size)
    values.update(
        lora_file=exported.diffusers.name,
        kohya_file=exported.kohya.name,
        embeddings_file=exported.embeddings.name if exported.embeddings else None,
        tokens=config.token_strings,
        dataset_hash=data_hash,
        wall_seconds=round(wall_seconds, 1),
        cost=cost,
        final_loss=history[-1]["loss"] if history else None,
        processes=processes,
    )
    return values
