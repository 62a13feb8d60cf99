"""The step's noise draw with several processes: each keeps its rows of the global micro-batch's draw."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from sdxlab.train.step import Batch, TrainingStep


def micro_batch(subject: int, prior: int) -> Batch:
    rows = subject + prior
    return Batch(
        latents=torch.zeros(rows, 4, 2, 2),
        prompt_embeds=torch.zeros(rows, 1, 1),
        pooled=torch.zeros(rows, 1),
        time_ids=torch.zeros(rows, 6),
        loss_weights=None,
        is_prior=torch.tensor([False] * subject + [True] * prior),
    )


def draw(processes: int, process: int, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    scheduler = SimpleNamespace(config=SimpleNamespace(num_train_timesteps=1000))
    step = TrainingStep(
        None,
        scheduler,
        noise_offset=0.1,
        min_snr_gamma=None,
        prior_loss_weight=1.0,
        autocast_dtype=None,
        device=torch.device("cpu"),
        processes=processes,
        process=process,
    )
    return step.draw(batch, torch.Generator().manual_seed(7))  # every process starts from the same stream


@pytest.mark.parametrize(("processes", "subject", "prior"), [(2, 2, 0), (3, 2, 1), (2, 1, 2)])
def test_processes_together_draw_what_one_process_draws_for_the_global_batch(processes, subject, prior):
    # the global micro-batch: every process's subject rows, then every process's class rows
    one_noise, one_timesteps = draw(1, 0, micro_batch(subject * processes, prior * processes))
    parts = [draw(processes, p, micro_batch(subject, prior)) for p in range(processes)]
    noise = torch.cat([n[:subject] for n, _ in parts] + [n[subject:] for n, _ in parts])
    timesteps = torch.cat([t[:subject] for _, t in parts] + [t[subject:] for _, t in parts])
    assert torch.equal(noise, one_noise) and torch.equal(timesteps, one_timesteps)
    assert not torch.equal(parts[0][0], parts[1][0])  # the processes really train on different noise
