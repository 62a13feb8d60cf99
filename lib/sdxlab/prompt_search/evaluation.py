"""From a prompt to scores: generate its pictures on given seeds (each at most once, ever) and score them.

Every picture is cached on disk under a key made of the prompt, the seed and every generation setting that
changes the picture (model, LoRA file, scale, steps, guidance, size, scheduler, negative prompt). A resumed
search, a re-scored run or the held-out check never generates the same picture twice.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sdxlab import files
from sdxlab.prompt_search.objective import TOTAL, Intent, Objective
from sdxlab.settings.generation import DEFAULTS


class ImageGenerator(Protocol):
    """Makes one picture per (prompt, seed) pair; `settings` holds everything else that changes the picture.
    A generator that can change its recipe per call (negative prompt, guidance, LoRA scale) takes
    `options=Recipe.to_dict()` in `generate`."""

    settings: dict[str, Any]

    def generate(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[Any]: ...


class Evaluator(Protocol):
    """Scores (prompt, seed) pairs for an intent: one dict of sub-scores plus "total" per pair."""

    score_names: list[str]
    fingerprint: str

    def evaluate(self, intent: Intent, prompts: Sequence[str], seeds: Sequence[int]) -> list[dict[str, float]]: ...


def fingerprint(value: Any) -> str:
    """A short stable hash of JSON-able settings."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


class ImageCache:
    """PNG files named by the hash of (prompt, seed, settings), written atomically."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)

    def key(self, prompt: str, seed: int, settings: dict[str, Any]) -> str:
        return fingerprint({"prompt": prompt, "seed": int(seed), "settings": settings})

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.png"

    def get(self, key: str):
        from PIL import Image

        path = self.path(key)
        if not path.exists():
            return None
        try:
            with Image.open(path) as image:
                return image.convert("RGB")
        except OSError:  # unreadable (e.g. a disk filled up): generate it again
            return None

    def put(self, key: str, image) -> Path:
        return files.write_image(self.path(key), image)


@dataclass
class ImageEvaluator:
    """Generate (through the cache) and score with the objective."""

    generator: ImageGenerator
    objective: Objective
    cache: ImageCache
    generated: int = 0  # pictures actually generated (cache misses) since this evaluator was made

    @property
    def score_names(self) -> list[str]:
        return self.objective.score_names

    @property
    def fingerprint(self) -> str:
        return fingerprint({"generator": self.generator.settings, "objective": self.objective.description})

    @property
    def base_recipe(self):
        """The generator's own negative prompt, guidance and LoRA scale, as a `Recipe` (the search's start)."""
        from sdxlab.prompt_search.recipe import Recipe

        options = {**DEFAULTS.kwargs(), **getattr(self.generator, "options", {}), **self.generator.settings}
        return Recipe(
            str(options.get("negative_prompt") or ""), float(options["guidance"]), float(options["lora_scale"])
        )

    def picture_settings(self, recipe=None) -> dict[str, Any]:
        """What the cache key holds besides prompt and seed: the generator's settings with the recipe's."""
        return {**self.generator.settings, **(recipe.to_dict() if recipe is not None else {})}

    def images(self, prompts: Sequence[str], seeds: Sequence[int], recipes: Sequence | None = None) -> list:
        """One picture per pair (with its recipe, if given), generating only the ones the cache does not hold
        (one batch per recipe)."""
        if len(prompts) != len(seeds) or (recipes is not None and len(recipes) != len(prompts)):
            raise ValueError("prompts, seeds (and recipes) must pair up one to one.")
        recipes = list(recipes) if recipes is not None else [None] * len(prompts)
        keys = [
            self.cache.key(prompt, seed, self.picture_settings(recipe))
            for prompt, seed, recipe in zip(prompts, seeds, recipes, strict=True)
        ]
        images = [self.cache.get(key) for key in keys]
        missing = [index for index, image in enumerate(images) if image is None]
        for recipe in dict.fromkeys(recipes[index] for index in missing):
            group = [index for index in missing if recipes[index] == recipe]
            options = {} if recipe is None else {"options": recipe.to_dict()}
            fresh = self.generator.generate([prompts[i] for i in group], [seeds[i] for i in group], **options)
            for index, image in zip(group, fresh, strict=True):
                self.cache.put(keys[index], image)
                images[index] = image
            self.generated += len(group)
        return images

    def evaluate(
        self, intent: Intent, prompts: Sequence[str], seeds: Sequence[int], recipes: Sequence | None = None
    ) -> list[dict[str, float]]:
        images = self.images(prompts, seeds, recipes)
        return self.objective.score(images, intent) if images else []

    @property
    def notes(self) -> list[str]:
        """What the reader should know: scorers left out, a missing LoRA."""
        return list(getattr(getattr(self.generator, "sampler", None), "notes", [])) + list(self.objective.notes)

    def image(self, prompt: str, seed: int, recipe=None):
        """The picture of one pair (from the cache; generated if it was never made)."""
        return self.images([prompt], [seed], None if recipe is None else [recipe])[0]

    def image_path(self, prompt: str, seed: int, recipe=None) -> Path:
        return self.cache.path(self.cache.key(prompt, seed, self.picture_settings(recipe)))


class SamplerGenerator:
    """Adapts `sdxlab.sample.Sampler` to the search: fixed generation settings, one picture per (prompt, seed)."""

    def __init__(
        self, sampler, *, width: int | None = None, height: int | None = None, progress: bool = True, **generation
    ) -> None:
        """`generation`: any of `GenerationSettings`' fields (steps, guidance, scheduler, negative_prompt,
        lora_scale, batch_size); the library's defaults (`GenerationSettings()`) for the rest."""
        unknown = sorted(set(generation) - set(DEFAULTS.kwargs()))
        if unknown:
            raise TypeError(f"SamplerGenerator got unknown generation settings: {', '.join(unknown)}.")
        drawing = {**DEFAULTS.kwargs(), **generation}
        self.sampler = sampler
        self.options = {  # this order is the cache key's (and candidates.csv's settings column)
            "negative_prompt": drawing["negative_prompt"],
            "steps": int(drawing["steps"]),
            "guidance": float(drawing["guidance"]),
            "width": width,
            "height": height,
            "lora_scale": float(drawing["lora_scale"]),
            "scheduler": drawing["scheduler"],
        }
        self.batch_size = int(drawing["batch_size"])
        self.progress = progress
        lora = getattr(sampler, "lora", None)
        # batch size does not change a picture (every image has its own seeded generator); model, LoRA and tokens do
        self.settings = {
            **self.options,
            "model": str(getattr(sampler, "model", "")),
            "lora": file_identity(lora.path) if lora is not None else None,
            "tokens": list(getattr(sampler, "tokens", []) or []),
        }

    def generate(self, prompts: Sequence[str], seeds: Sequence[int], options: dict[str, Any] | None = None) -> list:
        """Pictures with the fixed settings, or with `options` (a recipe: negative prompt, guidance, LoRA scale)."""
        pairs = [(prompt, int(seed)) for prompt, seed in zip(prompts, seeds, strict=True)]
        results = self.sampler.generate_pairs(
            pairs, batch_size=self.batch_size, progress=self.progress, **{**self.options, **(options or {})}
        )
        return [result.image for result in results]


