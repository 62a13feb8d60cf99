"""GPU memory: pick the largest batch that fits (`train_batch_size="auto"`), and explain out-of-memory errors."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from sdxlab.train.config import TrainError

CPU_AUTO_BATCH = 2  # on a CPU a bigger batch is not faster per sample, only slower per step
MAX_AUTO_BATCH = 16


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


def out_of_memory_advice(batch_size: int, resolution: int, gradient_checkpointing: bool) -> str:
    fixes = [f'set train_batch_size to {max(1, batch_size // 2)} (or "auto")'] if batch_size > 1 else []
    if not gradient_checkpointing:
        fixes.append("set train_gradient_checkpointing=True")
    fixes.append('use train_optimizer="adamw8bit"' if batch_size == 1 else "raise train_gradient_accumulation instead")
    if batch_size == 1 and gradient_checkpointing:
        fixes.append(f"lower resolution below {resolution}")
    return (
        f"Out of GPU memory at train_batch_size={batch_size}, resolution {resolution}, gradient checkpointing "
        f"{'on' if gradient_checkpointing else 'off'}: {', or '.join(fixes)}."
    )


def free_cached_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def largest_fitting_batch(try_batch: Callable[[int], None], device: torch.device, limit: int) -> int | None:
    """The largest power of two (≤ limit) for which `try_batch(size)` (one forward + backward) runs; None if 1 fails."""
    best = None
    size = 1
    while size <= min(limit, MAX_AUTO_BATCH):
        try:
            try_batch(size)
        except Exception as error:
            if not is_out_of_memory(error):
                raise
            break
        finally:
            free_cached_memory(device)
        best = size
        size *= 2
    return best


def raise_if_out_of_memory(error: BaseException, batch_size: int, resolution: int, checkpointing: bool) -> None:
    """An out-of-memory error becomes a TrainError that says what to change; other errors pass through."""
    if is_out_of_memory(error):
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise TrainError(out_of_memory_advice(batch_size, resolution, checkpointing)) from None


def enable_gradient_checkpointing(unet, text_encoders, text_encoders_train: bool) -> None:
    unet.enable_gradient_checkpointing()
    if text_encoders_train:
        for encoder in text_encoders:  # non-reentrant: the LoRA inside still gets its gradients
            encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def probe(size: int, make_batch, loss_of, trainable, with_prior: bool, device: torch.device) -> None:
    """One forward and backward at batch `size`, leaving no gradients and no trace in the RNGs."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        indices = [0] * size  # memory depends on the batch's size, not on which images are in it
        batch = make_batch(indices, indices if with_prior else [])
        loss, _, _ = loss_of(batch, torch.Generator(device).manual_seed(0))
        loss.backward()
    for parameter in trainable:
        parameter.grad = None


def batch_size_and_checkpointing(config, resume_info, device, view_count, try_batch, enable_checkpointing):
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


def agree_across_processes(accelerator, batch_size: int, checkpointing: bool, enable_checkpointing) -> tuple[int, bool]:
    """Every process must take the same batch and the same memory trade-off: the smallest batch, and
    checkpointing if any process needed it."""
    if accelerator.num_processes == 1:
        return batch_size, checkpointing
    chosen = accelerator.gather(torch.tensor([batch_size, int(checkpointing)], device=accelerator.device)).view(-1, 2)
    batch_size = int(chosen[:, 0].min())
    if chosen[:, 1].any() and not checkpointing:
        enable_checkpointing()
        checkpointing = True
    return batch_size, checkpointing


def batch_line(batch_size: int, checkpointing: bool, config, processes: int, views: int, images: int) -> str:
    return (
        f"Batch size {batch_size} per step × {config.gradient_accumulation} accumulation × {processes} process(es); "
        f"gradient checkpointing {'on' if checkpointing else 'off'}; {views} training views ({images} images"
        f"{' + mirrored' if config.flip else ''})."
    )


def choose_batch_size(config, resume, pipe, batches, step, trainable, processes) -> tuple[int, bool]:
    """The batch size and gradient checkpointing every process trains with: from the checkpoint when resuming,
    else `train_batch_size` ("auto": the largest batch whose forward and backward fit, `step.loss` on `batches`),
    agreed across processes."""
    enable = functools.partial(
        enable_gradient_checkpointing, pipe.unet, [pipe.text_encoder, pipe.text_encoder_2], config.text_encoder
    )
    device, with_prior = processes.device, batches.class_views is not None
    batch_size, checkpointing = batch_size_and_checkpointing(
        config,
        resume.info if resume else None,
        device,
        len(batches.views),
        enable_checkpointing=enable,
        try_batch=lambda size: probe(size, batches.make, step.loss, trainable, with_prior, device),
    )
    return agree_across_processes(processes.accelerator, batch_size, checkpointing, enable)
