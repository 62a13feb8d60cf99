"""sdxlab.train on the tiny model: learning, export that diffusers loads, bad input, NaN, pivotal tuning, prior."""

from __future__ import annotations

import json
import statistics

import numpy as np
import pytest
import torch
from conftest import write_train_dataset
from safetensors import safe_open
from safetensors.torch import load_file

from sdxlab.models import load_pipeline
from sdxlab.train import TrainConfig, TrainError, train
from sdxlab.train.export import load_embeddings, lora_pair_count

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RESOLUTION = 64
REQUIRED_CONFIG_KEYS = {
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
    "train_steps",
    "train_learning_rate",
    "train_lora_rank",
}


def tiny_config(dataset, output, **options) -> TrainConfig:
    values = dict(
        dataset_dir=dataset,
        output_dir=output,
        model="tiny",
        resolution=RESOLUTION,
        steps=4,
        batch_size=2,
        lora_rank=4,
        lr_warmup_steps=0,
        checkpoint_every=2,
        validation_prompts=[],
        device="cpu",
        progress=False,
    )
    return TrainConfig(**{**values, **options})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One 80-step run on four images, shared by the tests that look at what a finished run leaves."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("trained")
    dataset = write_train_dataset(root / "dataset", count=4)
    config = tiny_config(
        dataset,
        root / "lora",
        steps=80,
        batch_size=4,
        lora_rank=8,
        learning_rate=1e-2,
        flip=False,
        checkpoint_every=40,
        keep_checkpoints=0,
        validation_prompts=["a photo of {subject}"],
        validation_seeds=[0],
        validation_steps=2,
    )
    return config, train(config)


def render(pipe, scale: float | None = None) -> np.ndarray:
    options = {} if scale is None else {"cross_attention_kwargs": {"scale": scale}}
    return pipe(
        "a photo of sks person",
        num_inference_steps=3,
        height=RESOLUTION,
        width=RESOLUTION,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
        **options,
    ).images[0]


# --- a finished run ------------------------------------------------------------------------------------------


def test_loss_goes_down_over_a_short_run(trained):
    _, result = trained
    losses = [row["loss"] for row in result.history]
    assert len(losses) == 80 and all(np.isfinite(losses))
    first, last = statistics.mean(losses[:20]), statistics.mean(losses[-20:])
    assert last < 0.97 * first, f"mean loss went from {first:.4f} (first 20 steps) to {last:.4f} (last 20)"


def test_run_writes_lora_files_config_loss_and_checkpoints(trained):
    config, result = trained
    lora = config.output_dir
    assert result.lora_file == lora / "sdxlab_lora.safetensors" and result.lora_file.is_file()
    assert result.kohya_file == lora / "sdxlab_lora_kohya.safetensors" and result.kohya_file.is_file()
    saved = json.loads((lora / "train_config.json").read_text())
    assert set(saved) >= REQUIRED_CONFIG_KEYS
    assert saved["lora_file"] == "sdxlab_lora.safetensors" and saved["embeddings_file"] is None
    assert saved["tokens"] == ["sks"] and len(saved["dataset_hash"]) == 64
    rows = (lora / "loss.csv").read_text().splitlines()
    assert rows[0].startswith("step,loss,lr") and len(rows) == 81
    assert (lora / "loss.png").stat().st_size > 1000
    assert [p.name for p in result.checkpoints] == ["step_000040", "step_000080"]
    for folder in result.checkpoints:
        assert {"adapters.safetensors", "training_state.pt", "checkpoint.json", "sdxlab_lora.safetensors"} <= {
            p.name for p in folder.iterdir()
        }
    assert (lora / "validation" / "step_000040" / "prompt0_seed0.png").is_file()
    assert (lora / "validation_grid.png").is_file()
    with safe_open(str(result.lora_file), framework="pt") as handle:
        assert handle.metadata()["sdxlab_dataset_hash"] == saved["dataset_hash"]


