"""Checkpoints: everything needed to continue a run exactly, written so that a half-written one never exists.

`checkpoints/step_NNNNNN/` holds
- the LoRA as exported at that step (`<lora_name>.safetensors`, `_kohya`, `_emb`): any checkpoint can be
  sampled like the final LoRA;
- `adapters.safetensors`: the trainable weights exactly as the trainer holds them (peft names), for resuming;
- `training_state.pt`: optimiser, learning-rate schedule and loss-scaler states (loaded with weights_only);
- `rng_<process>.pt`: the random-number generators' states at the start of the next step;
- `checkpoint.json`: the step, the batch size actually used, and the parameters resuming must not change.

The folder is written under a temporary name and renamed when complete (rename is atomic), and
`checkpoint.json` is written last, so only complete checkpoints are ever found. A checkpoint damaged later
(a truncated file, a full disk while copying) is named when resuming, and the newest intact one is used instead.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from sdxlab import files
from sdxlab.train.config import TrainConfig, TrainError
from sdxlab.train.history import read_history, write_loss_files

STEP_FOLDER = re.compile(r"^step_(\d{6,})$")
ADAPTERS_FILE = "adapters.safetensors"
STATE_FILE = "training_state.pt"
INFO_FILE = "checkpoint.json"


def checkpoint_name(step: int) -> str:
    return f"step_{step:06d}"


def list_checkpoints(checkpoints_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first."""
    if not checkpoints_dir.is_dir():
        return []
    found = []
    for folder in checkpoints_dir.iterdir():
        match = STEP_FOLDER.match(folder.name)
        if match and (folder / INFO_FILE).is_file():
            found.append((int(match.group(1)), folder))
    return sorted(found)


def read_info(folder: Path) -> dict[str, Any]:
    return json.loads((folder / INFO_FILE).read_text())


def check_resumable(folder: Path, config: TrainConfig, dataset_hash: str) -> dict[str, Any]:
    """The checkpoint's info, after checking that resuming from it gives the run these parameters describe."""
    info = read_info(folder)
    saved, current = info["fingerprint"], fingerprint_json(config)
    changed = sorted(key for key in set(saved) | set(current) if saved.get(key) != current.get(key))
    if changed:
        first = changed[0]
        more = f" (and {len(changed) - 1} more: {', '.join(changed[1:])})" if len(changed) > 1 else ""
        raise TrainError(
            f"Cannot resume from {folder}: {first} was {saved.get(first)!r} and is now "
            f"{current.get(first)!r}{more}; use the same values, or set train_resume=False to start over."
        )
    if info["dataset_hash"] != dataset_hash:
        raise TrainError(
            f"Cannot resume from {folder}: the dataset changed since that checkpoint; "
            "set train_resume=False to start over on the new dataset."
        )
    return info


def fingerprint_json(config: TrainConfig) -> dict[str, Any]:
    """The parameters resuming must not change, as checkpoint.json stores them."""
    return json.loads(json.dumps(config.fingerprint(), default=str))


def begin_checkpoint(checkpoints_dir: Path, step: int) -> Path:
    """A fresh, empty staging folder for the checkpoint of `step` (every process then writes its RNG file)."""
    staging = checkpoints_dir / f".{checkpoint_name(step)}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def finish_checkpoint(
    staging: Path,
    step: int,
    adapters: dict[str, torch.Tensor],
    training_state: dict[str, Any],
    info: dict[str, Any],
    export: Callable[[Path], Any],
    keep: int,
) -> Path:
    """Fill the staging folder, rename it to step_NNNNNN/ and prune old checkpoints."""
    files.write_safetensors(staging / ADAPTERS_FILE, adapters)
    files.write_with(staging / STATE_FILE, lambda path: torch.save(training_state, path))
    export(staging)
    files.write_json(staging / INFO_FILE, {**info, "step": step})
    final = staging.parent / checkpoint_name(step)
    files.publish_folder(staging, final)
    prune(staging.parent, keep)
    return final


def save_rng(folder: Path, rng_states: dict[str, Any], process: int = 0) -> None:
    files.write_with(folder / f"rng_{process}.pt", lambda path: torch.save(rng_states, path))


