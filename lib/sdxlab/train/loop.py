"""`train(config)`: the whole DreamBooth-LoRA run, top to bottom, in the order its sections are numbered.

1. check the input (config, dataset, resume point) and start the processes (`parallel`) before any model work;
2. load the model; add pivotal tokens (`pivotal`); generate class images if prior preservation is on (`prior`),
   cache latents (and mirror images) and tokenised captions, then move the VAE off the GPU (`cache`);
3. attach LoRA (`lora`); the text side's phases (`pivotal.TextPhases`: when the captions' encodings are cached
   and the text encoders leave the GPU); the step's math (`step.TrainingStep`); resume the weights;
4. pick the batch size (`memory`); build optimiser, schedule and loss scaler (`optim.Optimization`) and the
   checkpoints' writer (`checkpoint.Checkpointer`); resume their states and the loss history (`history`);
5. the loop: draw a batch, noise it, predict, weigh the error, step — with checkpoints, validation images
   (`validation`), a progress bar and a loss curve;
6. export the LoRA in diffusers and kohya formats (`export`), write train_config.json, loss.csv, loss.png and
   the cost, and publish (`publish`).

Everything is written into `lora.unfinished/` and replaces `lora/` whole at the end (`publish`), so a training
that fails or is interrupted never touches the previous result.

Data parallelism: `accelerate launch --multi_gpu --num_processes N -m sdxlab.train --profile sdxl --run <run>`
(or torchrun, or any script calling `train`) starts one process per GPU; every process trains on its own slice
of each batch and the LoRA gradients are averaged before each optimiser step, so N GPUs take N times the
samples per step. Every process draws the noise of the whole global batch and keeps its rows, so N processes
train the LoRA one process would train with an N-times batch. One process (CPU or one GPU) needs nothing special.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from sdxlab import models
from sdxlab.train import checkpoint as ckpt
from sdxlab.train import publish
from sdxlab.train.cache import Batches, prepare_views
from sdxlab.train.config import TrainConfig, TrainError
from sdxlab.train.data import dataset_hash, read_dataset
from sdxlab.train.export import cost_line, training_exporter
from sdxlab.train.graphed import choose_step_runner
from sdxlab.train.history import history_row
from sdxlab.train.lora import checkpoint_weights, load_adapters, parameter_groups, set_training_mode
from sdxlab.train.memory import batch_line, choose_batch_size, raise_if_out_of_memory
from sdxlab.train.optim import Optimization
from sdxlab.train.parallel import start_processes
from sdxlab.train.pivotal import TextPhases, new_token_embeddings
from sdxlab.train.step import TrainingStep
from sdxlab.train.validation import ValidationImage, validate_checkpoint


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (or a callback) stopped training; a checkpoint of the last finished step was saved first."""


@dataclass
class TrainEvent:
    """What callbacks receive: kind is "start", "step", "checkpoint" or "end"."""

    kind: str
    step: int  # optimizer steps finished
    steps: int
    loss: float | None
    learning_rate: float | None
    history: list[dict[str, float]]
    validation: list[ValidationImage]
    checkpoint: Path | None = None
    pipe: Any = None  # the pipeline being trained (its UNet carries the LoRA)
    # the last micro-batch: the noise and timesteps drawn and the views it used ((example, mirrored) pairs)
    noise: torch.Tensor | None = None
    timesteps: torch.Tensor | None = None
    views: list[tuple[int, bool]] = field(default_factory=list)


@dataclass
class TrainResult:
    lora_file: Path
    kohya_file: Path
    embeddings_file: Path | None
    config_file: Path
    loss_csv: Path
    loss_png: Path
    checkpoints: list[Path]
    history: list[dict[str, float]]
    validation: list[ValidationImage]
    wall_seconds: float
    cost: str
    batch_size: int

    @classmethod
    def published(
        cls, lora: Path, work_dir: Path, exported, history, validation, wall_seconds: float, cost: str, batch_size: int
    ) -> TrainResult:
        """The result as it lies in `lora/` once published (validation images moved there from `work_dir`)."""
        validation = [dataclasses.replace(image, path=lora / image.path.relative_to(work_dir)) for image in validation]
        return cls(
            lora_file=lora / exported.diffusers.name,
            kohya_file=lora / exported.kohya.name,
            embeddings_file=lora / exported.embeddings.name if exported.embeddings else None,
            config_file=lora / publish.CONFIG_FILE,
            loss_csv=lora / "loss.csv",
            loss_png=lora / "loss.png",
            checkpoints=[f for _, f in ckpt.list_checkpoints(lora / "checkpoints")],
            history=history,
            validation=validation,
            wall_seconds=wall_seconds,
            cost=cost,
            batch_size=batch_size,
        )


