"""Interrupt a run (as Ctrl-C would), resume it, and reach exactly the weights of an uninterrupted run.

The run uses everything that draws random numbers or carries state across steps: shuffled batches of
mirrored images, noise with an offset, LoRA dropout, gradient accumulation, a warmup + cosine schedule,
AdamW's moments, and pivotal tuning whose embeddings freeze half-way (the text cache is rebuilt then).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import write_train_dataset
from safetensors.torch import load_file

from sdxlab.train import TrainConfig, TrainingInterrupted, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STEPS = 6


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_train_dataset(tmp_path_factory.mktemp("resume") / "dataset", count=5)


def config_for(dataset, output) -> TrainConfig:
    return TrainConfig(
        dataset_dir=dataset,
        output_dir=output,
        model="tiny",
        resolution=64,
        steps=STEPS,
        batch_size=2,
        gradient_accumulation=2,
        lora_rank=4,
        lora_dropout=0.1,
        noise_offset=0.05,
        learning_rate=1e-3,
        lr_scheduler="cosine",
        lr_warmup_steps=2,
        pivotal_tuning=True,
        pivotal_fraction=0.5,
        checkpoint_every=4,
        validation_prompts=["a photo of {subject}"],
        validation_seeds=[0],
        validation_steps=2,
        device="cpu",
        progress=False,
    )


@pytest.fixture(scope="module")
def uninterrupted(dataset, tmp_path_factory):
    torch.set_num_threads(1)
    return train(config_for(dataset, tmp_path_factory.mktemp("uninterrupted") / "lora"))


def interrupt_after(step: int):
    def callback(event):
        if event.kind == "step" and event.step == step:
            raise KeyboardInterrupt

    return callback


@pytest.mark.parametrize("stop_at", [2, 4, 5], ids=["during-pivotal-phase", "at-a-checkpoint", "after-the-switch"])
def test_resume_after_interruption_reaches_the_same_weights(dataset, tmp_path, uninterrupted, stop_at):
    config = config_for(dataset, tmp_path / "lora")
    with pytest.raises(TrainingInterrupted, match=f"interrupted at step {stop_at} of {STEPS}"):
        train(config, callbacks=[interrupt_after(stop_at)])
    unfinished = config.output_dir.with_name("lora.unfinished")
    assert (unfinished / "checkpoints" / f"step_{stop_at:06d}" / "checkpoint.json").is_file()
    assert not config.output_dir.exists() and not (unfinished / "sdxlab_lora.safetensors").exists()

    resumed = train(dataclasses.replace(config, resume=True))

    expected = load_file(str(uninterrupted.checkpoints[-1] / "adapters.safetensors"))
    got = load_file(str(resumed.checkpoints[-1] / "adapters.safetensors"))
    assert resumed.checkpoints[-1].name == f"step_{STEPS:06d}" and set(got) == set(expected)
    assert any(key.startswith("embeddings/") for key in got)
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=1e-6, atol=1e-7, msg=key)
    assert [row["step"] for row in resumed.history] == list(range(1, STEPS + 1))
    torch.testing.assert_close(
        torch.tensor([r["loss"] for r in resumed.history]),
        torch.tensor([r["loss"] for r in uninterrupted.history]),
        rtol=1e-6,
        atol=1e-7,
    )


def test_the_final_lora_changed_from_its_start(uninterrupted):
    """Guards the comparison above against a run that trains nothing (then every run would be 'equal')."""
    final = load_file(str(uninterrupted.checkpoints[-1] / "adapters.safetensors"))
    assert any(key.startswith("unet/") and "lora_B" in key and value.abs().max() > 0 for key, value in final.items())