def test_saved_lora_loads_with_diffusers_changes_output_and_scale_zero_is_base(trained):
    _, result = trained
    pipe = load_pipeline("tiny", device="cpu")
    pipe.set_progress_bar_config(disable=True)
    base = render(pipe)
    pipe.load_lora_weights(str(result.lora_file))
    with_lora = render(pipe)
    assert np.abs(with_lora - base).max() > 1e-3, "the trained LoRA does not change the picture"
    np.testing.assert_allclose(render(pipe, scale=0.0), base, atol=1e-5)


def test_kohya_file_has_kohya_keys_and_the_same_pairs(trained):
    _, result = trained
    tensors = load_file(str(result.kohya_file))
    downs = [k for k in tensors if k.endswith(".lora_down.weight")]
    assert downs and all(k.startswith("lora_unet_") for k in downs)
    for key in downs:
        module = key.removesuffix(".lora_down.weight")
        assert f"{module}.lora_up.weight" in tensors and f"{module}.alpha" in tensors
    assert lora_pair_count(result.kohya_file) == lora_pair_count(result.lora_file) == len(downs)

    pipe = load_pipeline("tiny", device="cpu")  # and diffusers reads the kohya file to the same picture
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(str(result.kohya_file))
    from_kohya = render(pipe)
    pipe.unload_lora_weights()
    pipe.load_lora_weights(str(result.lora_file))
    np.testing.assert_allclose(from_kohya, render(pipe), atol=1e-4)


# --- bad input: one clear line before any model is loaded ------------------------------------------------------


@pytest.fixture
def no_model_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the bad input was reported")

    monkeypatch.setattr("sdxlab.models.load_pipeline", refuse)


def _empty_manifest(dataset):
    (dataset / "metadata.jsonl").write_text("")


def _missing_image(dataset):
    (dataset / "images" / "0003.png").unlink()


def _no_manifest(dataset):
    (dataset / "metadata.jsonl").unlink()