def train(config: TrainConfig, callbacks: Iterable[Callable[[TrainEvent], None]] = (), pipe=None) -> TrainResult:
    """Train a LoRA as `config` says and export it; see the module docstring for the order of things.

    `pipe`: an already loaded pipeline to train instead of loading `config.model` (it is modified: adapters
    and tokens are added, so use a fresh one per run).
    """
    started = time.perf_counter()

    # --- 1. everything that can be wrong with the input, before any model work -------------------------
    config.validate()
    examples = read_dataset(config.dataset_dir, config.resolution, need_masks=config.masked_loss)
    data_hash = dataset_hash(config.dataset_dir, examples)
    placement, processes = start_processes(config)
    device, dtype, main = processes.device, placement.dtype, processes.main  # only the main process reports
    show = config.progress and main
    autocast = None if dtype == torch.float32 else dtype  # bf16 / fp16: mixed precision
    # this training writes into work_dir (lora.unfinished/) and replaces config.output_dir only when complete
    work_dir = publish.unfinished_dir(config.output_dir)
    checkpoints_dir = work_dir / "checkpoints"
    resume = ckpt.resume_point_for(config, work_dir, data_hash, processes.index, say=processes.say)

    # --- 2. the model, the subject's new tokens (pivotal tuning), the caches --------------------------------
    if pipe is None:
        pipe = models.load_pipeline(config.model, device=device, dtype=dtype, allow_pickle=config.allow_pickle)
    pipe.set_progress_bar_config(disable=True)
    if main:  # the model loaded: only now is an earlier unfinished training set aside (or continued)
        publish.prepare(work_dir, config.output_dir, resume.folder if resume else None)
    processes.wait()
    new_tokens = new_token_embeddings(pipe, config)  # None without pivotal tuning
    # class images, every image through the VAE once, every caption tokenised once; then the VAE leaves the GPU
    captions, views, class_views = prepare_views(pipe, config, examples, processes.accelerator, device, show)

    # --- 3. LoRA, the text side's phases, the step's math; resume the weights ------------------------------
    torch.manual_seed(config.seed)  # LoRA initialisation and dropout
    groups = parameter_groups(pipe, config, new_tokens)
    trainable = [p for group in groups for p in group["params"]]
    text = TextPhases.of(pipe, config, captions, new_tokens, dtype, autocast, device)
    batches = Batches(views, class_views, text.encode, config.masked_loss, device)
    math_of = TrainingStep.of(pipe, config, autocast, device, processes.count, processes.index)
    set_training_mode(pipe, config.text_encoder)
    start_step = resume.step if resume else 0
    if resume:
        load_adapters(pipe, ckpt.split_adapters(resume.adapters), config.text_encoder, new_tokens)
    text.end_phases(start_step)

    # --- 4. batch size, optimiser, schedule, loss scaler, checkpoints; resume their states ----------------
    batch_size, checkpointing = choose_batch_size(config, resume, pipe, batches, math_of, trainable, processes)
    if show:
        print(batch_line(batch_size, checkpointing, config, processes.count, len(views), len(examples)))
    optimization = Optimization.build(groups, config, device, dtype)
    noise_generator = torch.Generator(device).manual_seed(config.seed)  # the same stream in every process
    train_seconds, history = 0.0, []
    if resume:
        train_seconds, history = ckpt.restore_training_state(resume, optimization, noise_generator, work_dir)
        if show:
            print(f"Resuming from {resume.folder} (step {start_step} of {config.steps}).")
    export = training_exporter(pipe, config, data_hash, batch_size, new_tokens)  # checkpoints' and final files
    adapters = functools.partial(checkpoint_weights, pipe, config.text_encoder, new_tokens)  # what trains, now
    info = ckpt.training_info(config, data_hash, batch_size, checkpointing, processes.count)  # checkpoint.json
    checkpointer = ckpt.Checkpointer(
        checkpoints_dir, processes.accelerator, trainable, optimization, adapters, export, info, config.keep_checkpoints
    )
    validation: list[ValidationImage] = []
    report = _Report(list(callbacks) if main else [], config.steps, history, validation, pipe)
    report("start", start_step)

    # --- 5. the loop --------------------------------------------------------------------------------------
    accumulation = config.gradient_accumulation
    samples_per_step = batch_size * accumulation * processes.count
    last_saved = step = start_step
    seconds_at_start = train_seconds
    boundary_rng = ckpt.capture_rng(noise_generator)  # the RNGs as they are between two steps: what a checkpoint keeps
    # train_cuda_graph: on a GPU, each step's forward and backward replay from a CUDA graph (None: eager)
    captured = choose_step_runner(
        config, pipe.unet, math_of.noise_scheduler, trainable, autocast, device, optimization.scaler.is_enabled(), show
    )
    try:
        with tqdm(total=config.steps, initial=start_step, desc="training", unit="step", disable=not show) as bar:
            while step < config.steps:
                step_started = time.perf_counter()
                text.end_phases(step)  # pivotal tuning over, or nothing on the text side trains: encodings cached
                optimization.zero_grad()
                step_loss = torch.zeros((), device=device)
                for micro in range(accumulation):
                    # where this micro-batch starts in the endless shuffled stream of views, process by process
                    position = ((step * accumulation + micro) * processes.count + processes.index) * batch_size
                    indices, class_indices = batches.indices(config.seed, position, batch_size)
                    batch = batches.make(indices, class_indices)
                    if captured is not None:  # the same forward and backward, replayed from a CUDA graph
                        loss, noise, timesteps = captured.forward_backward(batch, noise_generator, draw=math_of.draw)
                    else:
                        loss, noise, timesteps = math_of.loss(batch, noise_generator)
                        optimization.backward(loss / accumulation)
                    step_loss += loss.detach() / accumulation
                processes.average_gradients(trainable)
                optimization.unscale()  # clip the true gradients, not fp16's scaled ones
                if config.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
                step_loss = processes.mean(step_loss)
                if not math.isfinite(step_loss):  # stop before a bad step reaches the weights
                    raise TrainError(ckpt.nonfinite_message(f"a loss of {step_loss}", step + 1, checkpoints_dir))
                with _interrupts_deferred():  # never leave an optimizer step half applied
                    learning_rate = optimization.step()
                    step += 1
                    boundary_rng = ckpt.capture_rng(noise_generator)
                train_seconds += time.perf_counter() - step_started
                samples_per_s = (step - start_step) * samples_per_step / max(train_seconds - seconds_at_start, 1e-9)
                history.append(history_row(step, step_loss, learning_rate, samples_per_s, train_seconds))
                bar.update(1)
                bar.set_postfix(loss=f"{step_loss:.4f}", samples_s=f"{samples_per_s:.2f}", refresh=False)
                seen = [views.described[i] for i in indices]  # the last micro-batch's (example, mirrored) pairs
                report("step", step, step_loss, learning_rate, noise=noise, timesteps=timesteps, views=seen)
                if step % config.checkpoint_every == 0 or step == config.steps:
                    folder = checkpointer.save(step, boundary_rng, train_seconds, history)
                    last_saved = step
                    if main:
                        validate_checkpoint(pipe, config, step, text, validation, work_dir)
                    report("checkpoint", step, step_loss, learning_rate, checkpoint=folder)
    except KeyboardInterrupt:  # the progress bar is closed by now
        saved = step > last_saved  # the last finished step has no checkpoint yet: save one before stopping
        folder = checkpointer.save(step, boundary_rng, train_seconds, history) if saved else None
        raise TrainingInterrupted(_interrupted_message(config, step, saved, folder, checkpoints_dir)) from None
    except Exception as error:
        raise_if_out_of_memory(error, batch_size, config.resolution, checkpointing)
        raise

    # --- 6. export, configuration, loss curve, cost; publish: lora.unfinished/ becomes lora/ ------------------
    result = None
    if main:
        wall_seconds = time.perf_counter() - started
        result = _export_and_publish(
            config, work_dir, export, data_hash, batch_size, history, validation, wall_seconds, processes.count
        )
        report("end", step, history[-1]["loss"] if history else None, validation=result.validation)
    processes.wait()
    return result


