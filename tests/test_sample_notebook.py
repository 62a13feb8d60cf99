"""03_sample as the runner executes it (demo profile, papermill): the files it wrote, checked against its parameters."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import nbformat
import pytest
from PIL import Image

from sdxlab.recorded import read_recorded
from sdxlab.sample import CSV_COLUMNS, read_parameters, read_samples
from sdxlab.sample.playground import NO_FRONTEND_MESSAGE


@pytest.fixture(scope="module")
def parameters(project) -> dict:
    """The parameters 03_sample ran with: its own defaults, then the demo profile's values."""
    import papermill

    from sdxlab.run import load_profile

    declared = papermill.inspect_notebook(str(project / "notebooks" / "03_sample.ipynb"))
    values = {name: ast.literal_eval(spec["default"]) for name, spec in declared.items()}
    values.update({key: value for key, value in load_profile("demo").items() if key in values})
    return values


@pytest.fixture(scope="module")
def recorded(demo_run) -> dict:
    return read_recorded(demo_run.notebooks / "03_sample.ipynb")


def notebook_text(demo_run) -> str:
    executed = nbformat.read(demo_run.notebooks / "03_sample.ipynb", as_version=4)
    return "\n".join(
        str(output.get("text", ""))
        for cell in executed.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    )


def test_batch_pngs_carry_their_parameters_and_match_samples_csv(demo_run, parameters):
    index = read_samples(demo_run.samples)
    assert index is not None and list(index.columns) == CSV_COLUMNS
    batch = index[index["file"].str.startswith("batch_")]
    assert len(batch) == len(parameters["sample_prompts"]) * len(parameters["sample_seeds"])
    assert sorted(set(batch["seed"])) == sorted(parameters["sample_seeds"])
    for row in batch.itertuples():
        stored = read_parameters(demo_run.samples / row.file)
        assert (stored["prompt"], stored["seed"], stored["steps"]) == (row.prompt, row.seed, parameters["sample_steps"])
        assert (stored["width"], stored["height"]) == (parameters["resolution"],) * 2
        assert "{subject}" not in stored["prompt"]  # the subject was filled in
        assert Image.open(demo_run.samples / row.file).size == (parameters["resolution"],) * 2
    assert (demo_run.samples / "grid_prompts_seeds.png").stat().st_size > 0


def test_the_demo_samples_its_trained_lora_with_a_lora_scale_sweep(demo_run, parameters, recorded):
    # The demo trains before it samples, so 03 must take the LoRA branch (the no-LoRA branch is tested in
    # tests/test_sample.py::test_from_run_without_training_uses_the_base_model_and_says_so).
    config = json.loads((demo_run.lora / "train_config.json").read_text())
    assert recorded["lora_loaded"] is True
    assert recorded["lora_file"] == f"lora/{config['lora_file']}"
    index = read_samples(demo_run.samples)
    sweep = index[index["file"].str.startswith("sweep_")]
    assert recorded["sweep_scales"] == pytest.approx(sorted(parameters["sample_lora_scales"]))
    assert sorted(set(sweep["lora_scale"])) == pytest.approx(sorted(parameters["sample_lora_scales"]))
    assert (
        recorded["sweep_images"]
        == len(sweep)
        == len(parameters["sample_lora_scales"]) * len(parameters["sample_seeds"])
    )
    assert (demo_run.samples / "grid_lora_scale.png").stat().st_size > 0
    assert set(sweep["checkpoint"]) == {"final"} and set(sweep["lora_file"]) == {recorded["lora_file"]}


def test_recorded_results_match_samples_csv(demo_run, parameters, recorded):
    index = read_samples(demo_run.samples)
    batch = index[index["file"].str.startswith("batch_")]
    over_training = index[index["file"].str.startswith("checkpoints_")]
    assert recorded["batch_images"] == len(batch) == len(parameters["sample_prompts"]) * len(parameters["sample_seeds"])
    assert set(batch["lora_file"]) == {recorded["lora_file"]}
    assert recorded["image_size"] == [parameters["resolution"]] * 2
    assert recorded["checkpoint_images"] == len(over_training)
    assert recorded["checkpoints"] == sorted(set(over_training["checkpoint"]))


def test_every_training_checkpoint_is_sampled_with_the_first_prompt(demo_run, parameters):
    index = read_samples(demo_run.samples)
    over_training = index[index["file"].str.startswith("checkpoints_")]
    saved = sorted(
        folder.name
        for folder in (demo_run.lora / "checkpoints").glob("step_*")
        if (folder / "checkpoint.json").is_file()
    )
    if not saved or parameters["sample_checkpoints"] != "all":
        pytest.skip("the demo run has no training checkpoints to compare (or sample_checkpoints is not 'all')")
    assert sorted(set(over_training["checkpoint"])) == saved
    assert len(over_training) == len(saved) * len(parameters["sample_seeds"])
    assert all(
        row.lora_file == f"lora/checkpoints/{row.checkpoint}/{Path(row.lora_file).name}"
        for row in over_training.itertuples()
    )
    assert (demo_run.samples / "grid_checkpoints.png").stat().st_size > 0


def test_playground_degrades_to_a_note_without_a_browser(demo_run):
    assert NO_FRONTEND_MESSAGE in notebook_text(demo_run)
