"""How a picture is drawn: one declaration shared by sampling (03), training validation (02), the playground
and the prompt search (05).

Each stage exposes the fields it lets people change under its own prefix (`sample_steps`, `search_steps`,
`train_validation_steps`) with its own default, declared with `like(GenerationSettings, ...)`; help text and
allowed values come from here. The library's own defaults (`Sampler.generate`, the playground, the search's
generator) are this class's defaults.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from sdxlab.settings.base import Settings, setting

# The schedulers sdxlab builds (sdxlab.sample.sampler.SCHEDULERS must list the same; a test keeps them equal).
SCHEDULER_NAMES = ("euler", "euler_a", "dpmpp_2m", "dpmpp_2m_karras")


@dataclass
class GenerationSettings(Settings):
    """The knobs of one text-to-image call, apart from prompt, seed and size."""

    steps: int = setting(30, "denoising steps per image (30 for SDXL)", minimum=1)
    guidance: float = setting(
        5.0, "classifier-free guidance: how strictly images follow the prompt (5-7 for SDXL)", minimum=0
    )
    scheduler: str = setting(
        "euler", '"euler", "euler_a", "dpmpp_2m" or "dpmpp_2m_karras" (DPM++ 2M Karras)', choices=SCHEDULER_NAMES
    )
    negative_prompt: str = setting("", 'what to steer away from, for every image ("" for none)')
    lora_scale: float = setting(1.0, "LoRA strength: 0 gives the base model, 1 the LoRA as trained")
    batch_size: int = setting(
        1, "images per UNet call; lower it if the GPU runs out of memory (pictures do not depend on it)", minimum=1
    )

    @classmethod
    def of(cls, stage: Settings) -> GenerationSettings:
        """The generation settings a stage declares under the same field names (`steps`, `guidance`, ...)."""
        return cls(**{item.name: getattr(stage, item.name) for item in fields(cls)})

    def kwargs(self) -> dict:
        """As keyword arguments of `Sampler.generate`."""
        return asdict(self)


DEFAULTS = GenerationSettings()  # the library's defaults, for signatures that take the values one by one
