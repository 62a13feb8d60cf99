"""The evaluate stage's settings (notebook 04_evaluate), declared once: default, help and allowed values."""

from __future__ import annotations

from dataclasses import dataclass

from sdxlab.settings import Settings, setting


@dataclass
class EvaluateSettings(Settings):
    """Which pictures to measure against which photos, with which CLIP and which strangers."""

    prefix = "evaluate_"
    title = "evaluate"

    samples_dir: str | None = setting(
        None, "images to evaluate; None: this run's samples/ (03_sample), or any folder of images"
    )
    dataset_dir: str | None = setting(
        None, "your photos; None: this run's dataset/ (01_capture), or any folder of photos of you"
    )
    prompt: str | None = setting(
        None,
        "prompt for images whose prompt is unknown (no samples.csv, no PNG "
        "parameters); None: alignment skipped for them",
    )
    clip_model: str = setting(
        "tiny",
        'CLIP for prompt alignment (04 and 05): "tiny" (offline, random weights, '
        'meaningless numbers), a hub id like "openai/clip-vit-large-patch14", or a '
        "local folder",
        parameter="clip_model",
    )
    other_people_dir: str | None = setting(
        None,
        "photos of OTHER people for the likeness floor; None: the six people "
        "in insightface's t1.jpg (fetched once from PyPI)",
    )
    compare_runs: list[str] = setting([], 'other evaluated runs to compare with this one, e.g. ["demo-a", "demo-b"]')