BAD_INPUTS = {
    "missing dataset folder": (lambda d: None, {"dataset_dir": "MISSING"}, "does not exist"),
    "dataset without manifest": (_no_manifest, {}, "no metadata.jsonl"),
    "empty dataset": (_empty_manifest, {}, "lists no images"),
    "manifest names a missing image": (_missing_image, {}, "images/0003.png, which does not exist"),
    "images of another size": (lambda d: None, {"resolution": 128}, "is 64×64 but the training resolution is 128"),
    "lora rank 0": (lambda d: None, {"lora_rank": 0}, "train_lora_rank must be"),
    "resolution not divisible by 8": (lambda d: None, {"resolution": 60}, "not divisible by 8"),
    "unknown LoRA target preset": (lambda d: None, {"lora_targets": "everything"}, "not a preset"),
    "batch size 0": (lambda d: None, {"batch_size": 0}, "train_batch_size must be"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gives_one_clear_line_before_model_work(case, train_dataset, tmp_path, no_model_loading):
    break_dataset, options, expected = BAD_INPUTS[case]
    break_dataset(train_dataset)
    if options.get("dataset_dir") == "MISSING":
        options = {**options, "dataset_dir": tmp_path / "no-such-dataset"}
    with pytest.raises(TrainError) as error:
        train(tiny_config(train_dataset, tmp_path / "lora", **options))
    message = str(error.value)
    assert expected in message and "\n" not in message


def test_missing_optional_optimizer_package_is_named(train_dataset, tmp_path, no_model_loading):
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is not None:
        pytest.skip("bitsandbytes is installed here")
    with pytest.raises(TrainError, match="needs the bitsandbytes package"):
        train(tiny_config(train_dataset, tmp_path / "lora", optimizer="adamw8bit"))


def test_resuming_with_changed_hyperparameters_is_refused(trained, no_model_loading):
    config, _ = trained
    changed = TrainConfig(**{**config.to_dict(), "learning_rate": 5e-3, "resume": True})
    with pytest.raises(TrainError, match=r"learning_rate was 0\.01 and is now 0\.005") as error:
        train(changed)
    assert "\n" not in str(error.value)


def test_unknown_notebook_parameter_is_named():
    with pytest.raises(TrainError, match="Unknown training parameter train_stpes"):
        TrainConfig.from_notebook_parameters({"train_stpes": 10, "model": "tiny"})


def test_notebook_parameters_map_to_fields():
    config = TrainConfig.from_notebook_parameters(
        {"model": "tiny", "resolution": 128, "train_steps": 7, "train_lora_rank": 2, "unrelated": 1}, output_dir="x"
    )
    assert (config.model, config.resolution, config.steps, config.lora_rank) == ("tiny", 128, 7, 2)


# --- failures during training ----------------------------------------------------------------------------------


def _poison_lora_after(step):
    def callback(event):
        if event.kind == "step" and event.step == step:
            for name, parameter in event.pipe.unet.named_parameters():
                if "lora_B" in name:
                    parameter.data.fill_(float("nan"))

    return callback


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(train_dataset, tmp_path):
    output = tmp_path / "lora"
    with pytest.raises(TrainError, match="stopped at step 4 with a loss of nan") as error:
        train(tiny_config(train_dataset, output, steps=6), callbacks=[_poison_lora_after(3)])
    assert "step_000002" in str(error.value)
    unfinished = tmp_path / "lora.unfinished"  # where a training works until it is complete
    checkpoints = sorted(p.name for p in (unfinished / "checkpoints").iterdir())
    assert checkpoints == ["step_000002"]
    good = load_file(str(unfinished / "checkpoints" / "step_000002" / "adapters.safetensors"))
    assert all(torch.isfinite(tensor).all() for tensor in good.values())
    assert not output.exists() and not (unfinished / "sdxlab_lora.safetensors").exists()


def test_out_of_memory_becomes_advice_naming_the_parameter(train_dataset, tmp_path):
    def run_out_of_memory(event):
        if event.kind == "step":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(TrainError, match=r"Out of GPU memory at train_batch_size=2.*set train_batch_size to 1"):
        train(tiny_config(train_dataset, tmp_path / "lora", steps=1), callbacks=[run_out_of_memory])


# --- options ---------------------------------------------------------------------------------------------------


class FakeStep:
    """A training step that runs out of memory above `fits` images (above `fits_checkpointed` with checkpointing)."""

    def __init__(self, fits: int, fits_checkpointed: int | None = None, error=None):
        self.fits, self.fits_checkpointed, self.error = fits, fits_checkpointed, error
        self.checkpointing = False
        self.tried: list[int] = []

    def __call__(self, size: int) -> None:
        self.tried.append(size)
        if self.error is not None:
            raise self.error
        if size > (self.fits_checkpointed if self.checkpointing else self.fits):
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {size} GiB")

    def enable_checkpointing(self) -> None:
        self.checkpointing = True


@pytest.mark.parametrize("fits, limit, expected", [(5, 12, 4), (16, 12, 8), (100, 40, 16), (1, 12, 1), (0, 12, None)])
def test_largest_fitting_batch_is_the_largest_power_of_two_that_runs(fits, limit, expected):
    from sdxlab.train.memory import largest_fitting_batch

    step = FakeStep(fits)
    assert largest_fitting_batch(step, torch.device("cpu"), limit=limit) == expected
    assert step.tried == [size for size in (1, 2, 4, 8, 16) if size <= min(limit, 16)][: len(step.tried)]
    assert all(size <= fits for size in step.tried[:-1])  # it stops at the first size that does not fit


def test_largest_fitting_batch_lets_other_errors_through():
    from sdxlab.train.memory import largest_fitting_batch

    with pytest.raises(ValueError, match="shape mismatch"):
        largest_fitting_batch(FakeStep(8, error=ValueError("shape mismatch")), torch.device("cpu"), limit=8)


def test_auto_batch_turns_on_gradient_checkpointing_only_when_batch_one_does_not_fit():
    from sdxlab.train.memory import batch_size_and_checkpointing as _batch_size_and_checkpointing

    cuda = torch.device("cuda")  # only its type is read: no GPU needed
    config = TrainConfig(batch_size="auto", gradient_checkpointing="auto")
    roomy = FakeStep(fits=6, fits_checkpointed=20)
    assert _batch_size_and_checkpointing(config, None, cuda, 30, roomy, roomy.enable_checkpointing) == (4, False)
    tight = FakeStep(fits=0, fits_checkpointed=3)
    assert _batch_size_and_checkpointing(config, None, cuda, 30, tight, tight.enable_checkpointing) == (2, True)
    hopeless = FakeStep(fits=0, fits_checkpointed=0)
    with pytest.raises(TrainError, match="Out of GPU memory at train_batch_size=1.*checkpointing on"):
        _batch_size_and_checkpointing(config, None, cuda, 30, hopeless, hopeless.enable_checkpointing)
    off = FakeStep(fits=0, fits_checkpointed=3)  # gradient_checkpointing=False is a promise: never turned on
    with pytest.raises(TrainError, match="set train_gradient_checkpointing=True"):
        _batch_size_and_checkpointing(
            TrainConfig(batch_size="auto", gradient_checkpointing=False), None, cuda, 30, off, off.enable_checkpointing
        )
    assert not off.checkpointing
    few = FakeStep(fits=64)  # never more than there are views
    assert _batch_size_and_checkpointing(config, None, cuda, 3, few, few.enable_checkpointing) == (2, False)


def test_pivotal_tuning_and_text_encoder_lora(train_dataset, tmp_path):
    output = tmp_path / "lora"
    config = tiny_config(
        train_dataset,
        output,
        steps=4,
        checkpoint_every=1,
        keep_checkpoints=0,
        pivotal_tuning=True,
        pivotal_fraction=0.5,
        text_encoder=True,
        embedding_lr=1e-2,
    )
    result = train(config)

    saved = json.loads((output / "train_config.json").read_text())
    assert saved["tokens"] == ["<s0>", "<s1>"] and saved["embeddings_file"] == "sdxlab_lora_emb.safetensors"
    embeddings = load_file(str(result.embeddings_file))
    assert embeddings["clip_l"].shape == (2, 32) and embeddings["clip_g"].shape == (2, 64)
    by_step = [
        load_file(str(output / "checkpoints" / f"step_{s:06d}" / "sdxlab_lora_emb.safetensors")) for s in (1, 2, 3, 4)
    ]
    assert not torch.equal(by_step[0]["clip_l"], by_step[1]["clip_l"])  # trained during the first half
    assert torch.equal(by_step[1]["clip_g"], by_step[3]["clip_g"])  # frozen after it
    kohya = load_file(str(result.kohya_file))
    assert any(k.startswith("lora_te1_") for k in kohya) and any(k.startswith("lora_te2_") for k in kohya)

    pipe = load_pipeline("tiny", device="cpu")  # the new tokens work in a fresh pipeline
    pipe.set_progress_bar_config(disable=True)
    load_embeddings(pipe, result.embeddings_file, saved["tokens"])
    pipe.load_lora_weights(str(result.lora_file))
    ids = pipe.tokenizer("a photo of <s0><s1> person").input_ids
    assert pipe.tokenizer.convert_tokens_to_ids("<s0>") in ids
    image = pipe(
        "a photo of <s0><s1> person", num_inference_steps=2, height=RESOLUTION, width=RESOLUTION, output_type="np"
    ).images[0]
    assert np.isfinite(image).all()


def test_prior_preservation_generates_class_images_once(train_dataset, tmp_path):
    output = tmp_path / "lora"
    config = tiny_config(
        train_dataset, output, steps=2, prior_preservation=True, class_images=3, class_inference_steps=2
    )
    train(config)
    images = sorted((output / "class_images").glob("class_*.png"))
    assert len(images) == 3
    made = [p.stat().st_mtime_ns for p in images]
    train(config)  # a second run reuses them
    assert [p.stat().st_mtime_ns for p in images] == made


def test_prodigy_as_configured_finds_its_step_size_on_a_known_problem():
    """Prodigy's d (its estimate of the distance to the solution) sets the step size d * lr; from d0 = 1e-6 it
    must grow to the problem's scale. A quadratic whose solution is 0.5 away in every coordinate shows it quickly
    (on the tiny model's noisy loss d takes ~40 steps to move, too slow for a test): d grows ~60000x in 80 steps."""
    from sdxlab.train.optim import build_optimizer

    weights = torch.nn.Parameter(torch.zeros(64))
    config = TrainConfig(optimizer="prodigy", learning_rate=1.0)
    optimizer = build_optimizer([{"params": [weights]}], config, torch.device("cpu"))
    target = torch.full((64,), 0.5)
    d = []
    for _ in range(120):
        optimizer.zero_grad()
        ((weights - target) ** 2).sum().backward()
        optimizer.step()
        d.append(optimizer.param_groups[0]["d"])
    assert d[0] == pytest.approx(1e-6, rel=0.5) and d[-1] > 1e-2, f"d did not adapt: {d[0]:.2g} -> {d[-1]:.2g}"
    assert all(later >= earlier for earlier, later in zip(d, d[1:], strict=False))
    assert (weights - target).abs().max() < 0.05  # and with that step size it reached the solution


def test_prodigy_trains_feed_forward_targets_and_records_its_step_size(train_dataset, tmp_path):
    result = train(
        tiny_config(
            train_dataset,
            tmp_path / "lora",
            steps=4,
            optimizer="prodigy",
            learning_rate=1.0,
            lr_scheduler="constant",  # so the recorded step size is d alone
            lora_targets="attention+ff",
            min_snr_gamma=5.0,  # the steadier loss: with every noise level alike d's evidence dips in 4 steps
            checkpoint_every=1,
            keep_checkpoints=0,
        )
    )
    groups = [
        torch.load(folder / "training_state.pt", weights_only=True)["optimizer"]["param_groups"][0]
        for folder in result.checkpoints
    ]
    numerators = [group["d_numerator"] for group in groups]  # the evidence d is estimated from, step by step
    assert numerators[0] == 0 and all(
        later > earlier for earlier, later in zip(numerators, numerators[1:], strict=False)
    )
    # loss.csv's lr column is the step size actually taken: d * lr, not the constant 1.0 of the schedule
    assert [row["lr"] for row in result.history] == pytest.approx([group["d"] * 1.0 for group in groups])
    keys = load_file(str(result.lora_file))
    assert all(keys[k].abs().max() > 0 for k in keys if ".lora_B." in k)  # B starts at zero: it was trained
    assert any(".ff.net.0.proj.lora_A." in k for k in keys) and any(".proj_in.lora_A." in k for k in keys)
    assert lora_pair_count(result.kohya_file) == lora_pair_count(result.lora_file)


def test_pivotal_tuning_validates_at_the_checkpoint_where_the_new_tokens_freeze(train_dataset, tmp_path):
    """A checkpoint on the very step pivotal tuning ends (steps 4, fraction 0.5, every 2) draws its validation
    pictures; it used to crash because the prompts' cached encodings only exist from the next step on."""
    output = tmp_path / "lora"
    config = tiny_config(
        train_dataset,
        output,
        steps=4,
        checkpoint_every=2,
        pivotal_tuning=True,
        pivotal_fraction=0.5,
        embedding_lr=1e-2,
        validation_prompts=["a photo of {subject} person"],
        validation_seeds=[0],
        validation_steps=2,
    )
    result = train(config)
    assert sorted({image.step for image in result.validation}) == [2, 4]
    assert all(image.path.is_file() for image in result.validation)
