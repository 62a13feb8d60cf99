"""`train(config)`: the whole DreamBooth-LoRA run, top to bottom.

1. check the input (config, dataset, resume point) before any model is loaded;
2. load the model; add pivotal tokens; generate class images if prior preservation is on;
3. cache latents (and mirror images) and caption embeddings, then move the VAE and text encoders off the GPU;
4. attach LoRA; pick the batch size; build optimiser, schedule and loss scaler; resume if asked;
5. the loop: draw a batch, noise it, predict, weigh the error, step — with checkpoints, validation images,
   a progress bar and a loss curve;
6. export the LoRA in diffusers and kohya formats, write train_config.json, loss.csv, loss.png and the cost.

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
import json
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

from sdxlab import files
from sdxlab.train import checkpoint as ckpt
from sdxlab.train import publish
from sdxlab.train.cache import Captions, build_views, view_indices
from sdxlab.train.conditioning import encode_tokens
from sdxlab.train.config import COMMON_PARAMETERS, TrainConfig, TrainError
from sdxlab.train.data import dataset_hash, read_dataset
from sdxlab.train.graphed import choose_step_runner
from sdxlab.train.lora import adapter_state, add_text_encoder_lora, add_unet_lora, load_lora_state
from sdxlab.train.memory import CPU_AUTO_BATCH, is_out_of_memory, largest_fitting_batch, out_of_memory_advice
from sdxlab.train.optim import build_optimizer, build_schedule
from sdxlab.train.pivotal import NewTokenEmbeddings, replace_subject
from sdxlab.train.step import Batch, diffusion_loss, draw_noise, draw_timesteps
from sdxlab.train.validation import ValidationImage, encode_validation_prompts, fill_prompt, render_validation


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


def train(config: TrainConfig, callbacks: Iterable[Callable[[TrainEvent], None]] = (), pipe=None) -> TrainResult:
    """Train a LoRA as `config` says and export it; see the module docstring for the order of things.

    `pipe`: an already loaded pipeline to train instead of loading `config.model` (it is modified: adapters
    and tokens are added, so use a fresh one per run).
    """
    from accelerate import Accelerator
    from diffusers import DDPMScheduler

    from sdxlab.models import choose_placement, load_pipeline
    from sdxlab.train.export import cost_line, export_training, training_metadata

    started = time.perf_counter()
    callbacks = list(callbacks)

    # --- 1. everything that can be wrong with the input, before any model work -------------------------
    config.validate()
    examples = read_dataset(config.dataset_dir, config.resolution, need_masks=config.masked_loss)
    data_hash = dataset_hash(config.dataset_dir, examples)
    if config.device.startswith("cuda") and not torch.cuda.is_available():
        raise TrainError("device='cuda' but no CUDA GPU is visible to PyTorch; use device=\"auto\" or \"cpu\".")
    placement = choose_placement(config.device, None if config.precision == "auto" else config.precision)
    accelerator = Accelerator(cpu=placement.device.type == "cpu")
    device, main = accelerator.device, accelerator.is_main_process
    autocast_dtype = None if placement.dtype == torch.float32 else placement.dtype
    show = config.progress and main
    # this training writes into work_dir (lora.unfinished/) and replaces config.output_dir only when complete
    work_dir = publish.unfinished_dir(config.output_dir)
    checkpoints_dir = work_dir / "checkpoints"
    resume = _find_resume_point(config, work_dir, data_hash, accelerator.process_index, say=print if main else _quiet)
    resume_info = resume.info if resume else None

    # --- 2. the model, the subject's tokens, class images ------------------------------------------------
    if pipe is None:
        pipe = load_pipeline(config.model, device=device, dtype=placement.dtype, allow_pickle=config.allow_pickle)
    pipe.set_progress_bar_config(disable=True)
    if main:  # the model loaded: only now is an earlier unfinished training set aside (or continued)
        publish.prepare(work_dir, config.output_dir, resume.folder if resume else None)
    accelerator.wait_for_everyone()
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)  # the forward process SDXL was trained with
    tokens = config.token_strings
    new_tokens = None
    if config.pivotal_tuning:
        new_tokens = NewTokenEmbeddings(pipe, tokens, torch.Generator().manual_seed(config.seed))
    caption_texts = [replace_subject(example.caption, config.subject_token, tokens) for example in examples]
    validation_prompts = [fill_prompt(p, tokens, config.class_word) for p in config.validation_prompts]
    try:
        class_examples = []
        if config.prior_preservation:
            from sdxlab.train.prior import class_examples as generate_class_examples

            with accelerator.main_process_first():  # one process generates, the others find them cached
                class_examples = generate_class_examples(pipe, config, config.output_dir / "class_images", device)

        # --- 3. caches: every image through the VAE once, every caption through the text encoders once ------
        captions = Captions.tokenized(pipe, sorted(set(caption_texts) | {e.caption for e in class_examples}))
        views = build_views(examples, [captions.texts.index(c) for c in caption_texts], pipe.vae, config.resolution,
                            config.flip, config.masked_loss, device, progress=show)
        class_views = None
        if class_examples:
            class_views = build_views(class_examples, [captions.texts.index(e.caption) for e in class_examples],
                                      pipe.vae, config.resolution, False, False, device, progress=show)
        pipe.vae.to("cpu" if device.type != "cpu" else device)  # only validation images need it again
    except Exception as error:
        _raise_if_out_of_memory(error, 1, config.resolution, False)
        raise

    # --- 4. LoRA, batch size, optimiser, schedule; resume -------------------------------------------------
    torch.manual_seed(config.seed)  # LoRA initialisation and dropout
    unet = pipe.unet
    parameter_groups = [{"params": add_unet_lora(unet, config)}]
    text_encoders = [pipe.text_encoder, pipe.text_encoder_2]
    if config.text_encoder:
        text_lr = config.text_encoder_lr if config.text_encoder_lr is not None else config.learning_rate
        for encoder in text_encoders:
            parameter_groups.append({"params": add_text_encoder_lora(encoder, config), "lr": text_lr})
    if new_tokens is not None:
        parameter_groups.append({"params": list(new_tokens.parameters()), "lr": config.embedding_lr, "weight_decay": 0.0})
    trainable = [p for group in parameter_groups for p in group["params"]]

    def text_is_live(step: int) -> bool:
        """Whether the text encoders run every step (they train), or their cached output is used."""
        return config.text_encoder or step < config.pivotal_steps

    validation_encoded = None

    def end_text_phases(step: int) -> None:
        """Freeze what stops training at `step`: the new token embeddings, then (unless they train) the encoders."""
        nonlocal validation_encoded
        if new_tokens is not None and step >= config.pivotal_steps and not new_tokens.frozen:
            new_tokens.freeze(pipe)  # pivotal tuning is over: the new embeddings are final
        if text_is_live(step) or captions.prompt_embeds is not None:
            return
        # nothing on the text side trains any more: encode the captions once and free the encoders
        captions.encode_all(pipe, device)
        if validation_prompts:
            validation_encoded = encode_validation_prompts(pipe, validation_prompts, placement.dtype)
        for encoder in text_encoders:
            encoder.to("cpu" if device.type != "cpu" else device)
        if device.type == "cuda":
            torch.cuda.empty_cache()

    def text_for(caption_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if captions.prompt_embeds is not None:
            return captions.prompt_embeds[caption_ids], captions.pooled[caption_ids]
        ids = [token_ids[caption_ids.cpu()] for token_ids in captions.token_ids]
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            return encode_tokens(text_encoders, ids)

    def make_batch(indices: list[int], class_indices: list[int]) -> Batch:
        rows = torch.tensor(indices, device=device)
        latents, time_ids = views.latents[rows], views.time_ids[rows]
        weights, caption_ids = views.loss_weights[rows], views.caption_ids[rows]
        is_prior = torch.zeros(len(indices), dtype=torch.bool, device=device)
        if class_indices:
            extra = torch.tensor(class_indices, device=device)
            latents = torch.cat([latents, class_views.latents[extra]])
            time_ids = torch.cat([time_ids, class_views.time_ids[extra]])
            weights = torch.cat([weights, class_views.loss_weights[extra]])
            caption_ids = torch.cat([caption_ids, class_views.caption_ids[extra]])
            is_prior = torch.cat([is_prior, torch.ones(len(class_indices), dtype=torch.bool, device=device)])
        prompt_embeds, pooled = text_for(caption_ids)
        return Batch(latents=latents, prompt_embeds=prompt_embeds, pooled=pooled, time_ids=time_ids,
                     loss_weights=weights if config.masked_loss else None, is_prior=is_prior)

    def draw_for(batch: Batch, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        # every process draws the noise and timesteps of the whole global micro-batch and keeps its own rows,
        # so N processes train exactly as one process with an N times larger batch
        rows = _own_rows(int((~batch.is_prior).sum()), int(batch.is_prior.sum()), accelerator.num_processes,
                         accelerator.process_index, device)
        everyone = batch.latents.new_empty((len(batch.latents) * accelerator.num_processes, *batch.latents.shape[1:]))
        noise = draw_noise(everyone, generator, config.noise_offset)[rows]
        timesteps = draw_timesteps(len(everyone), noise_scheduler.config.num_train_timesteps, generator, device)[rows]
        return noise, timesteps

    def loss_of(batch: Batch, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        noise, timesteps = draw_for(batch, generator)
        loss = diffusion_loss(unet, noise_scheduler, batch, noise, timesteps, config.min_snr_gamma,
                              config.prior_loss_weight, autocast_dtype)
        return loss, noise, timesteps

    unet.train()
    for encoder in text_encoders:
        encoder.train(config.text_encoder)
    start_step = resume.step if resume else 0
    if resume:
        parts = ckpt.split_adapters(resume.adapters)
        load_lora_state(unet, parts["unet"])
        if config.text_encoder:
            load_lora_state(pipe.text_encoder, parts["text_encoder"])
            load_lora_state(pipe.text_encoder_2, parts["text_encoder_2"])
        if new_tokens is not None:
            new_tokens.load_state(parts["embeddings"])
    end_text_phases(start_step)

    batch_size, checkpointing = _batch_size_and_checkpointing(
        config, resume_info, device, len(views),
        try_batch=lambda size: _probe(size, make_batch, loss_of, trainable, class_views is not None, device),
        enable_checkpointing=lambda: _enable_gradient_checkpointing(unet, text_encoders, config.text_encoder),
    )
    if accelerator.num_processes > 1:  # every process must take the same batch and the same memory trade-off
        chosen = accelerator.gather(torch.tensor([batch_size, int(checkpointing)], device=device)).view(-1, 2)
        batch_size = int(chosen[:, 0].min())
        if chosen[:, 1].any() and not checkpointing:
            _enable_gradient_checkpointing(unet, text_encoders, config.text_encoder)
            checkpointing = True
    if show:
        print(f"Batch size {batch_size} per step × {config.gradient_accumulation} accumulation × "
              f"{accelerator.num_processes} process(es); gradient checkpointing {'on' if checkpointing else 'off'}; "
              f"{len(views)} training views ({len(examples)} images{' + mirrored' if config.flip else ''}).")

    optimizer = build_optimizer(parameter_groups, config, device)
    schedule = build_schedule(optimizer, config)
    scaler = torch.amp.GradScaler(device.type, enabled=placement.dtype == torch.float16)  # fp16 needs loss scaling
    noise_generator = torch.Generator(device).manual_seed(config.seed)  # the same stream in every process
    history: list[dict[str, float]] = []
    train_seconds = 0.0
    if resume:
        optimizer.load_state_dict(resume.training_state["optimizer"])
        schedule.load_state_dict(resume.training_state["schedule"])
        scaler.load_state_dict(resume.training_state["scaler"])
        ckpt.restore_rng(resume.rng_states, noise_generator)
        train_seconds = float(resume.training_state.get("train_seconds", 0.0))
        history = _read_history(work_dir / "loss.csv", start_step)
        if show:
            print(f"Resuming from {resume.folder} (step {start_step} of {config.steps}).")

    metadata = training_metadata(config_json(config, data_hash, batch_size), data_hash)  # in every exported file
    metadata["ss_learning_rate"] = str(config.learning_rate)

    def export_to(folder: Path):
        return export_training(folder, pipe, config.lora_name, config.text_encoder, new_tokens, metadata)

    def save_checkpoint(step: int, rng_states: dict[str, Any]) -> Path | None:
        if not all(torch.isfinite(p).all() for p in trainable):  # never let a bad step overwrite a good checkpoint
            raise TrainError(_nonfinite_message("NaN or inf in the LoRA weights", step, checkpoints_dir))
        staging = ckpt.begin_checkpoint(checkpoints_dir, step) if main else None
        accelerator.wait_for_everyone()
        staging = staging or checkpoints_dir / f".{ckpt.checkpoint_name(step)}.partial"
        ckpt.save_rng(staging, rng_states, accelerator.process_index)
        accelerator.wait_for_everyone()
        folder = None
        if main:
            state = {"optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                     "scaler": scaler.state_dict(), "train_seconds": train_seconds}
            info = {"fingerprint": json.loads(json.dumps(config.fingerprint(), default=str)), "dataset_hash": data_hash,
                    "batch_size": batch_size, "gradient_checkpointing": checkpointing,
                    "processes": accelerator.num_processes, "loss": history[-1]["loss"] if history else None}
            adapters = ckpt.join_adapters(adapter_state(pipe, config.text_encoder, new_tokens))
            folder = ckpt.finish_checkpoint(staging, step, adapters, state, info, export_to, config.keep_checkpoints)
            _write_loss_files(work_dir, history)
        accelerator.wait_for_everyone()
        return folder

    def emit(event: TrainEvent) -> None:
        if main:
            for callback in callbacks:
                callback(event)

    validation: list[ValidationImage] = []
    emit(TrainEvent("start", start_step, config.steps, None, None, history, validation, pipe=pipe))

    # --- 5. the loop --------------------------------------------------------------------------------------
    samples_per_step = batch_size * config.gradient_accumulation * accelerator.num_processes
    last_saved = step = start_step
    seconds_at_start = train_seconds
    boundary_rng = ckpt.capture_rng(noise_generator)  # the RNGs as they are between two steps
    captured = choose_step_runner(config, unet, noise_scheduler, trainable, autocast_dtype, device,  # train_cuda_graph
                                  loss_scaling=scaler.is_enabled(), show=show)
    bar = tqdm(total=config.steps, initial=start_step, desc="training", unit="step", disable=not show)
    try:
        while step < config.steps:
            step_started = time.perf_counter()
            end_text_phases(step)
            optimizer.zero_grad(set_to_none=True)
            step_loss = torch.zeros((), device=device)
            for micro in range(config.gradient_accumulation):
                # position of this micro-batch in the endless shuffled stream, process by process
                position = ((step * config.gradient_accumulation + micro) * accelerator.num_processes
                            + accelerator.process_index) * batch_size
                indices = view_indices(config.seed, len(views), position, batch_size)
                class_indices = view_indices(config.seed + 1, len(class_views), position, batch_size) if class_views else []
                batch = make_batch(indices, class_indices)
                if captured is not None:  # the same forward and backward, replayed from a CUDA graph
                    loss, noise, timesteps = captured.forward_backward(batch, noise_generator, draw=draw_for)
                else:
                    loss, noise, timesteps = loss_of(batch, noise_generator)
                    scaler.scale(loss / config.gradient_accumulation).backward()
                step_loss += loss.detach() / config.gradient_accumulation
            _average_gradients(trainable, accelerator)
            scaler.unscale_(optimizer)
            if config.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
            step_loss = accelerator.reduce(step_loss, reduction="mean").item()
            if not math.isfinite(step_loss):
                raise TrainError(_nonfinite_message(f"a loss of {step_loss}", step + 1, checkpoints_dir))
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
            history.append({"step": step, "loss": step_loss, "lr": learning_rate, "samples_per_s": samples_per_s,
                            "elapsed_s": train_seconds})
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.4f}", samples_s=f"{samples_per_s:.2f}", refresh=False)
            emit(TrainEvent("step", step, config.steps, step_loss, learning_rate, history, validation, pipe=pipe,
                            noise=noise, timesteps=timesteps, views=[views.described[i] for i in indices]))

            if step % config.checkpoint_every == 0 or step == config.steps:
                folder = save_checkpoint(step, boundary_rng)
                last_saved = step
                if main and validation_prompts and config.validation_seeds:
                    encoded = validation_encoded if not text_is_live(step) else \
                        encode_validation_prompts(pipe, validation_prompts, placement.dtype)
                    validation += render_validation(pipe, step, validation_prompts, encoded, config.validation_seeds,
                                                    config.resolution, config.validation_steps,
                                                    config.validation_guidance, work_dir / "validation")
                    _write_validation_grid(work_dir, validation)
                emit(TrainEvent("checkpoint", step, config.steps, step_loss, learning_rate, history, validation,
                                checkpoint=folder, pipe=pipe))
    except KeyboardInterrupt:
        bar.close()
        if step > last_saved:
            folder = save_checkpoint(step, boundary_rng)
            where = f"a checkpoint of step {step} was saved to {folder}"
        else:
            where = f"the checkpoint of step {step} is in {checkpoints_dir}" if step else "nothing was saved (no step finished)"
        kept = (f"; the last finished training in {config.output_dir} is unchanged"
                if (config.output_dir / publish.CONFIG_FILE).is_file() else "")
        raise TrainingInterrupted(f"Training interrupted at step {step} of {config.steps}; {where}{kept}; "
                                  "run again with train_resume=True to continue.") from None
    except Exception as error:
        bar.close()
        _raise_if_out_of_memory(error, batch_size, config.resolution, checkpointing)
        raise
    bar.close()

    # --- 6. export, configuration, loss curve, cost ------------------------------------------------------
    wall_seconds = time.perf_counter() - started
    cost = cost_line(wall_seconds, config.gpu_price_per_hour or None)
    result = None
    if main:
        exported = export_to(work_dir)
        values = config_json(config, data_hash, batch_size)
        values.update(lora_file=exported.diffusers.name, kohya_file=exported.kohya.name,
                      embeddings_file=exported.embeddings.name if exported.embeddings else None, tokens=tokens,
                      dataset_hash=data_hash, wall_seconds=round(wall_seconds, 1), cost=cost,
                      final_loss=history[-1]["loss"] if history else None, processes=accelerator.num_processes)
        _write_loss_files(work_dir, history)
        files.write_json(work_dir / publish.CONFIG_FILE, values)  # last: it marks the folder complete
        lora = publish.publish(work_dir, config.output_dir)  # the new training replaces the previous one whole
        print(cost)
        validation = [dataclasses.replace(image, path=lora / image.path.relative_to(work_dir)) for image in validation]
        result = TrainResult(lora_file=lora / exported.diffusers.name, kohya_file=lora / exported.kohya.name,
                             embeddings_file=lora / exported.embeddings.name if exported.embeddings else None,
                             config_file=lora / publish.CONFIG_FILE, loss_csv=lora / "loss.csv",
                             loss_png=lora / "loss.png",
                             checkpoints=[f for _, f in ckpt.list_checkpoints(lora / "checkpoints")], history=history,
                             validation=validation, wall_seconds=wall_seconds, cost=cost, batch_size=batch_size)
        emit(TrainEvent("end", step, config.steps, history[-1]["loss"] if history else None, None, history,
                        validation, pipe=pipe))
    accelerator.wait_for_everyone()
    return result


# --- helpers of the loop, in the order the loop uses them ------------------------------------------------


def config_json(config: TrainConfig, data_hash: str, batch_size: int) -> dict[str, Any]:
    """train_config.json's parameters, named as the notebook's parameters cell names them."""
    values = config.to_dict()
    out: dict[str, Any] = {key: values[key] for key in COMMON_PARAMETERS}
    out.update({f"train_{key}": value for key, value in values.items() if key not in COMMON_PARAMETERS})
    out["train_batch_size_used"] = batch_size
    out["dataset_hash"] = data_hash
    return out


def _find_resume_point(config: TrainConfig, work_dir: Path, data_hash: str, process: int, say):
    """The checkpoint to resume from (the unfinished training's, else the finished one's), or None to start fresh."""
    if not config.resume:
        return None
    resume = ckpt.find_resume_point([work_dir / "checkpoints", config.output_dir / "checkpoints"], config, data_hash,
                                    process, say=say)
    if resume is None:
        say(f"train_resume=True but neither {work_dir} nor {config.output_dir} holds a checkpoint yet: "
            "starting from step 0.")
    return resume


def _quiet(message: str) -> None:
    """Where processes other than the main one send what the main one prints."""


def _batch_size_and_checkpointing(config, resume_info, device, view_count, try_batch, enable_checkpointing):
    """The batch size and whether gradient checkpointing is on (from the checkpoint when resuming)."""
    if resume_info:
        if resume_info["gradient_checkpointing"]:
            enable_checkpointing()
        return int(resume_info["batch_size"]), bool(resume_info["gradient_checkpointing"])
    checkpointing = config.gradient_checkpointing is True
    if checkpointing:
        enable_checkpointing()
    if config.batch_size != "auto":
        return int(config.batch_size), checkpointing
    if device.type != "cuda":
        return min(CPU_AUTO_BATCH, view_count), checkpointing
    size = largest_fitting_batch(try_batch, device, limit=view_count)
    if size is None and not checkpointing and config.gradient_checkpointing == "auto":
        enable_checkpointing()  # trade compute for memory: only when even one image does not fit
        checkpointing = True
        size = largest_fitting_batch(try_batch, device, limit=view_count)
    if size is None:
        raise TrainError(out_of_memory_advice(1, config.resolution, checkpointing))
    return size, checkpointing


def _probe(size, make_batch, loss_of, trainable, with_prior, device) -> None:
    """One forward and backward at batch `size`, leaving no gradients and no trace in the RNGs."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        indices = [0] * size  # memory depends on the batch's size, not on which images are in it
        batch = make_batch(indices, indices if with_prior else [])
        loss, _, _ = loss_of(batch, torch.Generator(device).manual_seed(0))
        loss.backward()
    for parameter in trainable:
        parameter.grad = None