def evaluator_for_run(
    layout,
    weights: dict[str, float],
    *,
    model: str | None = None,
    device: str = "auto",
    clip_model: str = "tiny",
    resolution: int | None = None,
    vqa_model: str | None = None,
    intent_splitter=None,
    **generation: Any,
) -> ImageEvaluator:
    """Everything the search needs for one run: the run's model and LoRA (`Sampler.from_run`), the objective
    on the run's training photos (likeness calibrated with 04's `metrics/summary.json`), and the picture cache
    in `prompt_search/cache/`."""
    from sdxlab.prompt_search.objective import build_objective
    from sdxlab.sample import Sampler

    sampler = Sampler.from_run(layout, model=model, device=device)
    objective = build_objective(
        weights,
        dataset_dir=layout.dataset,
        metrics_dir=layout.metrics,
        clip_model=clip_model,
        device=device,
        subject_token=sampler.subject_token,
        class_word=sampler.class_word,
        vqa_model=vqa_model,
        intent_splitter=intent_splitter,
    )
    generator = SamplerGenerator(sampler, width=resolution, height=resolution, **generation)
    return ImageEvaluator(generator, objective, ImageCache(layout.prompt_search / "cache"))


def file_identity(path: str | os.PathLike | None) -> dict[str, Any] | None:
    """Name, size and modification time: enough to notice a retrained LoRA without hashing 100 MB."""
    if not path:
        return None
    path = Path(path)
    if not path.exists():
        return {"path": str(path)}
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def mean_scores(rows: Sequence[dict[str, float]], names: Sequence[str]) -> dict[str, float]:
    """Mean of each numeric sub-score and of the total over several seeds; NaN readings ("does not apply")
    are left out of a mean, labels (`weakest_part`) are not averaged."""
    import math

    from sdxlab.prompt_search.objective import cell

    means: dict[str, float] = {}
    if not rows:
        return means
    for name in [*names, TOTAL]:
        values = [cell(row.get(name, math.nan)) for row in rows]
        numbers = [value for value in values if isinstance(value, float)]
        if len(numbers) < len(values) and not numbers:
            continue  # a label column
        present = [value for value in numbers if not math.isnan(value)]
        means[name] = sum(present) / len(present) if present else math.nan
    return means
