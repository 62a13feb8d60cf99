"""A run's training results are replaced only by complete new results (sdxlab.train.publish).

Fault injection throughout: a refused model, Ctrl-C between steps, a failure between the final writes, a
truncated checkpoint, temporaries a killed process left. After each, the finished training in `lora/` is
byte for byte what it was, the new training's files are in `lora.unfinished/`, and `train_resume=True`
finishes the new training, which then replaces the old one whole.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from conftest import write_train_dataset

from sdxlab.layout import RunLayout
from sdxlab.models import ModelLoadError
from sdxlab.train import TrainConfig, TrainError, TrainingInterrupted, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_train_dataset(tmp_path_factory.mktemp("publish") / "dataset", count=4)


def config_for(dataset, layout: RunLayout, **options) -> TrainConfig:
    values = dict(
        dataset_dir=dataset,
        output_dir=layout.lora,
        model="tiny",
        resolution=64,
        steps=4,
        batch_size=2,
        lora_rank=4,
        lr_warmup_steps=0,
        checkpoint_every=2,
        keep_checkpoints=0,
        validation_prompts=[],
        device="cpu",
        progress=False,
    )
    return TrainConfig(**{**values, **options})


def snapshot(folder):
    """Every file under `folder` with its bytes (what a person would see there)."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.fixture
def finished(dataset, tmp_path):
    """A run whose lora/ holds a finished training (plus a file a person put there), and its snapshot."""
    layout = RunLayout.for_run("me", tmp_path)
    config = config_for(dataset, layout)
    train(config)
    (layout.lora / "my_notes.txt").write_text("the good one")
    return layout, config, snapshot(layout.lora)


def unfinished_of(layout):
    return layout.lora.with_name("lora.unfinished")


def stop_at(step, error=KeyboardInterrupt):
    def callback(event):
        if event.kind == "step" and event.step == step:
            raise error

    return callback


def test_a_refused_model_leaves_a_finished_run_untouched(finished):
    layout, config, before = finished
    with pytest.raises(ModelLoadError):
        train(dataclasses.replace(config, model=str(layout.root / "no-such-model.safetensors"), learning_rate=5e-3))
    assert snapshot(layout.lora) == before
    assert {"checkpoints/step_000002/adapters.safetensors", "checkpoints/step_000004/adapters.safetensors"} <= set(
        before
    )


def test_an_interrupted_new_training_leaves_the_finished_one_whole_and_says_so(finished):
    layout, config, before = finished
    new = dataclasses.replace(config, learning_rate=5e-3, steps=6)
    with pytest.raises(TrainingInterrupted, match="the last finished training in .* is unchanged"):
        train(new, callbacks=[stop_at(3)])
    assert snapshot(layout.lora) == before  # the old LoRA is not paired with the new run's checkpoints
    unfinished = unfinished_of(layout)
    assert sorted(p.name for p in (unfinished / "checkpoints").iterdir()) == ["step_000002", "step_000003"]
    assert not (unfinished / "train_config.json").exists() and not (unfinished / "sdxlab_lora.safetensors").exists()
    from sdxlab.sample.checkpoints import unfinished_training_note

    note = unfinished_training_note(layout)  # what 03_sample prints beside its pictures
    assert "step 3" in note and "last finished training" in note and "train_resume=True" in note
    from sdxlab.sample import Sampler

    sampler = Sampler.from_run(layout, device="cpu")  # 03_sample: the finished LoRA, and the note beside it
    assert sampler.lora.path == layout.lora / "sdxlab_lora.safetensors" and note in sampler.describe()

    result = train(dataclasses.replace(new, resume=True))

    assert not unfinished.exists() and unfinished_training_note(layout) is None
    saved = json.loads((layout.lora / "train_config.json").read_text())
    assert saved["train_learning_rate"] == 5e-3 and saved["train_steps"] == 6
    assert [p.name for p in result.checkpoints] == ["step_000002", "step_000003", "step_000004", "step_000006"]
    assert all(p.parent == layout.lora / "checkpoints" for p in result.checkpoints)
    assert result.lora_file == layout.lora / "sdxlab_lora.safetensors" and result.lora_file.is_file()
    assert (layout.lora / "my_notes.txt").read_text() == "the good one"  # what no training wrote is kept
    assert [row["step"] for row in result.history] == list(range(1, 7))
    after = snapshot(layout.lora)
    assert after["sdxlab_lora.safetensors"] != before["sdxlab_lora.safetensors"]
    assert (
        after["checkpoints/step_000002/adapters.safetensors"] != before["checkpoints/step_000002/adapters.safetensors"]
    )


