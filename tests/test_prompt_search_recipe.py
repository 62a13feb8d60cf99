"""The whole recipe searched with the prompt: negative prompt, guidance and LoRA scale per candidate, in the
cache key, in candidates.csv (and on resume), in the held-out check and the paste-ready output."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from sdxlab.prompt_search import report
from sdxlab.prompt_search.evaluation import ImageCache, ImageEvaluator
from sdxlab.prompt_search.heldout import heldout_for_search
from sdxlab.prompt_search.objective import Intent
from sdxlab.prompt_search.proposers import VocabularyProposer
from sdxlab.prompt_search.recipe import NEGATIVE_PROMPTS, Recipe, RecipeSpace
from sdxlab.prompt_search.search import SearchSettings, run_search

START = Recipe("", 5.0, 1.0)
BEST_GUIDANCE, BEST_LORA, BEST_NEGATIVE = 7.5, 0.8, "deformed face, distorted features, asymmetric eyes"


class RecipeWorld:
    """Scores without pictures: the prompt's words hardly matter, the recipe does (best at guidance 7.5, LoRA
    0.8, one negative prompt)."""

    score_names = ["meaning", "likeness"]
    fingerprint = "recipe-world-v1"

    def __init__(self):
        self.calls = []

    def scores(self, prompt, seed, recipe):
        meaning = 0.3 - 0.01 * abs(recipe.guidance - BEST_GUIDANCE) + 0.0001 * (len(prompt) % 7)
        likeness = (
            0.7 - 0.5 * abs(recipe.lora_scale - BEST_LORA) + (0.1 if recipe.negative_prompt == BEST_NEGATIVE else 0)
        )
        return {"meaning": meaning, "likeness": likeness, "total": meaning + 0.1 * likeness + 0.0001 * seed}

    def evaluate(self, intent, prompts, seeds, recipes=None):
        assert recipes is not None and len(recipes) == len(prompts)
        self.calls.append(list(zip(prompts, seeds, recipes, strict=True)))
        return [self.scores(p, s, r) for p, s, r in zip(prompts, seeds, recipes, strict=True)]


def space(parts=("negative_prompt", "guidance", "lora_scale")):
    return RecipeSpace(start=START, parts=parts, guidance_range=(3.0, 9.0), lora_scale_range=(0.6, 1.2))


def test_recipe_search_finds_better_settings_and_records_them_per_candidate(tmp_path):
    intent = Intent.create("{subject} as an astronaut on Mars", "sks", "person")
    world = RecipeWorld()
    settings = SearchSettings(rounds=30, candidates_per_round=4, seeds=[0, 1], seed=0, recipe=space())
    result = run_search(world, [intent], [VocabularyProposer()], settings, tmp_path, progress=False)
    search = result.intents[0]
    best = search.best()[0]
    assert best.total > search.start.total + 0.01
    assert abs(best.recipe.guidance - BEST_GUIDANCE) <= 1.0 and abs(best.recipe.lora_scale - BEST_LORA) <= 0.1
    assert best.recipe.negative_prompt.startswith(BEST_NEGATIVE)
    assert search.start.recipe == START and search.start.proposer == "start"

    frame = pd.read_csv(tmp_path / "candidates.csv", keep_default_na=False)
    assert {"negative_prompt", "guidance", "lora_scale"} <= set(frame.columns)
    assert frame["guidance"].between(3.0, 9.0).all() and frame["lora_scale"].between(0.6, 1.2).all()
    assert set(frame["proposer"]) == {"start", "vocabulary", "recipe"}
    assert not frame.duplicated(["prompt", "negative_prompt", "guidance", "lora_scale", "seed"]).any()
    # the same prompt with another recipe is another candidate, rendered with that recipe
    assert (frame["prompt"] == intent.start_prompt).sum() > 2

    resumed = run_search(world, [intent], [VocabularyProposer()], settings, tmp_path, progress=False)
    assert resumed.resumed_rows == len(frame)
    assert resumed.intents[0].best()[0].key == best.key

    checks = heldout_for_search(world, resumed, [100, 101, 102, 103, 104, 105], finalists=2)
    rendered = world.calls[-1]
    assert {recipe for _, _, recipe in rendered} == {START, best.recipe}, "the held-out check renders each recipe"
    assert checks[0].search_pick.recipe == best.recipe and checks[0].search_pick.uplift.mean > 0
    summary = report.best_prompts_summary(resumed, checks)
    assert summary["intents"][0]["headline"]["recipe"] == best.recipe.to_dict()
    text = report.paste_ready(summary)
    assert f"guidance {best.recipe.guidance:g}, LoRA scale {best.recipe.lora_scale:g}" in text


def test_prompt_only_search_keeps_the_start_recipe(tmp_path):
    intent = Intent.create("{subject} as an astronaut on Mars", "sks", "person")
    settings = SearchSettings(rounds=3, candidates_per_round=4, seeds=[0], recipe=space(parts=()))
    result = run_search(RecipeWorld(), [intent], [VocabularyProposer()], settings, tmp_path, progress=False)
    assert {item.recipe for item in result.intents[0].history} == {START}


def test_mutations_stay_in_range_and_on_the_grid():
    rng, recipe, seen = random.Random(0), START, set()
    for _ in range(300):
        recipe = space().mutate(recipe, rng)
        seen.add(recipe)
        assert 3.0 <= recipe.guidance <= 9.0 and 0.6 <= recipe.lora_scale <= 1.2
        assert recipe.guidance * 2 == int(recipe.guidance * 2) and round(recipe.lora_scale * 20, 6) % 1 == 0
    assert len({r.guidance for r in seen}) > 5 and len({r.negative_prompt for r in seen}) > 3
    assert space(parts=()).mutate(START, rng) == START
    with pytest.raises(ValueError, match="search_recipe"):
        RecipeSpace(parts=("steps",))
    assert "" in NEGATIVE_PROMPTS


class Generator:
    def __init__(self):
        self.settings = {"kind": "flat", "negative_prompt": "", "guidance": 5.0, "lora_scale": 1.0}
        self.options = dict(self.settings)
        self.calls = []

    def generate(self, prompts, seeds, options=None):
        self.calls.append((list(prompts), dict(options or {})))
        value = int(10 * (options or self.options)["guidance"])
        return [Image.fromarray(np.full((8, 8, 3), value, dtype="uint8")) for _ in prompts]


class Nothing:
    score_names = []

    def score(self, images, intent):
        return [{} for _ in images]


def test_the_recipe_is_in_the_picture_cache_key(tmp_path):
    generator = Generator()
    evaluator = ImageEvaluator(generator, Nothing(), ImageCache(tmp_path))
    assert evaluator.base_recipe == START
    plain = evaluator.images(["p"], [0])
    same = evaluator.images(["p"], [0], [START])  # the generator's own recipe is the same picture
    assert len(generator.calls) == 1 and np.array_equal(np.asarray(plain[0]), np.asarray(same[0]))
    other = evaluator.images(["p", "p"], [0, 1], [Recipe("", 8.0, 1.0), Recipe("", 8.0, 1.0)])
    assert generator.calls[-1] == (["p", "p"], {"negative_prompt": "", "guidance": 8.0, "lora_scale": 1.0})
    assert np.asarray(other[0])[0, 0, 0] == 80 and evaluator.image_path("p", 0, Recipe("", 8.0, 1.0)).exists()
    assert evaluator.image_path("p", 0, Recipe("", 8.0, 1.0)) != evaluator.image_path("p", 0)
