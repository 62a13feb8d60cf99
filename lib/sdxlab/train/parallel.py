"""The processes of one training: one per GPU under a launcher (`accelerate launch`, torchrun), else just this one.

Every process trains on its own slice of each batch; they agree on the gradients (their mean), the loss that is
reported (its mean) and when to move on (`wait`). Only the main process prints, reports and writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from sdxlab.models import Placement, choose_placement
from sdxlab.train.config import TrainConfig, TrainError


@dataclass
class Processes:
    accelerator: Any  # accelerate.Accelerator

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def count(self) -> int:
        return self.accelerator.num_processes

    @property
    def index(self) -> int:
        return self.accelerator.process_index

    def say(self, message: str) -> None:
        """Print on the main process; the others stay quiet."""
        if self.main:
            print(message)

    def wait(self) -> None:
        self.accelerator.wait_for_everyone()

    def mean(self, value: torch.Tensor) -> float:
        """The mean over the processes of a scalar every process computed (e.g. its loss)."""
        return self.accelerator.reduce(value, reduction="mean").item()

    def average_gradients(self, parameters: list[torch.nn.Parameter]) -> None:
        """Data parallelism: every process computed gradients on its own images; use their mean everywhere."""
        if self.count == 1:
            return
        with_grad = [p for p in parameters if p.grad is not None]
        flat = torch.cat([p.grad.flatten() for p in with_grad])
        flat = self.accelerator.reduce(flat, reduction="mean")
        offset = 0
        for parameter in with_grad:
            count = parameter.grad.numel()
            parameter.grad.copy_(flat[offset : offset + count].view_as(parameter.grad))
            offset += count


def start_processes(config: TrainConfig) -> tuple[Placement, Processes]:
    """The device and precision `config` asks for, and this training's processes."""
    from accelerate import Accelerator

    if config.device.startswith("cuda") and not torch.cuda.is_available():
        raise TrainError('device=\'cuda\' but no CUDA GPU is visible to PyTorch; use device="auto" or "cpu".')
    placement = choose_placement(config.device, None if config.precision == "auto" else config.precision)
    return placement, Processes(Accelerator(cpu=placement.device.type == "cpu"))