# --- helpers of the loop, in the order the loop uses them ------------------------------------------------


@dataclass
class _Report:
    """Sends a `TrainEvent` to every callback (the main process's; the others have none)."""

    callbacks: list[Callable[[TrainEvent], None]]
    steps: int
    history: list[dict[str, float]]
    validation: list[ValidationImage]
    pipe: Any

    def __call__(self, kind: str, step: int, loss: float | None = None, learning_rate: float | None = None, **extra):
        validation = extra.pop("validation", self.validation)
        event = TrainEvent(
            kind, step, self.steps, loss, learning_rate, self.history, validation, pipe=self.pipe, **extra
        )
        for callback in self.callbacks:
            callback(event)


@contextlib.contextmanager
def _interrupts_deferred():
    """Hold Ctrl-C until the block is done (only the main thread receives signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda number, frame: received.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def _interrupted_message(
    config: TrainConfig, step: int, saved: bool, folder: Path | None, checkpoints_dir: Path
) -> str:
    if saved:
        where = f"a checkpoint of step {step} was saved to {folder}"
    else:
        where = (
            f"the checkpoint of step {step} is in {checkpoints_dir}" if step else "nothing was saved (no step finished)"
        )
    kept = (
        f"; the last finished training in {config.output_dir} is unchanged"
        if (config.output_dir / publish.CONFIG_FILE).is_file()
        else ""
    )
    return (
        f"Training interrupted at step {step} of {config.steps}; {where}{kept}; "
        "run again with train_resume=True to continue."
    )


def _export_and_publish(
    config, work_dir, export_to, data_hash, batch_size, history, validation, wall_seconds, processes
) -> TrainResult:
    """Step 6 on the main process: the final export, the loss files and train_config.json (last: it marks the
    folder complete), the cost line; then `lora.unfinished/` replaces `lora/` whole."""
    cost = cost_line(wall_seconds, config.gpu_price_per_hour or None)
    exported = export_to(work_dir)
    values = publish.train_config_values(
        config, data_hash, batch_size, exported, wall_seconds, cost, history, processes
    )
    lora = publish.finish(work_dir, config.output_dir, values, history)  # replaces the previous training whole
    print(cost)
    return TrainResult.published(lora, work_dir, exported, history, validation, wall_seconds, cost, batch_size)