def _own_rows(subject: int, prior: int, processes: int, process: int, device) -> torch.Tensor:
    """Which rows of the global micro-batch (all processes' subject rows, then all their class rows) are ours."""
    own = [process * subject + i for i in range(subject)] + [processes * subject + process * prior + i for i in range(prior)]
    return torch.tensor(own, device=device)


def _enable_gradient_checkpointing(unet, text_encoders, text_encoders_train: bool) -> None:
    unet.enable_gradient_checkpointing()
    if text_encoders_train:
        for encoder in text_encoders:  # non-reentrant: the LoRA inside still gets its gradients
            encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


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


def _nonfinite_message(what: str, step: int, checkpoints_dir: Path) -> str:
    found = ckpt.list_checkpoints(checkpoints_dir)
    kept = (f"the last good checkpoint is {found[-1][1]} (train_resume=True continues from it)" if found
            else "no checkpoint was written yet")
    return (f"Training stopped at step {step} with {what}; {kept}; try a lower train_learning_rate, "
            "train_precision=\"fp32\", or a smaller train_noise_offset.")


def _raise_if_out_of_memory(error: BaseException, batch_size: int, resolution: int, checkpointing: bool) -> None:
    if is_out_of_memory(error):
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise TrainError(out_of_memory_advice(batch_size, resolution, checkpointing)) from None


def _read_history(loss_csv: Path, up_to_step: int) -> list[dict[str, float]]:
    if not loss_csv.is_file():
        return []
    import pandas as pd

    frame = pd.read_csv(loss_csv)
    return [dict(row) for row in frame[frame["step"] <= up_to_step].to_dict("records")]


def _write_loss_files(output_dir: Path, history: list[dict[str, float]]) -> tuple[Path, Path]:
    import pandas as pd

    from sdxlab import plots

    loss_csv = files.write_csv(output_dir / "loss.csv", pd.DataFrame(history, columns=[
        "step", "loss", "lr", "samples_per_s", "elapsed_s"]))
    figure = plots.loss_curve(history)
    loss_png = files.save_figure(output_dir / "loss.png", figure)
    plots.close(figure)
    return loss_csv, loss_png


def _write_validation_grid(output_dir: Path, validation: list[ValidationImage]) -> Path:
    from sdxlab import plots

    figure = plots.validation_over_time(validation)
    path = files.save_figure(output_dir / "validation_grid.png", figure)
    plots.close(figure)
    return path
