"""Validation pictures are drawn with the sampler the settings name, and training's pipeline gets its own back."""

from __future__ import annotations

import torch
from diffusers import EulerAncestralDiscreteScheduler, EulerDiscreteScheduler
from PIL import Image

from sdxlab.train.config import TrainConfig
from sdxlab.train.validation import render_validation


class RecordingPipe:
    """Just enough of an SDXL pipeline for `render_validation`: records which scheduler each call used."""

    def __init__(self):
        self.unet = torch.nn.Linear(1, 1)
        self.vae = torch.nn.Linear(1, 1)
        self.unet.device = self.vae.device = torch.device("cpu")
        self.scheduler = EulerDiscreteScheduler(prediction_type="v_prediction")
        self.used: list[tuple[type, str]] = []

    def __call__(self, num_images_per_prompt: int, **_):
        self.used.append((type(self.scheduler), self.scheduler.config.prediction_type))
        return type("Output", (), {"images": [Image.new("RGB", (8, 8))] * num_images_per_prompt})()


def _render(pipe, tmp_path, scheduler):
    encoded = tuple(torch.zeros(2, 4) for _ in range(4))
    return render_validation(pipe, 10, ["a", "b"], encoded, [0], 8, 2, 1.0, tmp_path, scheduler)


def test_validation_uses_the_named_sampler_and_restores_the_pipelines_own(tmp_path):
    pipe = RecordingPipe()
    own = pipe.scheduler
    images = _render(pipe, tmp_path, "euler_a")
    # built from the pipeline's own configuration: the model's prediction type carries over
    assert pipe.used == [(EulerAncestralDiscreteScheduler, "v_prediction")] * 2
    assert pipe.scheduler is own, "training's pipeline must get its own scheduler back"
    assert [image.path.name for image in images] == ["prompt0_seed0.png", "prompt1_seed0.png"]


def test_no_sampler_keeps_the_pipelines_own(tmp_path):
    pipe = RecordingPipe()
    _render(pipe, tmp_path, None)
    assert pipe.used == [(EulerDiscreteScheduler, "v_prediction")] * 2


def test_the_demo_draws_validation_pictures_with_the_samplers_default():
    from sdxlab.sample.settings import SampleSettings

    config, sample = TrainConfig(), SampleSettings()
    assert (config.validation_scheduler, config.validation_steps, config.validation_guidance) == (
        sample.scheduler,
        sample.steps,
        sample.guidance,
    )
