"""GPU memory: pick the largest batch that fits (`train_batch_size="auto"`), and explain out-of-memory errors."""

from __future__ import annotations

from collections.abc import Callable

import torch

CPU_AUTO_BATCH = 2  # on a CPU a bigger batch is not faster per sample, only slower per step
MAX_AUTO_BATCH = 16


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


def out_of_memory_advice(batch_size: int, resolution: int, gradient_checkpointing: bool) -> str:
    fixes = [f"set train_batch_size to {max(1, batch_size // 2)} (or \"auto\")"] if batch_size > 1 else []
    if not gradient_checkpointing:
        fixes.append("set train_gradient_checkpointing=True")
    fixes.append("use train_optimizer=\"adamw8bit\"" if batch_size == 1 else "raise train_gradient_accumulation instead")
    if batch_size == 1 and gradient_checkpointing:
        fixes.append(f"lower resolution below {resolution}")
    return (f"Out of GPU memory at train_batch_size={batch_size}, resolution {resolution}, gradient checkpointing "
            f"{'on' if gradient_checkpointing else 'off'}: {', or '.join(fixes)}.")


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
