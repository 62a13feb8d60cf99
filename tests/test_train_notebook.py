"""02_train.ipynb as the demo run executed it: what it left in outputs/<run>/lora/."""

from __future__ import annotations

import csv
import json

import nbformat
import pytest
from safetensors.torch import load_file

from sdxlab.recorded import read_recorded
from sdxlab.train.checkpoint import list_checkpoints


@pytest.fixture(scope="module")
def lora_folder(demo_run):
    return demo_run.lora


@pytest.fixture(scope="module")
def train_config(lora_folder):
    return json.loads((lora_folder / "train_config.json").read_text())


def test_lora_exists_in_diffusers_and_kohya_formats(lora_folder, train_config):
    diffusers_file = lora_folder / train_config["lora_file"]
    kohya_file = lora_folder / train_config["kohya_file"]
    assert diffusers_file.name == f"{train_config['lora_name']}.safetensors"
    unet_keys = [k for k in load_file(str(diffusers_file)) if k.startswith("unet.")]
    assert unet_keys and all(".lora_A." in k or ".lora_B." in k for k in unet_keys)
    kohya_keys = list(load_file(str(kohya_file)))
    assert any(k.startswith("lora_unet_") and k.endswith(".lora_down.weight") for k in kohya_keys)


def test_checkpoints_and_loss_files_match_the_run(lora_folder, train_config):
    steps, every = train_config["train_steps"], train_config["train_checkpoint_every"]
    found = [step for step, _ in list_checkpoints(lora_folder / "checkpoints")]
    expected = list(range(every, steps + 1, every))
    keep = train_config["train_keep_checkpoints"]
    assert found == (expected[-keep:] if keep else expected)
    with open(lora_folder / "loss.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["step"]) for row in rows] == list(range(1, steps + 1))
    assert all(float(row["loss"]) > 0 for row in rows)
    assert (lora_folder / "loss.png").stat().st_size > 1000
    assert (lora_folder / "validation_grid.png").is_file()
    for key in (
        "model",
        "resolution",
        "subject_token",
        "class_word",
        "lora_name",
        "lora_file",
        "kohya_file",
        "embeddings_file",
        "tokens",
        "dataset_hash",
    ):
        assert key in train_config, key


def test_notebook_showed_the_training_images_loss_curve_and_validation(demo_run):
    notebook = nbformat.read(demo_run.notebooks / "02_train.ipynb", as_version=4)
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 3  # training images, loss curve, validation


def test_recorded_results_match_the_files_written(demo_run, lora_folder, train_config):
    recorded = read_recorded(demo_run.notebooks / "02_train.ipynb")
    with open(lora_folder / "loss.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert recorded["steps"] == train_config["train_steps"] == len(rows)
    assert recorded["final_loss"] == pytest.approx(float(rows[-1]["loss"]), rel=1e-6)
    assert recorded["final_loss"] == pytest.approx(train_config["final_loss"], rel=1e-6)
    assert recorded["batch_size"] == train_config["train_batch_size_used"]
    assert recorded["checkpoints"] == [folder.name for _, folder in list_checkpoints(lora_folder / "checkpoints")]
    written = recorded["files_written"]
    for name in (train_config["lora_file"], train_config["kohya_file"], "train_config.json", "loss.csv", "loss.png"):
        assert f"lora/{name}" in written
    assert all((demo_run.root / name).exists() for name in written)
    assert recorded["wall_seconds"] == pytest.approx(train_config["wall_seconds"], abs=1.0)
