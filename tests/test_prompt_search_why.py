"""Why the headline wins: each added phrase removed, each recipe setting put back, and the sub-scores' moves."""

from __future__ import annotations

import pytest

from sdxlab.prompt_search.objective import Intent
from sdxlab.prompt_search.proposers import ScoredPrompt
from sdxlab.prompt_search.recipe import Recipe
from sdxlab.prompt_search.why import added_parts, leave_one_out


class World:
    """ "golden hour lighting" adds meaning, LoRA scale 0.8 adds likeness; nothing else matters."""

    score_names = ["clip_t", "likeness"]

    def __init__(self):
        self.rendered = []

    def evaluate(self, intent, prompts, seeds, recipes=None):
        self.rendered += list(zip(prompts, seeds, recipes or [None] * len(prompts), strict=True))
        rows = []
        for prompt, seed, recipe in zip(prompts, seeds, recipes, strict=True):
            clip = 0.25 + (0.03 if "golden hour lighting" in prompt else 0.0) + 0.001 * seed
            likeness = 0.6 + (0.2 if recipe.lora_scale == 0.8 else 0.0)
            rows.append({"clip_t": clip, "likeness": likeness, "total": clip + 0.05 * likeness})
        return rows


def test_each_added_part_and_recipe_setting_is_taken_away_once_and_its_effect_shown():
    intent = Intent.create("{subject} as an astronaut on Mars", "sks", "person")
    start = ScoredPrompt(intent.start_prompt, {}, recipe=Recipe("", 5.0, 1.0))
    pick = ScoredPrompt(
        f"{intent.start_prompt}, golden hour lighting, 8k",
        {},
        recipe=Recipe("blurry, lowres, jpeg artifacts", 7.0, 0.8),
    )
    assert added_parts(pick.prompt, start.prompt) == ["golden hour lighting", "8k"]
    world = World()
    rows = leave_one_out(world, intent, pick, start, [0, 1], max_parts=6)
    by = {row["kind"] if row["kind"] != "words" else row["removed"]: row for row in rows}
    assert set(by) == {"headline", "golden hour lighting", "8k", "negative_prompt", "guidance", "lora_scale"}
    assert by["golden hour lighting"]["change_clip_t"] == pytest.approx(-0.03)
    assert by["golden hour lighting"]["change_total"] == pytest.approx(-0.03)
    assert by["8k"]["change_total"] == pytest.approx(0.0)
    assert by["lora_scale"]["change_likeness"] == pytest.approx(-0.2) and by["lora_scale"]["lora_scale"] == 1.0
    assert by["guidance"]["change_total"] == pytest.approx(0.0) and by["guidance"]["guidance"] == 5.0
    assert by["headline"]["change_total"] == 0.0
    assert (
        "golden hour lighting" not in by["golden hour lighting"]["prompt"]
        and "8k" in by["golden hour lighting"]["prompt"]
    )
    assert len(world.rendered) == 6 * 2

    bounded = World()
    assert len(leave_one_out(bounded, intent, pick, start, [0, 1], max_parts=2)) == 3
    assert len(bounded.rendered) == 3 * 2, "the number of variants is bounded by the parameter"
