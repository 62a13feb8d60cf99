"""The rest of the recipe, searched together with the prompt: negative prompt, guidance scale, LoRA scale.

The likeness-meaning trade-off is not only in the words: a stronger LoRA pulls the face towards the person and
the picture towards the training photos, a higher guidance follows the prompt's words more literally, and a
negative prompt can keep away what spoils a face ("deformed face") or the scene. A candidate of the search is
therefore a prompt *and* a `Recipe`; every picture is cached under both, every row of candidates.csv records
both, and the held-out check and the paste-ready output carry both.

Each round of a recipe search spends a share (`RecipeSpace.share`, a quarter) of its candidates on recipe moves (one of the best candidates
so far, one searched setting changed: guidance or LoRA scale by a step within its range, or another negative
prompt from `NEGATIVE_PROMPTS`) and the rest on new prompts from the proposers, rendered with the best
candidate's recipe.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

RECIPE_PARTS = ("negative_prompt", "guidance", "lora_scale")
RECIPE_COLUMNS = list(RECIPE_PARTS)

# Curated negative prompts: each keeps one kind of failure away; "" is no negative prompt at all.
NEGATIVE_PROMPTS = (
    "",
    "blurry, lowres, jpeg artifacts",
    "deformed face, distorted features, asymmetric eyes",
    "bad anatomy, extra fingers, mutated hands",
    "multiple people, crowd, duplicate face",
    "cartoon, anime, illustration",
    "watermark, text, signature, logo",
    "out of frame, cropped head, face cut off",
    "plastic skin, airbrushed, waxy",
    "oversaturated, overexposed, harsh shadows",
)
GUIDANCE_STEP = 0.5  # guidance values are kept on this grid, so near-equal recipes are one cached picture
LORA_STEP = 0.05


@dataclass(frozen=True)
class Recipe:
    """Everything about a picture besides its prompt and seed that the search may change."""

    negative_prompt: str = ""
    guidance: float = 5.0
    lora_scale: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "negative_prompt": self.negative_prompt,
            "guidance": float(self.guidance),
            "lora_scale": float(self.lora_scale),
        }

    def describe(self) -> str:
        negative = f"negative prompt '{self.negative_prompt}'" if self.negative_prompt else "no negative prompt"
        return f"{negative}, guidance {self.guidance:g}, LoRA scale {self.lora_scale:g}"

    def differences(self, other: Recipe) -> list[str]:
        """The parts in which this recipe differs from `other`."""
        return [name for name in RECIPE_PARTS if getattr(self, name) != getattr(other, name)]

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Recipe | None:
        """The recipe recorded in a row of candidates.csv; None for a row without recipe columns."""
        if not all(name in row for name in RECIPE_PARTS):
            return None
        negative = row["negative_prompt"]
        negative = "" if negative is None or (isinstance(negative, float) and negative != negative) else str(negative)
        return cls(negative, float(row["guidance"]), float(row["lora_scale"]))


def _on_grid(value: float, step: float, low: float, high: float) -> float:
    return round(min(high, max(low, round(value / step) * step)), 4)


@dataclass
class RecipeSpace:
    """Which parts of the recipe are searched, within which ranges, starting from which recipe."""

    start: Recipe = field(default_factory=Recipe)
    parts: Sequence[str] = ()  # the searched parts; () searches the prompt only (the recipe stays `start`)
    guidance_range: tuple[float, float] = (3.0, 9.0)
    lora_scale_range: tuple[float, float] = (0.6, 1.2)
    negatives: Sequence[str] = NEGATIVE_PROMPTS
    share: float = 0.25  # of each round's candidates spent on recipe moves (the rest are new prompts)

    def __post_init__(self) -> None:
        self.parts = tuple(self.parts)
        unknown = [name for name in self.parts if name not in RECIPE_PARTS]
        if unknown:
            raise ValueError(f"search_recipe has {', '.join(unknown)}; allowed: {', '.join(RECIPE_PARTS)}.")
        self.guidance_range = (float(self.guidance_range[0]), float(self.guidance_range[1]))
        self.lora_scale_range = (float(self.lora_scale_range[0]), float(self.lora_scale_range[1]))
        self.negatives = tuple(dict.fromkeys([self.start.negative_prompt, *self.negatives]))

    @property
    def searching(self) -> bool:
        return bool(self.parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.start.to_dict(),
            "parts": list(self.parts),
            "guidance_range": list(self.guidance_range),
            "lora_scale_range": list(self.lora_scale_range),
            "negatives": list(self.negatives),
            "share": self.share,
        }

    def moves(self, count: int, round_index: int) -> int:
        """How many of a round's `count` candidates are recipe moves: `share` of them, the fraction carried
        over from round to round (share 0.25 of 4 candidates: one a round; of 2: one every other round)."""
        if not self.parts or count <= 0:
            return 0
        return min(
            count, int(self.share * count * round_index + 1e-9) - int(self.share * count * (round_index - 1) + 1e-9)
        )

    def mutate(self, recipe: Recipe, rng: random.Random) -> Recipe:
        """The recipe with one searched part changed (a step of guidance or LoRA scale, or another negative
        prompt); the same recipe when nothing is searched."""
        if not self.parts:
            return recipe
        part = rng.choice(list(self.parts))
        if part == "guidance":
            low, high = self.guidance_range
            value = recipe.guidance + rng.choice([-1, 1]) * rng.choice([0.5, 1.0, 1.5, 2.0])
            if rng.random() < 0.2:  # now and then a jump anywhere in the range
                value = rng.uniform(low, high)
            return Recipe(recipe.negative_prompt, _on_grid(value, GUIDANCE_STEP, low, high), recipe.lora_scale)
        if part == "lora_scale":
            low, high = self.lora_scale_range
            value = recipe.lora_scale + rng.choice([-1, 1]) * rng.choice([0.05, 0.1, 0.15, 0.2])
            if rng.random() < 0.2:
                value = rng.uniform(low, high)
            return Recipe(recipe.negative_prompt, recipe.guidance, _on_grid(value, LORA_STEP, low, high))
        others = [text for text in self.negatives if text != recipe.negative_prompt]
        if not others:
            return recipe
        if recipe.negative_prompt and rng.random() < 0.3:  # combine two kinds of failure to keep away
            extra = rng.choice([text for text in others if text])
            return Recipe(f"{recipe.negative_prompt}, {extra}", recipe.guidance, recipe.lora_scale)
        return Recipe(rng.choice(others), recipe.guidance, recipe.lora_scale)
