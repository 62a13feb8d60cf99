"""Data parallelism for real: two CPU processes (gloo) started by `accelerate launch` train the same LoRA as one
process with the same global batch.

Each of the two processes takes half of every micro-batch (2 of 4 views) and the noise and timesteps of its
rows; the gradients are averaged before each step. One process with batch 4 must end with the same weights.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import write_train_dataset
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

OVERRIDES = [
    "model=tiny",
    "resolution=64",
    "train_steps=3",
    "train_checkpoint_every=3",
    "train_lora_rank=4",
    "train_learning_rate=1.0e-2",
    "train_lr_warmup_steps=0",
    "train_gradient_accumulation=2",
    "train_noise_offset=0.05",
    "train_validation_prompts=[]",
]


def train_command(outputs: Path, run: str, batch_size: int) -> list[str]:
    arguments = [
        "--profile",
        "demo",
        "--run",
        run,
        "-p",
        f"outputs_dir={outputs}",
        "-p",
        f"train_batch_size={batch_size}",
    ]
    for override in OVERRIDES:
        arguments += ["-p", override]
    return arguments


def final_adapters(outputs: Path, run: str) -> dict[str, torch.Tensor]:
    return load_file(str(outputs / run / "lora" / "checkpoints" / "step_000003" / "adapters.safetensors"))


def test_two_processes_train_the_same_lora_as_one_with_the_same_global_batch(tmp_path):
    for run in ("one", "two"):
        write_train_dataset(tmp_path / run / "dataset", count=5)
    environment = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "lib"), os.environ.get("PYTHONPATH", "")]),
    }
    accelerate = Path(sys.executable).with_name("accelerate")  # installed with the accelerate package
    assert accelerate.is_file(), f"{accelerate} is missing: the accelerate package installs it"
    launch = [
        str(accelerate),
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "sdxlab.train",
    ]
    two = subprocess.run(
        launch + train_command(tmp_path, "two", 2), env=environment, capture_output=True, text=True, timeout=600
    )
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run(
        [sys.executable, "-m", "sdxlab.train", *train_command(tmp_path, "one", 4)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert one.returncode == 0, one.stderr[-3000:]

    info = (tmp_path / "two" / "lora" / "checkpoints" / "step_000003" / "checkpoint.json").read_text()
    assert '"processes": 2' in info and '"batch_size": 2' in info  # really two processes, two views each
    expected, got = final_adapters(tmp_path, "one"), final_adapters(tmp_path, "two")
    assert set(got) == set(expected)
    trained = [key for key in expected if "lora_B" in key]
    assert trained and all(expected[key].abs().max() > 0 for key in trained)  # not a comparison of untrained zeros
    # the losses agree to float rounding, and so do the weights: the averaged gradient is summed in another
    # order than one process sums it, and Adam's m / sqrt(v) magnifies that rounding where a gradient is near
    # zero, so each tensor is compared relative to its own size (measured: at most 1e-4 of it after 3 steps)
    import pandas as pd

    losses = [pd.read_csv(tmp_path / run / "lora" / "loss.csv")["loss"].tolist() for run in ("one", "two")]
    assert losses[1] == pytest.approx(losses[0], rel=1e-6)
    for key, value in expected.items():
        assert (got[key] - value).abs().max() <= 1e-3 * value.abs().max(), key
