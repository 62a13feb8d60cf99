"""The sample stage's settings (notebook 03_sample), declared once: default, help and allowed values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sdxlab.settings import GenerationSettings, Settings, like, setting


def _not_empty(value: list) -> str | None:
    return None if value else "a list with at least one entry"


def _seeds(value: list[int]) -> str | None:
    if not value:
        return "a list with at least one whole number"
    return "a list of whole numbers of at least 0" if any(seed < 0 for seed in value) else None


@dataclass
class SampleSettings(Settings):
    """What 03_sample draws and how; `generation` is how every one of its pictures is drawn."""

    prefix = "sample_"
    title = "sample"

    prompts: list[str] = setting(
        ["a photo of {subject}", "a portrait of {subject} as an astronaut, cinematic light"],
        "one grid row each; {subject} becomes token + class word",
        check=_not_empty,
    )
    negative_prompt: str = like(GenerationSettings, "negative_prompt", default="blurry, low quality, deformed")
    seeds: list[int] = setting(
        [1, 2], "one image per prompt and seed; the same seed always gives the same picture", check=_seeds
    )
    steps: int = like(
        GenerationSettings,
        "steps",
        default=24,
        help="denoising steps per image (30 for SDXL)",
    )
    guidance: float = like(
        GenerationSettings,
        "guidance",
        default=1.0,
        help="classifier-free guidance: how strictly images follow the prompt (5-7 for SDXL; 1.0 turns it off, "
        "where the demo's toy draws its clearest faces)",
    )
    scheduler: str = like(
        GenerationSettings,
        "scheduler",
        default="euler_a",
        help='"euler", "euler_a", "dpmpp_2m" or "dpmpp_2m_karras" (the demo\'s toy draws faces with euler_a; '
        "SDXL: dpmpp_2m_karras)",
    )
    lora_scale: float = like(
        GenerationSettings,
        "lora_scale",
        help="LoRA strength for the batch: 0 gives the base model, 1 the LoRA as trained",
    )
    lora_scales: list[float] = setting(
        [0.0, 0.4, 0.7, 1.0], "strengths of the LoRA-scale sweep (first prompt, every seed)"
    )
    batch_size: int = like(GenerationSettings, "batch_size", default=4)
    checkpoints: Literal["all"] | list[str] = setting(
        "all",
        'training checkpoints to compare with the first prompt: "all", a list like ["step_000100"], or [] for none',
    )
    lora_file: str | None = setting(
        None, "None: the run's LoRA from lora/train_config.json; or any SDXL LoRA .safetensors (e.g. the _kohya file)"
    )
    show_playground: bool = setting(
        True, "build the interactive prompt playground at the end (it needs JupyterLab; papermill gets a note)"
    )

    @property
    def generation(self) -> GenerationSettings:
        return GenerationSettings.of(self)