def prune(checkpoints_dir: Path, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints (keep=0 keeps all)."""
    if keep > 0:
        for _, folder in list_checkpoints(checkpoints_dir)[:-keep]:
            shutil.rmtree(folder, ignore_errors=True)


class DamagedCheckpoint(TrainError):
    """A checkpoint file that cannot be read; the message names the file."""


def _read(path: Path, reader: Callable[[Path], Any]) -> Any:
    try:
        return reader(path)
    except Exception as error:
        detail = (str(error).strip().splitlines() or ["no details"])[0][:160]
        raise DamagedCheckpoint(f"Checkpoint file {path} is damaged ({type(error).__name__}: {detail})") from error


def load_checkpoint(folder: Path, process: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """(adapters, training_state, rng_states) of a checkpoint folder; DamagedCheckpoint names an unreadable file."""
    rng_file = folder / f"rng_{process}.pt"
    if not rng_file.is_file():
        raise TrainError(
            f"{folder} was written by fewer processes than this run has; resume with the same "
            "number of GPUs, or set train_resume=False to start over."
        )
    adapters = _read(folder / ADAPTERS_FILE, lambda path: load_file(str(path)))
    training_state = _read(folder / STATE_FILE, lambda path: torch.load(path, map_location="cpu", weights_only=True))
    rng_states = _read(rng_file, lambda path: torch.load(path, map_location="cpu", weights_only=True))
    return adapters, training_state, rng_states


@dataclass
class ResumePoint:
    """A checkpoint to continue from, already read (so a damaged file shows before any model is loaded)."""

    folder: Path
    info: dict[str, Any]
    adapters: dict[str, torch.Tensor]
    training_state: dict[str, Any]
    rng_states: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.info["step"])


def find_resume_point(
    checkpoint_dirs: Sequence[Path],
    config: TrainConfig,
    dataset_hash: str,
    process: int = 0,
    say: Callable[[str], None] = print,
) -> ResumePoint | None:
    """The newest intact checkpoint of the first of `checkpoint_dirs` that has one, or None if none has any.

    A damaged checkpoint is named in one sentence (through `say`) and skipped for the next older one; if every
    checkpoint is damaged, the error names the newest. The first intact checkpoint must have been made with
    these parameters (`check_resumable`).
    """
    candidates = [folder for folder_of in checkpoint_dirs for _, folder in reversed(list_checkpoints(folder_of))]
    damaged: list[DamagedCheckpoint] = []
    for folder in candidates:
        try:
            _read(folder / INFO_FILE, lambda path: json.loads(path.read_text()))
            adapters, training_state, rng_states = load_checkpoint(folder, process)
        except DamagedCheckpoint as error:
            damaged.append(error)
            continue
        info = check_resumable(folder, config, dataset_hash)
        if damaged:
            say(f"{damaged[0]}; resuming from {folder}, the newest intact checkpoint (step {info['step']}).")
        return ResumePoint(folder, info, adapters, training_state, rng_states)
    if damaged:
        raise TrainError(f"{damaged[0]}, and no earlier checkpoint is intact; set train_resume=False to start over.")
    return None


def split_adapters(adapters: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """{"unet/a.b": t, "embeddings/clip_l": e} -> {"unet": {"a.b": t}, "embeddings": {"clip_l": e}}."""
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in adapters.items():
        part, _, name = key.partition("/")
        parts.setdefault(part, {})[name] = value
    return parts


def join_adapters(parts: dict[str, dict[str, torch.Tensor] | None]) -> dict[str, torch.Tensor]:
    return {
        f"{part}/{name}": value.contiguous() for part, state in parts.items() if state for name, value in state.items()
    }


# --- random-number generator states -------------------------------------------------------------------


def capture_rng(noise_generator: torch.Generator) -> dict[str, Any]:
    """Every RNG the training step draws from: the noise/timestep generator and torch's global ones (dropout)."""
    states = {"noise": noise_generator.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng(states: dict[str, Any], noise_generator: torch.Generator) -> None:
    noise_generator.set_state(states["noise"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


# --- what the training loop calls -----------------------------------------------------------------------


def resume_point_for(
    config: TrainConfig, work_dir: Path, dataset_hash: str, process: int, say: Callable[[str], None]
) -> ResumePoint | None:
    """The checkpoint to resume from (the unfinished training's, else the finished one's), or None to start fresh."""
    if not config.resume:
        return None
    resume = find_resume_point(
        [work_dir / "checkpoints", config.output_dir / "checkpoints"], config, dataset_hash, process, say=say
    )
    if resume is None:
        say(
            f"train_resume=True but neither {work_dir} nor {config.output_dir} holds a checkpoint yet: "
            "starting from step 0."
        )
    return resume


def restore_training_state(
    resume: ResumePoint, optimization, noise_generator: torch.Generator, work_dir: Path
) -> tuple[float, list[dict[str, float]]]:
    """Put the optimiser, schedule, loss scaler (`optim.Optimization`) and RNGs back as they were; returns the
    training seconds so far and the loss history up to the checkpoint's step (from `work_dir`'s loss.csv)."""
    optimization.load_state_dict(resume.training_state)
    restore_rng(resume.rng_states, noise_generator)
    return float(resume.training_state.get("train_seconds", 0.0)), read_history(work_dir / "loss.csv", resume.step)


def training_info(config: TrainConfig, dataset_hash: str, batch_size: int, checkpointing: bool, processes: int):
    """checkpoint.json's description of the training (what a resume must match, and how it ran)."""
    return {
        "fingerprint": fingerprint_json(config),
        "dataset_hash": dataset_hash,
        "batch_size": batch_size,
        "gradient_checkpointing": checkpointing,
        "processes": processes,
    }


def nonfinite_message(what: str, step: int, checkpoints_dir: Path) -> str:
    found = list_checkpoints(checkpoints_dir)
    kept = (
        f"the last good checkpoint is {found[-1][1]} (train_resume=True continues from it)"
        if found
        else "no checkpoint was written yet"
    )
    return (
        f"Training stopped at step {step} with {what}; {kept}; try a lower train_learning_rate, "
        'train_precision="fp32", or a smaller train_noise_offset.'
    )


@dataclass
class Checkpointer:
    """Saves the checkpoints of one training (every process calls `save`; the main process writes the folder)."""

    checkpoints_dir: Path
    accelerator: Any
    trainable: list[torch.nn.Parameter]
    optimization: Any  # optim.Optimization: the optimiser, schedule and loss scaler
    adapters: Callable[[], dict[str, torch.Tensor]]  # the trainable weights now, joined (`join_adapters`)
    export: Callable[[Path], Any]  # writes the LoRA files into a folder
    info: dict[str, Any]  # checkpoint.json: fingerprint, dataset_hash, batch_size, gradient_checkpointing, processes
    keep: int

    def save(
        self, step: int, rng_states: dict[str, Any], train_seconds: float, history: list[dict[str, float]]
    ) -> Path | None:
        """The checkpoint of `step` (the folder on the main process, None on the others)."""
        if not all(torch.isfinite(p).all() for p in self.trainable):  # never let a bad step overwrite a good checkpoint
            raise TrainError(nonfinite_message("NaN or inf in the LoRA weights", step, self.checkpoints_dir))
        main = self.accelerator.is_main_process
        staging = begin_checkpoint(self.checkpoints_dir, step) if main else None
        self.accelerator.wait_for_everyone()
        staging = staging or self.checkpoints_dir / f".{checkpoint_name(step)}.partial"
        save_rng(staging, rng_states, self.accelerator.process_index)
        self.accelerator.wait_for_everyone()
        folder = None
        if main:
            state = {**self.optimization.state_dict(), "train_seconds": train_seconds}
            info = {**self.info, "loss": history[-1]["loss"] if history else None}
            folder = finish_checkpoint(staging, step, self.adapters(), state, info, self.export, self.keep)
            write_loss_files(self.checkpoints_dir.parent, history)  # loss.csv and loss.png, beside checkpoints/
        self.accelerator.wait_for_everyone()
        return folder
