"""The optimiser and the learning-rate schedule."""

from __future__ import annotations

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
