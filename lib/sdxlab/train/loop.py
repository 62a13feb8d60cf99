"""`train(config)`: the whole DreamBooth-LoRA run, top to bottom, in the order its sections are numbered.

1. check the input (config, dataset, resume point) before any model is loaded;
2. load the model; add pivotal tokens; generate class images if prior preservation is on (`prior`);
3. cache latents (and mirror images) and tokenised captions, then move the VAE off the GPU (`cache`);
4. attach LoRA (`lora`); the text side's phases (`pivotal.TextPhases`: when the captions' encodings are cached
   and the text encoders leave the GPU); the step's math (`step.TrainingStep`); resume the weights;
5. pick the batch size (`memory`); build optimiser, schedule and loss scaler (`optim`) and the checkpoints'
   writer (`checkpoint.Checkpointer`); resume their states;
6. the loop: draw a batch, noise it, predict, weigh the error, step — with checkpoints, validation images,
   a progress bar and a loss curve;
7. export the LoRA in diffusers and kohya formats (`export`), write train_config.json, loss.csv, loss.png and
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

from sdxlab.train import checkpoint as ckpt
from sdxlab.train import publish
from sdxlab.train.cache import Batches, build_caches
from sdxlab.train.config import TrainConfig, TrainError
from sdxlab.train.data import dataset_hash, read_dataset
from sdxlab.train.graphed import choose_step_runner
from sdxlab.train.lora import adapter_state, load_adapters, parameter_groups
from sdxlab.train.memory import (
    agree_across_processes,
    batch_line,
    batch_size_and_checkpointing,
    enable_gradient_checkpointing,
    probe,
    raise_if_out_of_memory,
)
from sdxlab.train.optim import build_optimizer, build_schedule
from sdxlab.train.pivotal import NewTokenEmbeddings, TextPhases, replace_subject
from sdxlab.train.prior import class_examples_for
from sdxlab.train.step import TrainingStep
from sdxlab.train.validation import ValidationImage, fill_prompt, render_validation


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
    from accelerate import Accelerator
    from diffusers import DDPMScheduler

    from sdxlab.models import choose_placement, load_pipeline
    from sdxlab.train.export import cost_line, training_exporter

    started = time.perf_counter()

    # --- 1. everything that can be wrong with the input, before any model work -------------------------
    config.validate()
    examples = read_dataset(config.dataset_dir, config.resolution, need_masks=config.masked_loss)
    data_hash = dataset_hash(config.dataset_dir, examples)
    if config.device.startswith("cuda") and not torch.cuda.is_available():
        raise TrainError('device=\'cuda\' but no CUDA GPU is visible to PyTorch; use device="auto" or "cpu".')
    placement = choose_placement(config.device, None if config.precision == "auto" else config.precision)
    accelerator = Accelerator(cpu=placement.device.type == "cpu")
    device, main, processes = accelerator.device, accelerator.is_main_process, accelerator.num_processes
    callbacks = list(callbacks) if main else []  # only the main process reports
    autocast_dtype = None if placement.dtype == torch.float32 else placement.dtype
    show = config.progress and main
    # this training writes into work_dir (lora.unfinished/) and replaces config.output_dir only when complete
    work_dir = publish.unfinished_dir(config.output_dir)
    checkpoints_dir = work_dir / "checkpoints"
    resume = ckpt.resume_point_for(
        config, work_dir, data_hash, accelerator.process_index, say=print if main else _quiet
    )

    # --- 2. the model, the subject's tokens, class images ------------------------------------------------
    if pipe is None:
        pipe = load_pipeline(config.model, device=device, dtype=placement.dtype, allow_pickle=config.allow_pickle)
    pipe.set_progress_bar_config(disable=True)
    if main:  # the model loaded: only now is an earlier unfinished training set aside (or continued)
        publish.prepare(work_dir, config.output_dir, resume.folder if resume else None)
    accelerator.wait_for_everyone()
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)  # the forward process SDXL was trained with
    tokens = config.token_strings
    new_tokens = (
        NewTokenEmbeddings(pipe, tokens, torch.Generator().manual_seed(config.seed)) if config.pivotal_tuning else None
    )
    caption_texts = [replace_subject(example.caption, config.subject_token, tokens) for example in examples]
    validation_prompts = [fill_prompt(p, tokens, config.class_word) for p in config.validation_prompts]
    try:
        class_examples = class_examples_for(pipe, config, accelerator, device)

        # --- 3. caches: every image through the VAE once, every caption through the text encoders once ------
        captions, views, class_views = build_caches(
            pipe,
            examples,
            caption_texts,
            class_examples,
            config.resolution,
            config.flip,
            config.masked_loss,
            device,
            progress=show,
        )
        pipe.vae.to("cpu" if device.type != "cpu" else device)  # only validation images need it again
    except Exception as error:
        raise_if_out_of_memory(error, 1, config.resolution, False)
        raise

    # --- 4. LoRA, the text side's phases, the step's math; resume the weights ------------------------------
    torch.manual_seed(config.seed)  # LoRA initialisation and dropout
    unet, text_encoders = pipe.unet, [pipe.text_encoder, pipe.text_encoder_2]
    groups = parameter_groups(pipe, config, new_tokens)
    trainable = [p for group in groups for p in group["params"]]
    text = TextPhases(
        pipe,
        captions,
        new_tokens,
        config.text_encoder,
        config.pivotal_steps,
        validation_prompts,
        placement.dtype,
        autocast_dtype,
        device,
    )
    batches = Batches(views, class_views, text.encode, config.masked_loss, device)
    math_of = TrainingStep(
        unet,
        noise_scheduler,
        config.noise_offset,
        config.min_snr_gamma,
        config.prior_loss_weight,
        autocast_dtype,
        device,
        processes,
        accelerator.process_index,
    )
    unet.train()
    for encoder in text_encoders:
        encoder.train(config.text_encoder)
    start_step = resume.step if resume else 0
    if resume:
        load_adapters(pipe, ckpt.split_adapters(resume.adapters), config.text_encoder, new_tokens)
    text.end_phases(start_step)

    # --- 5. batch size, optimiser, schedule, loss scaler, checkpoints; resume their states ----------------
    enable_checkpointing = functools.partial(enable_gradient_checkpointing, unet, text_encoders, config.text_encoder)
    batch_size, checkpointing = batch_size_and_checkpointing(
        config,
        resume.info if resume else None,
        device,
        len(views),
        enable_checkpointing=enable_checkpointing,
        try_batch=lambda size: probe(size, batches.make, math_of.loss, trainable, class_views is not None, device),
    )
    batch_size, checkpointing = agree_across_processes(accelerator, batch_size, checkpointing, enable_checkpointing)
    if show:
        print(
            batch_line(
                batch_size,
                config.gradient_accumulation,
                processes,
                checkpointing,
                len(views),
                len(examples),
                config.flip,
            )
        )
    optimizer = build_optimizer(groups, config, device)
    schedule = build_schedule(optimizer, config)
    scaler = torch.amp.GradScaler(device.type, enabled=placement.dtype == torch.float16)  # fp16 needs loss scaling
    noise_generator = torch.Generator(device).manual_seed(config.seed)  # the same stream in every process
    history: list[dict[str, float]] = []
    train_seconds = 0.0
    if resume:
        train_seconds = ckpt.restore_training_state(resume, optimizer, schedule, scaler, noise_generator)
        history = publish.read_history(work_dir / "loss.csv", start_step)
        if show:
            print(f"Resuming from {resume.folder} (step {start_step} of {config.steps}).")
    export_to = training_exporter(
        pipe, config, publish.config_json(config, data_hash, batch_size), data_hash, new_tokens
    )
    checkpointer = ckpt.Checkpointer(
        checkpoints_dir,
        accelerator,
        trainable,
        optimizer,
        schedule,
        scaler,
        export=export_to,
        adapters=lambda: ckpt.join_adapters(adapter_state(pipe, config.text_encoder, new_tokens)),
        info={
            "fingerprint": ckpt.fingerprint_json(config),
            "dataset_hash": data_hash,
            "batch_size": batch_size,
            "gradient_checkpointing": checkpointing,
            "processes": processes,
        },
        keep=config.keep_checkpoints,
        after=functools.partial(publish.write_loss_files, work_dir),
    )
    validation: list[ValidationImage] = []
    _emit(callbacks, TrainEvent("start", start_step, config.steps, None, None, history, validation, pipe=pipe))

    # --- 6. the loop --------------------------------------------------------------------------------------
    samples_per_step = batch_size * config.gradient_accumulation * processes
    last_saved = step = start_step
    seconds_at_start = train_seconds
    boundary_rng = ckpt.capture_rng(noise_generator)  # the RNGs as they are between two steps
    captured = choose_step_runner(
        config,
        unet,
        noise_scheduler,
        trainable,
        autocast_dtype,
        device,  # train_cuda_graph
        loss_scaling=scaler.is_enabled(),
        show=show,
    )
    bar = tqdm(total=config.steps, initial=start_step, desc="training", unit="step", disable=not show)
    try:
        while step < config.steps:
            step_started = time.perf_counter()
            text.end_phases(step)
            optimizer.zero_grad(set_to_none=True)
            step_loss = torch.zeros((), device=device)
            for micro in range(config.gradient_accumulation):
                # position of this micro-batch in the endless shuffled stream, process by process
                position = (
                    (step * config.gradient_accumulation + micro) * processes + accelerator.process_index
                ) * batch_size
                indices, class_indices = batches.indices(config.seed, position, batch_size)
                batch = batches.make(indices, class_indices)
                if captured is not None:  # the same forward and backward, replayed from a CUDA graph
                    loss, noise, timesteps = captured.forward_backward(batch, noise_generator, draw=math_of.draw)
                else:
                    loss, noise, timesteps = math_of.loss(batch, noise_generator)
                    scaler.scale(loss / config.gradient_accumulation).backward()
                step_loss += loss.detach() / config.gradient_accumulation
            _average_gradients(trainable, accelerator)
            scaler.unscale_(optimizer)
            if config.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
            step_loss = accelerator.reduce(step_loss, reduction="mean").item()
            if not math.isfinite(step_loss):
                raise TrainError(ckpt.nonfinite_message(f"a loss of {step_loss}", step + 1, checkpoints_dir))
            with _interrupts_deferred():  # never leave an optimizer step half applied
                scaler.step(optimizer)
                scaler.update()
                # the step size: the schedule's learning rate, times Prodigy's own estimate d where it has one
                learning_rate = schedule.get_last_lr()[0] * optimizer.param_groups[0].get("d", 1.0)
                schedule.step()
                step += 1
                boundary_rng = ckpt.capture_rng(noise_generator)

            train_seconds += time.perf_counter() - step_started
            samples_per_s = (step - start_step) * samples_per_step / max(train_seconds - seconds_at_start, 1e-9)
            history.append(
                {
                    "step": step,
                    "loss": step_loss,
                    "lr": learning_rate,
                    "samples_per_s": samples_per_s,
                    "elapsed_s": train_seconds,
                }
            )
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.4f}", samples_s=f"{samples_per_s:.2f}", refresh=False)
            _emit(
                callbacks,
                TrainEvent(
                    "step",
                    step,
                    config.steps,
                    step_loss,
                    learning_rate,
                    history,
                    validation,
                    pipe=pipe,
                    noise=noise,
                    timesteps=timesteps,
                    views=[views.described[i] for i in indices],
                ),
            )

            if step % config.checkpoint_every == 0 or step == config.steps:
                folder = checkpointer.save(step, boundary_rng, train_seconds, history)
                last_saved = step
                if main and validation_prompts and config.validation_seeds:
                    validation += render_validation(
                        pipe,
                        step,
                        validation_prompts,
                        text.validation(step),
                        config.validation_seeds,
                        config.resolution,
                        config.validation_steps,
                        config.validation_guidance,
                        work_dir / "validation",
                    )
                    publish.write_validation_grid(work_dir, validation)
                _emit(
                    callbacks,
                    TrainEvent(
                        "checkpoint",
                        step,
                        config.steps,
                        step_loss,
                        learning_rate,
                        history,
                        validation,
                        checkpoint=folder,
                        pipe=pipe,
                    ),
                )
    except KeyboardInterrupt:
        bar.close()
        saved = step > last_saved  # the last finished step has no checkpoint yet: save one before stopping
        folder = checkpointer.save(step, boundary_rng, train_seconds, history) if saved else None
        raise TrainingInterrupted(_interrupted_message(config, step, saved, folder, checkpoints_dir)) from None
    except Exception as error:
        bar.close()
        raise_if_out_of_memory(error, batch_size, config.resolution, checkpointing)
        raise
    bar.close()

    # --- 7. export, configuration, loss curve, cost; publish ----------------------------------------------
    wall_seconds = time.perf_counter() - started
    cost = cost_line(wall_seconds, config.gpu_price_per_hour or None)
    result = None
    if main:
        exported = export_to(work_dir)
        values = publish.train_config_values(
            config, data_hash, batch_size, exported, tokens, wall_seconds, cost, history, processes
        )
        lora = publish.finish(work_dir, config.output_dir, values, history)  # replaces the previous training whole
        print(cost)
        result = TrainResult.published(lora, work_dir, exported, history, validation, wall_seconds, cost, batch_size)
        _emit(
            callbacks,
            TrainEvent(
                "end",
                step,
                config.steps,
                history[-1]["loss"] if history else None,
                None,
                history,
                result.validation,
                pipe=pipe,
            ),
        )
    accelerator.wait_for_everyone()
    return result


# --- helpers of the loop, in the order the loop uses them ------------------------------------------------


def _quiet(message: str) -> None:
    """Where processes other than the main one send what the main one prints."""


def _emit(callbacks: list[Callable[[TrainEvent], None]], event: TrainEvent) -> None:
    for callback in callbacks:
        callback(event)


def _average_gradients(parameters: list[torch.nn.Parameter], accelerator) -> None:
    """Data parallelism: every process computed gradients on its own images; use their mean everywhere."""
    if accelerator.num_processes == 1:
        return
    with_grad = [p for p in parameters if p.grad is not None]
    flat = torch.cat([p.grad.flatten() for p in with_grad])
    flat = accelerator.reduce(flat, reduction="mean")
    offset = 0
    for parameter in with_grad:
        count = parameter.grad.numel()
        parameter.grad.copy_(flat[offset : offset + count].view_as(parameter.grad))
        offset += count


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
