"""The optimiser, the learning-rate schedule and fp16's loss scaler: what changes the weights."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from sdxlab.train.config import TrainConfig


def build_optimizer(parameter_groups: list[dict], config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW (fused on CUDA: one kernel for all parameters), 8-bit AdamW (bitsandbytes) or Prodigy.

    `parameter_groups` are torch param-group dicts ({"params": [...], "lr": ..., ...}); groups without an
    "lr" use config.learning_rate. Missing packages were already reported by `TrainConfig.validate`.
    """
    betas = (config.adam_beta1, config.adam_beta2)
    common = dict(lr=config.learning_rate, betas=betas, weight_decay=config.adam_weight_decay)
    if config.optimizer == "prodigy":
        from prodigyopt import Prodigy

        return Prodigy(parameter_groups, safeguard_warmup=True, use_bias_correction=True, **common)
    if config.optimizer == "adamw8bit":
        import bitsandbytes

        return bitsandbytes.optim.AdamW8bit(parameter_groups, eps=config.adam_epsilon, **common)
    return torch.optim.AdamW(parameter_groups, eps=config.adam_epsilon, fused=device.type == "cuda", **common)


def build_schedule(optimizer: torch.optim.Optimizer, config: TrainConfig):
    """diffusers' learning-rate schedules (warmup, then constant / linear / cosine …), stepped once per optimizer step."""
    from diffusers.optimization import get_scheduler

    return get_scheduler(
        config.lr_scheduler, optimizer, num_warmup_steps=config.lr_warmup_steps, num_training_steps=config.steps
    )


@dataclass
class Optimization:
    """The three objects an optimizer step uses, built together and saved together (`state_dict`)."""

    optimizer: torch.optim.Optimizer
    schedule: Any
    scaler: torch.amp.GradScaler

    @classmethod
    def build(cls, parameter_groups: list[dict], config: TrainConfig, device: torch.device, dtype) -> Optimization:
        optimizer = build_optimizer(parameter_groups, config, device)
        schedule = build_schedule(optimizer, config)
        scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)  # fp16 needs loss scaling
        return cls(optimizer, schedule, scaler)

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def backward(self, loss: torch.Tensor) -> None:
        """Gradients of `loss`; under fp16 of the scaled loss, so that small gradients do not underflow."""
        self.scaler.scale(loss).backward()

    def unscale(self) -> None:
        """The true gradients again (before clipping them); a no-op without loss scaling."""
        self.scaler.unscale_(self.optimizer)

    def step(self) -> float:
        """One optimizer step (the scaler skips it if fp16 gradients overflowed), then the schedule moves on;
        returns the step size used."""
        self.scaler.step(self.optimizer)
        self.scaler.update()
        learning_rate = self.learning_rate()
        self.schedule.step()
        return learning_rate

    def learning_rate(self) -> float:
        """The step size: the schedule's learning rate, times Prodigy's own estimate d where it has one."""
        return self.schedule.get_last_lr()[0] * self.optimizer.param_groups[0].get("d", 1.0)

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.scaler.load_state_dict(state["scaler"])
