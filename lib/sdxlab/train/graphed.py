"""The training step's forward and backward replayed from one CUDA graph (`train_cuda_graph="auto"`).

Why: at batch 1 one SDXL UNet forward and backward launch thousands of small kernels, and the GPU waits on
Python to launch them. Replaying a captured CUDA graph launches them all at once. Measured on one H100
(`../shared/reference/ANCHORS.md`): the lean eager step runs 573-694 ms at batch 1 (CPU-bound), the same
step captured whole 113 ms (8.8 samples/s); at batch 8 526 ms against 699 ms.

What the graph holds, per micro-batch: noising the latents, the UNet forward under autocast (with
`cache_enabled=False`: an autocast weight cache must not outlive a capture), the weighted loss of
`sdxlab.train.step` (written here without its two host-synchronising lines: boolean masks become a fixed
split, subject rows first, class rows after), and the backward into gradient tensors owned by the graph.

What stays eager, and why:
- the batch itself (`cache.Batches.make`) and the noise and timesteps, drawn with exactly the calls the eager
  step makes (`TrainingStep.draw`: `draw_noise`, `draw_timesteps`), then copied *into the graph's static input tensors in place*: the
  random stream, checkpoints and resumption are those of the eager step;
- gradient averaging between processes, clipping and the optimizer step, which the loop runs as for the
  eager step on the gradients handed over after each replay. So the loss is checked for NaN before any
  weight changes, Ctrl-C never lands between a replayed update and its bookkeeping, the learning-rate
  schedule and optimizer state are untouched, and every optimizer works (8-bit AdamW, Prodigy). What this
  leaves on the table is the optimizer's own launch overhead (fused AdamW: a handful of kernels plus a
  Python pass over the LoRA tensors); `compare_with_eager` times it so the GPU check shows its size.

The computation is the same function whether captured or not: on the CPU (and after a failed capture) it runs
eagerly on the same static tensors, which is how the tests check the refill logic without a GPU.

What turns it off (`graph_blockers`): no CUDA device; `train_cuda_graph=False`; text-encoder LoRA or pivotal
tuning (the text encoders run and train inside the step); fp16 loss scaling (the scale changes between steps).
A capture that fails for any other reason (an unsupported operation, out of memory) prints one line and the
run continues with the eager step; with `train_cuda_graph=True` it is an error instead.
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any

import torch

from sdxlab.train.config import TrainConfig, TrainError
from sdxlab.train.step import Batch, diffusion_loss, draw_noise, draw_timesteps, min_snr_weights

# The stated bf16 tolerance of the equivalence check (relative; the CPU in fp32 agrees to ~1e-6).
LOSS_TOLERANCE = 1e-2
GRADIENT_TOLERANCE = 5e-2  # ||g_captured - g_eager|| / ||g_eager||, over all LoRA gradients of a step


def graph_blockers(config: TrainConfig, device: torch.device, loss_scaling: bool = False) -> list[str]:
    """Why this configuration trains with the eager step instead of the captured one (empty: it can be captured)."""
    reasons = []
    if config.cuda_graph is False:
        reasons.append("train_cuda_graph=False")
    if torch.device(device).type != "cuda":
        reasons.append(f"the device is {torch.device(device).type}, not a CUDA GPU")
    if config.text_encoder:
        reasons.append("train_text_encoder=True (the text encoders run and train inside every step)")
    if config.pivotal_tuning:
        reasons.append("train_pivotal_tuning=True (the new token embeddings train inside the step)")
    if loss_scaling:
        reasons.append('fp16 training (the loss scale changes between steps; train_precision="bf16" allows it)')
    return reasons


def choose_step_runner(
    config: TrainConfig,
    unet,
    noise_scheduler,
    trainable: list[torch.nn.Parameter],
    autocast_dtype: torch.dtype | None,
    device: torch.device,
    loss_scaling: bool = False,
    show: bool = True,
) -> CapturedStep | None:
    """The captured step when `config.cuda_graph` and the configuration allow it, else None (the loop's eager step)."""
    blockers = graph_blockers(config, device, loss_scaling)
    if config.cuda_graph is True and blockers:
        raise TrainError(
            f"train_cuda_graph=True but the training step cannot be captured: {'; '.join(blockers)}; "
            'set train_cuda_graph="auto" to train with the eager step instead.'
        )
    if blockers:
        if show and torch.device(device).type == "cuda" and config.cuda_graph is not False:
            print(f"Training step: eager ({'; '.join(blockers)}).")
        return None
    if show:
        print("Training step: forward and backward replayed from a CUDA graph (captured at the first step).")
    return CapturedStep(
        unet, noise_scheduler, trainable, config, autocast_dtype, device, required=config.cuda_graph is True
    )


def static_diffusion_loss(
    unet,
    noise_scheduler,
    static: dict[str, torch.Tensor],
    subject_rows: int,
    min_snr_gamma: float | None,
    prior_loss_weight: float,
    autocast_dtype: torch.dtype | None,
) -> torch.Tensor:
    """`sdxlab.train.step.diffusion_loss`, line for line, without host synchronisation (so it can be captured).

    `static` holds latents, noise, timesteps, prompt_embeds, pooled, time_ids and optionally loss_weights;
    the first `subject_rows` rows are subject images, the rest class images (prior preservation).
    """
    latents, noise, timesteps = static["latents"], static["noise"], static["timesteps"]
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    with torch.autocast(
        noisy.device.type,
        dtype=autocast_dtype or torch.float32,
        enabled=autocast_dtype is not None,
        cache_enabled=False,
    ):
        prediction = unet(
            noisy,
            timesteps,
            encoder_hidden_states=static["prompt_embeds"],
            added_cond_kwargs={"text_embeds": static["pooled"], "time_ids": static["time_ids"]},
        ).sample
    prediction_type = noise_scheduler.config.prediction_type
    target = noise if prediction_type == "epsilon" else noise_scheduler.get_velocity(latents, noise, timesteps)

    squared_error = (prediction.float() - target.float()) ** 2
    pixel_dims = tuple(range(1, squared_error.ndim))
    weights = static.get("loss_weights")
    if weights is None:
        per_image = squared_error.mean(dim=pixel_dims)
    else:
        weights = weights.expand_as(squared_error)
        per_image = (squared_error * weights).sum(dim=pixel_dims) / weights.sum(dim=pixel_dims).clamp_min(1e-8)

    if min_snr_gamma is not None:
        per_image = per_image * min_snr_weights(noise_scheduler, timesteps, min_snr_gamma, prediction_type)

    subject = per_image[:subject_rows].mean()
    if subject_rows == per_image.shape[0]:
        return subject
    return subject + prior_loss_weight * per_image[subject_rows:].mean()


class CapturedStep:
    """One micro-batch's forward and backward, captured in a CUDA graph at the first call and replayed after.

    `forward_backward(batch, generator)` is a drop-in for the eager `loss_of(batch, generator)` followed by
    `(loss / accumulation).backward()`: it returns (loss, noise, timesteps) and leaves the gradients in the
    parameters' `.grad` (added to what is there, as backward does; the loop zeroes them with set_to_none).
    """

    INPUTS = ("latents", "noise", "timesteps", "prompt_embeds", "pooled", "time_ids", "loss_weights")

    def __init__(
        self,
        unet,
        noise_scheduler,
        trainable: list[torch.nn.Parameter],
        config: TrainConfig,
        autocast_dtype: torch.dtype | None,
        device: torch.device,
        capture: bool | None = None,
        required: bool = False,
        warmup_runs: int = 2,
    ):
        self.unet = unet
        self.noise_scheduler = noise_scheduler
        self.trainable = list(trainable)
        self.config = config
        self.autocast_dtype = autocast_dtype
        self.device = torch.device(device)
        self.capture = self.device.type == "cuda" if capture is None else capture
        self.required = required
        self.warmup_runs = warmup_runs
        self.graph = None
        self.static: dict[str, torch.Tensor] | None = None  # the graph's input tensors, refilled in place
        self.subject_rows = 0
        self.static_loss: torch.Tensor | None = None  # outputs: written by every replay
        self.static_grads: tuple[torch.Tensor, ...] | None = None
        self.grads: list[torch.Tensor] | None = None  # ours, handed to the parameters (the graph's are overwritten)
        self.fallback_reason: str | None = None
        self.capture_seconds: float | None = None

    @property
    def mode(self) -> str:
        if self.graph is not None:
            return "captured"
        return (
            f"eager ({self.fallback_reason})"
            if self.fallback_reason
            else ("eager" if not self.capture else "not yet captured")
        )

    def forward_backward(self, batch: Batch, generator: torch.Generator, draw=None):
        """`draw(batch, generator) -> (noise, timesteps)` is the loop's own draw (several processes share one
        stream and keep their own rows); without it, one process's draw, as `step.py` makes it."""
        if draw is not None:
            noise, timesteps = draw(batch, generator)
        else:
            noise = draw_noise(batch.latents, generator, self.config.noise_offset)
            timesteps = draw_timesteps(
                len(batch.latents), self.noise_scheduler.config.num_train_timesteps, generator, batch.latents.device
            )
        self._refill(batch, noise, timesteps)
        if self.capture and self.graph is None:
            self._try_capture()
        if self.graph is not None:
            self.graph.replay()
        else:
            self._compute()
        self._hand_over_gradients()
        return self.static_loss.clone(), noise, timesteps

    def release(self) -> None:
        """Drop the graph and its memory pool (it keeps one micro-batch's activations reserved between steps);
        the next `forward_backward` captures again. For eager work that needs the room, e.g. validation pictures
        on a card that `train_batch_size="auto"` filled."""
        self.graph = None
        self.static_loss = self.static_grads = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # --- the static tensors --------------------------------------------------------------------------------

    def _refill(self, batch: Batch, noise: torch.Tensor, timesteps: torch.Tensor) -> None:
        values = {
            "latents": batch.latents,
            "noise": noise,
            "timesteps": timesteps,
            "prompt_embeds": batch.prompt_embeds,
            "pooled": batch.pooled,
            "time_ids": batch.time_ids,
            "loss_weights": batch.loss_weights,
        }
        if self.static is None:
            self.static = {name: value.detach().clone() for name, value in values.items() if value is not None}
            self.subject_rows = _subject_rows(batch.is_prior)
            return
        for name in self.INPUTS:
            value, static = values[name], self.static.get(name)
            if (value is None) != (static is None) or (value is not None and value.shape != static.shape):
                raise TrainError(
                    f"The captured training step got a batch whose {name} is shaped "
                    f"{None if value is None else tuple(value.shape)} instead of "
                    f"{None if static is None else tuple(static.shape)}; the captured step needs the "
                    "same batch shape every step (set train_cuda_graph=False to train eagerly)."
                )
            if value is not None:
                static.copy_(value)
        # the subject/class split is fixed by the batch shape (the loop puts class images after the subject's)

    def _compute(self) -> None:
        """The captured work: loss and LoRA gradients of the micro-batch in the static tensors."""
        loss = static_diffusion_loss(
            self.unet,
            self.noise_scheduler,
            self.static,
            self.subject_rows,
            self.config.min_snr_gamma,
            self.config.prior_loss_weight,
            self.autocast_dtype,
        )
        grads = torch.autograd.grad(loss / self.config.gradient_accumulation, self.trainable)
        self.static_loss, self.static_grads = loss.detach(), grads

    def _hand_over_gradients(self) -> None:
        """Add the graph's gradients to the parameters' `.grad`, as `backward()` would (assign where it is None)."""
        if self.grads is None:
            self.grads = [torch.zeros_like(parameter) for parameter in self.trainable]
        fresh, held = [], []
        for index, parameter in enumerate(self.trainable):
            (fresh if parameter.grad is None else held).append(index)
        if fresh:
            torch._foreach_copy_([self.grads[i] for i in fresh], [self.static_grads[i] for i in fresh])
            for index in fresh:
                self.trainable[index].grad = self.grads[index]
        if held:
            torch._foreach_add_([self.trainable[i].grad for i in held], [self.static_grads[i] for i in held])

    # --- capture ---------------------------------------------------------------------------------------------

    def _try_capture(self) -> None:
        started = time.perf_counter()
        try:
            self._capture()
        except Exception as error:
            self.graph = None
            self.capture = False
            self.fallback_reason = f"capture failed: {type(error).__name__}: {_first_line(error)}"
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            if self.required:
                raise TrainError(
                    f"train_cuda_graph=True but capturing the training step failed "
                    f'({type(error).__name__}: {_first_line(error)}); set train_cuda_graph="auto" '
                    "to fall back to the eager step."
                ) from error
            print(
                f"Warning: capturing the training step in a CUDA graph failed ({type(error).__name__}: "
                f"{_first_line(error)}); training continues with the eager step.",
                file=sys.stderr,
            )
            return
        self.capture_seconds = time.perf_counter() - started

    def _capture(self) -> None:
        # Warm up on a side stream first: cuBLAS/cuDNN pick algorithms and allocate workspaces outside the graph.
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(self.warmup_runs):
                self._compute()
        torch.cuda.current_stream(self.device).wait_stream(side)
        self.static_loss = self.static_grads = None
        torch.cuda.synchronize(self.device)
        torch.cuda.empty_cache()  # the warm-up's activations go back, so the graph's pool can take their room
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            self._compute()
        self.graph = graph


# --- the equivalence check (the GPU check runs it at full size; the tests on the CPU) -------------------------


@dataclass
class StepComparison:
    step: int
    loss_eager: float
    loss_other: float
    loss_relative: float
    gradient_relative: float


def compare_with_eager(runner: CapturedStep, step_batches: list[list[Batch]]) -> dict[str, Any]:
    """Train the same steps three times from the same LoRA weights: eager, eager again, and with `runner` (a
    fresh `CapturedStep`; the eager runs use its UNet, noise scheduler, trainable weights, config and autocast).

    Each run: zero the gradients, forward and backward every micro-batch of the step (noise and timesteps from a
    generator seeded alike), clip, record the loss and all LoRA gradients, take the optimizer step (a fresh
    `build_optimizer` per run). Returns a JSON-ready report: per step the loss and the relative gradient
    difference of captured vs eager and of eager vs eager (the run-to-run floor of non-deterministic kernels),
    milliseconds per step (median after the first step, which includes the capture), the optimizer step's own
    milliseconds, and `passed`: captured (not fallen back, where capture was asked for) and within
    LOSS_TOLERANCE / GRADIENT_TOLERANCE at every step. The LoRA weights are restored at the end.
    """
    from sdxlab.train.optim import build_optimizer

    unet, noise_scheduler, trainable, config = runner.unet, runner.noise_scheduler, runner.trainable, runner.config
    autocast_dtype, device = runner.autocast_dtype, runner.device
    start = [parameter.detach().clone() for parameter in trainable]

    def synchronize():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def run(runner: CapturedStep | None):  # None: eager
        with torch.no_grad():
            for parameter, value in zip(trainable, start, strict=True):
                parameter.copy_(value)
        optimizer = build_optimizer([{"params": trainable}], config, device)
        generator = torch.Generator(device).manual_seed(config.seed + 1)
        losses, gradients, step_ms, optimizer_ms = [], [], [], []
        for batches in step_batches:
            synchronize()
            started = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            step_loss = torch.zeros((), device=device)
            for batch in batches:
                if runner is not None:
                    loss, _, _ = runner.forward_backward(batch, generator)
                else:
                    noise = draw_noise(batch.latents, generator, config.noise_offset)
                    timesteps = draw_timesteps(
                        len(batch.latents), noise_scheduler.config.num_train_timesteps, generator, device
                    )
                    loss = diffusion_loss(
                        unet,
                        noise_scheduler,
                        batch,
                        noise,
                        timesteps,
                        config.min_snr_gamma,
                        config.prior_loss_weight,
                        autocast_dtype,
                    )
                    (loss / config.gradient_accumulation).backward()
                step_loss += loss.detach() / config.gradient_accumulation
            if config.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
            losses.append(step_loss.item())
            gradients.append(torch.cat([parameter.grad.flatten().float() for parameter in trainable]))
            synchronize()
            before_optimizer = time.perf_counter()
            optimizer.step()
            synchronize()
            finished = time.perf_counter()
            step_ms.append((finished - started) * 1000)
            optimizer_ms.append((finished - before_optimizer) * 1000)
        optimizer.zero_grad(set_to_none=True)
        return losses, gradients, step_ms, optimizer_ms

    def steady(values: list[float]) -> float:
        return statistics.median(values[1:] if len(values) > 1 else values)

    try:
        eager = run(None)
        again = run(None)
        other = run(runner)
    finally:
        with torch.no_grad():
            for parameter, value in zip(trainable, start, strict=True):
                parameter.copy_(value)

    def compare(a, b) -> list[StepComparison]:
        rows = []
        for index, (loss_a, loss_b, grad_a, grad_b) in enumerate(zip(a[0], b[0], a[1], b[1], strict=True)):
            rows.append(
                StepComparison(
                    step=index + 1,
                    loss_eager=loss_a,
                    loss_other=loss_b,
                    loss_relative=abs(loss_b - loss_a) / max(abs(loss_a), 1e-12),
                    gradient_relative=float((grad_b - grad_a).norm() / grad_a.norm().clamp_min(1e-30)),
                )
            )
        return rows

    captured_rows, floor_rows = compare(eager, other), compare(eager, again)
    within = all(
        row.loss_relative <= LOSS_TOLERANCE and row.gradient_relative <= GRADIENT_TOLERANCE for row in captured_rows
    )
    was_captured = runner.graph is not None
    return {
        "mode": runner.mode,
        "capture_seconds": runner.capture_seconds,
        "passed": within and (was_captured or (not runner.capture and runner.fallback_reason is None)),
        "tolerance": {"loss_relative": LOSS_TOLERANCE, "gradient_relative_l2": GRADIENT_TOLERANCE},
        "steps": [vars(row) for row in captured_rows],
        "eager_vs_eager": [vars(row) for row in floor_rows],
        "ms_per_step": {"eager": steady(eager[2]), "captured": steady(other[2])},
        "optimizer_ms_per_step": {"eager": steady(eager[3]), "captured": steady(other[3])},
        "batch_size": int(step_batches[0][0].latents.shape[0]),
        "gradient_accumulation": len(step_batches[0]),
        "lora_tensors": len(trainable),
        "lora_parameters": sum(parameter.numel() for parameter in trainable),
        "device": str(device),
        "autocast": str(autocast_dtype).removeprefix("torch.") if autocast_dtype else "float32",
    }


def _subject_rows(is_prior: torch.Tensor) -> int:
    """How many subject rows lead the batch; the class rows (prior preservation) must all come after them."""
    flags = is_prior.detach().cpu().tolist()
    subject = flags.count(False)
    if any(flags[:subject]):
        raise TrainError(
            "The captured training step needs the subject images first and the class images after "
            "them in every batch; set train_cuda_graph=False to train eagerly."
        )
    return subject


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:200] if lines else "no details"