def test_a_failing_training_leaves_the_finished_one_whole(finished):
    layout, config, before = finished
    with pytest.raises(RuntimeError, match="simulated"):
        train(dataclasses.replace(config, learning_rate=5e-3), callbacks=[stop_at(3, RuntimeError("simulated crash"))])
    assert snapshot(layout.lora) == before


def test_a_failure_between_the_final_writes_publishes_nothing_and_resume_finishes(finished, monkeypatch):
    from sdxlab import files

    layout, config, before = finished
    new = dataclasses.replace(config, learning_rate=5e-3)
    real_write_json = files.write_json

    def fail_on_train_config(target, value):
        if str(target).endswith("train_config.json"):
            raise OSError("disk full")
        return real_write_json(target, value)

    monkeypatch.setattr(files, "write_json", fail_on_train_config)
    with pytest.raises(OSError, match="disk full"):
        train(new)
    assert snapshot(layout.lora) == before  # the new LoRA files were written, but not published
    assert (unfinished_of(layout) / "sdxlab_lora.safetensors").is_file()
    monkeypatch.setattr(files, "write_json", real_write_json)

    train(dataclasses.replace(new, resume=True))  # nothing left to train: export again and publish
    assert json.loads((layout.lora / "train_config.json").read_text())["train_learning_rate"] == 5e-3
    assert not unfinished_of(layout).exists()


def test_resume_names_a_truncated_checkpoint_and_falls_back_to_the_newest_intact_one(dataset, tmp_path, capsys):
    layout = RunLayout.for_run("me", tmp_path)
    config = config_for(dataset, layout, steps=6)
    with pytest.raises(TrainingInterrupted):
        train(config, callbacks=[stop_at(5)])
    checkpoints = unfinished_of(layout) / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step_000002", "step_000004", "step_000005"]
    damaged = checkpoints / "step_000005" / "adapters.safetensors"
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])  # a disk that filled up, a bad copy
    (unfinished_of(layout) / ".sdxlab_lora.safetensors.x1.partial.safetensors").write_bytes(b"left by kill -9")
    capsys.readouterr()

    result = train(dataclasses.replace(config, resume=True))

    printed = capsys.readouterr().out
    sentence = next(line for line in printed.splitlines() if "damaged" in line)
    assert str(damaged) in sentence and "resuming from" in sentence and "step_000004" in sentence
    assert [row["step"] for row in result.history] == list(range(1, 7))
    assert not any(".partial" in p.name for p in layout.lora.rglob("*"))  # the stale temporary is gone too


def test_resume_with_every_checkpoint_damaged_names_the_file_before_loading_a_model(dataset, tmp_path, monkeypatch):
    layout = RunLayout.for_run("me", tmp_path)
    config = config_for(dataset, layout, steps=4)
    with pytest.raises(TrainingInterrupted):
        train(config, callbacks=[stop_at(3)])
    for folder in (unfinished_of(layout) / "checkpoints").iterdir():
        (folder / "training_state.pt").write_bytes(b"PK\x03\x04 truncated")

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the damaged checkpoint was reported")

    monkeypatch.setattr("sdxlab.models.load_pipeline", refuse)
    with pytest.raises(TrainError) as error:
        train(dataclasses.replace(config, resume=True))
    message = str(error.value)
    assert "step_000003" in message and "training_state.pt" in message and "is damaged" in message
    assert "train_resume=False" in message and "\n" not in message


def test_a_fresh_training_discards_an_unfinished_one_only_once_the_model_loaded(dataset, tmp_path, capsys):
    layout = RunLayout.for_run("me", tmp_path)
    config = config_for(dataset, layout)
    with pytest.raises(TrainingInterrupted):
        train(config, callbacks=[stop_at(2)])
    unfinished = snapshot(unfinished_of(layout))
    with pytest.raises(ModelLoadError):
        train(dataclasses.replace(config, model=str(tmp_path / "missing.safetensors")))
    assert snapshot(unfinished_of(layout)) == unfinished
    capsys.readouterr()
    result = train(config)
    assert "Discarding the unfinished training" in capsys.readouterr().out
    assert [p.name for p in result.checkpoints] == ["step_000002", "step_000004"]
    assert torch.isfinite(torch.tensor([row["loss"] for row in result.history])).all()
