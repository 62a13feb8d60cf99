"""Does the prompt search beat simple baselines at the same render budget? A synthetic but realistic objective.

No image model is involved: a "world" plants effects on the prompt parts of the real vocabulary
(`sdxlab.prompt_search.vocabulary.PROMPT_PARTS`) and every "picture" (prompt, seed) gets scores drawn from it
with the noise real scorers show. The objective is the default one (`total = clip_t + 0.05 x likeness`).

Assumptions of the world (plausible sizes for CLIP ViT-L/14 and dlib on SDXL pictures, not measurements):

- meaning (CLIP-T): 0.25 for the bare intent; 4 planted good parts (+0.012 to +0.025 each), 4 planted bad parts
  (-0.010 to -0.030), every other part +-0.003; more than 4 added parts dilute the prompt (-0.004 each).
  Framing words trade meaning against the face: for a scene like "astronaut on Mars", "full body shot" and
  "wide angle" show more of the intent (+0.015, +0.010) but lose the face more often; "close-up portrait" and
  "head and shoulders" keep the face (-0.015, -0.010 on meaning).
- likeness (calibrated position): 0.75 +- 0.12 from seed to seed; mediums that repaint the face lower it
  (oil painting -0.15 ... 3d render -0.30); no face found puts it at 0 (the floor). The chance to lose the face
  is 10% for the bare intent and depends on the framing words (full body shot 58%, close-up 2%).
- seed to seed: CLIP-T +-0.015 per picture, plus a per-seed offset shared by all prompts (+-0.010 CLIP-T,
  +-0.05 likeness) that cancels in paired comparisons. The same (prompt, seed) always gives the same scores.

Methods, each given the same number of pictures per intent (round 0, the starting prompt on the search seeds,
included):

- "sdxlab SxC": `sdxlab.prompt_search.run_search` with the vocabulary proposer, S search seeds per candidate
  and C candidates per round, stopped by `max_images`;
- "random": random prompts (the intent plus 1-6 random parts of the same vocabulary), each on 2 seeds;
- "hill-climb": greedy hill-climbing from the start (one random add/drop/swap of the best so far, kept if its
  mean on 2 seeds is higher);
- "start": your starting prompt (no search).

Reported per budget, averaged over worlds: **share** of the reachable optimum found,
(V(pick) - V(start)) / (V(optimum) - V(start)) with V the noise-free expected total and the optimum computed
exactly over the vocabulary (see `reachable_optimum`); the **true uplift** V(pick) - V(start); the
**held-out uplift** as the held-out check would measure it on 8 fresh seeds; and how often the pick is truly
**worse** than the start.

    .venv/bin/python bench/bench_prompt_search.py                # about 1.5 CPU-minutes
    .venv/bin/python bench/bench_prompt_search.py --worlds 100   # tighter averages
    .venv/bin/python bench/bench_prompt_search.py --recipe       # joint recipe search vs prompt only (~1 CPU-minute)

With `--recipe` the world also has recipe effects (assumptions, not measurements; all zero at the start recipe:
no negative prompt, guidance 5, LoRA scale 1), and joint search of prompt + recipe (`search_recipe`) is compared
with prompt-only search (the recipe kept at the start) at the same number of pictures:

- guidance g: meaning -0.0012 x ((g - g*)^2 - (5 - g*)^2) with the world's best g* drawn in 5.5..8 (up to +0.011
  CLIP-T), and likeness -0.02 per unit of guidance above 5 (over-guided faces are stylised);
- LoRA scale s: likeness +0.5 (s - 1) - 0.8 (s - 1)^2 (a weaker LoRA looks less like you), meaning -0.04 (s - 1)
  (a stronger one pulls the picture towards the training photos): the likeness-meaning trade-off itself;
- negative prompts (the curated `sdxlab.prompt_search.recipe.NEGATIVE_PROMPTS`): each +-0.004 CLIP-T (drawn per
  world); "deformed face ..." +0.04 likeness and a lower face-loss hazard (-0.3), "multiple people ..." +0.03
  likeness, "out of frame ..." a much lower face-loss hazard (-0.8) at -0.004 CLIP-T; each extra negative
  prompt joined to another -0.002 CLIP-T;
- the same prompt on the same seed with another recipe is mostly the same picture (same composition): its
  per-picture noise has correlation 0.8 with the start recipe's, and whether the face is lost is decided by
  the same draw against the recipe's own hazard.

Reported: the pick's true (noise-free) uplift over the start, its true likeness and meaning, and the **front**:
the hypervolume (x 1000) of the true (likeness, meaning) of the candidates on the likeness x meaning front as
the search measured it (what the person chooses from), above the reference point (likeness 0, start's meaning
- 0.02): more is a front further up and to the right.

Prints one table and appends one JSON line (device, date, versions, figures) to bench/results.jsonl.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import math
import os
import platform
import random
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sdxlab.prompt_search.objective import Intent
from sdxlab.prompt_search.pareto import pareto_front
from sdxlab.prompt_search.proposers import VocabularyProposer
from sdxlab.prompt_search.recipe import NEGATIVE_PROMPTS, Recipe, RecipeSpace
from sdxlab.prompt_search.search import SearchSettings, run_search
from sdxlab.prompt_search.vocabulary import PROMPT_PARTS, normalise, prompt_key, split_parts
from sdxlab.settings.common import CLASS_WORD, SUBJECT_TOKEN

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_FILE = BENCH_DIR / "results.jsonl"
INTENT = "a photo of {subject} as an astronaut on Mars"
LIKENESS_WEIGHT = 0.05
HELDOUT_SEEDS = [100_000 + index for index in range(8)]

BASE_CLIP, BASE_LIKENESS, LIKENESS_SD, CLIP_SD = 0.25, 0.75, 0.12, 0.015
SEED_CLIP_SD, SEED_LIKENESS_SD = 0.010, 0.05
BASE_LOSS_LOGIT = math.log(0.1 / 0.9)  # 10% of pictures of the bare intent lose the face
DILUTION, FREE_PARTS = 0.004, 4
FRAMING = {  # part: (meaning, face-loss hazard on the logit scale)
    "full body shot": (0.015, 2.5),
    "wide angle": (0.010, 2.0),
    "medium shot": (0.004, 0.8),
    "35mm lens": (0.0, 0.3),
    "close-up portrait": (-0.015, -1.7),
    "head and shoulders": (-0.010, -1.2),
    "85mm lens": (0.0, -0.4),
}
REPAINTS_FACE = {
    "oil painting": -0.15,
    "watercolor": -0.20,
    "pop art": -0.25,
    "3d render": -0.30,
    "charcoal sketch": -0.20,
    "ink illustration": -0.20,
    "detailed skin texture": 0.05,
    "natural skin": 0.05,
    "soft window light": 0.03,
}
START_RECIPE = Recipe("", 5.0, 1.0)
RECIPE_NOISE_CORRELATION = 0.8  # same prompt and seed, another recipe: how alike the per-picture noise is
FACE_NEGATIVES = {  # negative prompt: (likeness, face-loss hazard, meaning) besides its drawn meaning effect
    "deformed face, distorted features, asymmetric eyes": (0.04, -0.3, 0.0),
    "multiple people, crowd, duplicate face": (0.03, 0.0, 0.0),
    "out of frame, cropped head, face cut off": (0.0, -0.8, -0.004),
}


@dataclass
class RecipeEffects:
    """What negative prompt, guidance and LoRA scale do in one world; every effect is 0 at `START_RECIPE`."""

    guidance_best: float
    negative_clip: dict[str, float]
    lora_meaning: float = 0.04  # meaning lost per unit of LoRA scale (more for a LoRA that overfits its photos)

    @classmethod
    def draw(cls, seed: int, lora_meaning: float = 0.04) -> RecipeEffects:
        rng = np.random.default_rng([seed, 7])
        return cls(
            float(rng.uniform(5.5, 8.0)),
            {text: float(rng.normal(0, 0.004)) for text in NEGATIVE_PROMPTS if text},
            lora_meaning,
        )

    def negatives(self, recipe: Recipe) -> list[str]:
        return [text for text in self.negative_clip if text in recipe.negative_prompt]

    def clip(self, recipe: Recipe) -> float:
        g, s, best = recipe.guidance, recipe.lora_scale, self.guidance_best
        negatives = self.negatives(recipe)
        return (
            -0.0012 * ((g - best) ** 2 - (5.0 - best) ** 2)
            - self.lora_meaning * (s - 1.0)
            + sum(self.negative_clip[t] + FACE_NEGATIVES.get(t, (0, 0, 0))[2] for t in negatives)
            - 0.002 * max(0, len(negatives) - 1)
        )

    def likeness(self, recipe: Recipe) -> float:
        s = recipe.lora_scale
        return (
            -0.02 * max(0.0, recipe.guidance - 5.0)
            + 0.5 * (s - 1.0)
            - 0.8 * (s - 1.0) ** 2
            + sum(FACE_NEGATIVES.get(t, (0, 0, 0))[0] for t in self.negatives(recipe))
        )

    def hazard(self, recipe: Recipe) -> float:
        return sum(FACE_NEGATIVES.get(t, (0, 0, 0))[1] for t in self.negatives(recipe))


ALL_PARTS = [normalise(word) for words in PROMPT_PARTS.values() for word in words]
CATEGORY = {normalise(word): name for name, words in PROMPT_PARTS.items() for word in words}


@dataclass
class World:
    clip: dict[str, float]  # meaning gain per part
    likeness: dict[str, float]  # likeness shift per part
    hazard: dict[str, float]  # face-loss hazard per part
    seed: int
    recipe: RecipeEffects | None = None  # None: the recipe changes nothing (the prompt-only benchmark)

    @classmethod
    def draw(cls, seed: int) -> World:
        rng = np.random.default_rng(seed)
        clip = {part: float(rng.normal(0, 0.003)) for part in ALL_PARTS}
        plain = [part for part in ALL_PARTS if part not in FRAMING and part not in REPAINTS_FACE]
        chosen = rng.choice(len(plain), size=8, replace=False)
        for index, which in enumerate(chosen):
            clip[plain[which]] = float(rng.uniform(0.012, 0.025) if index < 4 else rng.uniform(-0.030, -0.010))
        for part, (meaning, _) in FRAMING.items():
            clip[part] = meaning
        return cls(
            clip,
            {part: REPAINTS_FACE.get(part, 0.0) for part in ALL_PARTS},
            {part: FRAMING.get(part, (0, 0.0))[1] for part in ALL_PARTS},
            seed,
        )

    def effects(self, recipe: Recipe | None) -> tuple[float, float, float]:
        """(meaning, likeness, hazard) shifts of a recipe."""
        if recipe is None or self.recipe is None:
            return 0.0, 0.0, 0.0
        return self.recipe.clip(recipe), self.recipe.likeness(recipe), self.recipe.hazard(recipe)

    def expected(self, parts: list[str], recipe: Recipe | None = None) -> tuple[float, float]:
        """Noise-free (meaning, expected likeness column) of a candidate."""
        clip_shift, likeness_shift, hazard_shift = self.effects(recipe)
        clip = BASE_CLIP + sum(self.clip[p] for p in parts) - DILUTION * max(0, len(parts) - FREE_PARTS) + clip_shift
        keep = 1 - sigmoid(BASE_LOSS_LOGIT + sum(self.hazard[p] for p in parts) + hazard_shift)
        mean = BASE_LIKENESS + sum(self.likeness[p] for p in parts) + likeness_shift
        return clip, keep * positive_part_mean(mean, math.hypot(LIKENESS_SD, SEED_LIKENESS_SD))

    def parts(self, prompt: str) -> list[str]:
        return [part.key for part in split_parts(prompt) if part.key in self.clip]

    def value(self, parts: list[str], recipe: Recipe | None = None) -> float:
        """The noise-free expected total of a prompt made of the intent and these parts (with this recipe)."""
        clip, likeness = self.expected(parts, recipe)
        return clip + LIKENESS_WEIGHT * likeness

    def picture(self, prompt: str, seed: int, recipe: Recipe | None = None) -> dict[str, float]:
        parts = self.parts(prompt)
        clip_shift, likeness_shift, hazard_shift = self.effects(recipe)
        shared = np.random.default_rng([self.seed, 1, seed])  # the seed's own luck, the same for every prompt
        seed_clip, seed_likeness = shared.normal(0, SEED_CLIP_SD), shared.normal(0, SEED_LIKENESS_SD)
        rng = np.random.default_rng([self.seed, 2, seed, zlib.crc32(prompt_key(prompt).encode())])
        clip_noise, face_draw, likeness_noise = rng.normal(0, CLIP_SD), rng.random(), rng.normal(0, LIKENESS_SD)
        if recipe not in (None, START_RECIPE):
            # the same prompt and seed with another recipe is mostly the same picture: its noise is correlated
            own = np.random.default_rng([self.seed, 3, seed, zlib.crc32((prompt_key(prompt) + repr(recipe)).encode())])
            mix = math.sqrt(1 - RECIPE_NOISE_CORRELATION**2)
            clip_noise = RECIPE_NOISE_CORRELATION * clip_noise + mix * own.normal(0, CLIP_SD)
            likeness_noise = RECIPE_NOISE_CORRELATION * likeness_noise + mix * own.normal(0, LIKENESS_SD)
        clip = (
            BASE_CLIP
            + sum(self.clip[p] for p in parts)
            - DILUTION * max(0, len(parts) - FREE_PARTS)
            + clip_shift
            + seed_clip
            + clip_noise
        )
        lost = face_draw < sigmoid(BASE_LOSS_LOGIT + sum(self.hazard[p] for p in parts) + hazard_shift)
        position = max(
            0.0, BASE_LIKENESS + sum(self.likeness[p] for p in parts) + likeness_shift + seed_likeness + likeness_noise
        )
        likeness = 0.0 if lost else position
        return {
            "clip_t": clip,
            "likeness": likeness,
            "face_found": float(not lost),
            "total": clip + LIKENESS_WEIGHT * likeness,
        }


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def positive_part_mean(mean: float, sd: float) -> float:
    """E[max(X, 0)] for X ~ N(mean, sd)."""
    z = mean / sd
    return mean * 0.5 * (1 + math.erf(z / math.sqrt(2))) + sd * math.exp(-z * z / 2) / math.sqrt(2 * math.pi)


def reachable_optimum(world: World) -> tuple[float, list[str]]:
    """The best noise-free total over prompts made of the intent and any set of vocabulary parts.

    Parts that touch the face (framing, mediums that repaint it) are enumerated in every combination of up to
    four; for each, the other parts only add meaning, so the best ones are added greedily while each gains
    more than the dilution it costs (the dilution is convex in the number of parts, so greedy is exact)."""
    special = [part for part in ALL_PARTS if world.hazard[part] or world.likeness[part]]
    plain = sorted((part for part in ALL_PARTS if part not in special), key=lambda part: -world.clip[part])
    best, best_parts = -math.inf, []
    for size in range(5):
        for combo in itertools.combinations(special, size):
            parts = list(combo)
            for part in plain:
                cost = DILUTION if len(parts) >= FREE_PARTS else 0.0
                if world.clip[part] <= cost:
                    break
                parts.append(part)
            value = world.value(parts)
            if value > best:
                best, best_parts = value, parts
    return best, best_parts


class BenchEvaluator:
    """The search's Evaluator interface on a synthetic world; counts pictures rendered."""

    score_names = ["clip_t", "likeness", "face_found"]

    def __init__(self, world: World) -> None:
        self.world = world
        self.fingerprint = f"bench-world-{world.seed}"
        self.rendered: set[tuple[str, int]] = set()

    def evaluate(self, intent, prompts, seeds, recipes=None):
        recipes = list(recipes) if recipes is not None else [None] * len(prompts)
        self.rendered.update(zip(prompts, seeds, recipes, strict=True))
        return [
            self.world.picture(prompt, seed, recipe)
            for prompt, seed, recipe in zip(prompts, seeds, recipes, strict=True)
        ]

    def mean_total(self, prompt: str, seeds) -> float:
        return float(np.mean([row["total"] for row in self.evaluate(None, [prompt] * len(seeds), list(seeds))]))


def search_sdxlab(
    world: World, intent: Intent, budget: int, seeds: int, candidates: int, seed: int, folder: Path
) -> str:
    evaluator = BenchEvaluator(world)
    settings = SearchSettings(
        rounds=10_000, candidates_per_round=candidates, seeds=list(range(seeds)), top_k=4, max_images=budget, seed=seed
    )
    result = run_search(evaluator, [intent], [VocabularyProposer()], settings, folder, resume=False, progress=False)
    return result.intents[0].best()[0].prompt


def search_recipe(
    world: World,
    intent: Intent,
    budget: int,
    seed: int,
    folder: Path,
    parts: tuple[str, ...],
    seeds: int = 2,
    candidates: int = 4,
) -> dict[str, float]:
    """sdxlab's search with `search_recipe = parts` (() = prompt only); the pick and the front, measured truly."""
    evaluator = BenchEvaluator(world)
    space = RecipeSpace(start=START_RECIPE, parts=parts)
    settings = SearchSettings(
        rounds=10_000,
        candidates_per_round=candidates,
        seeds=list(range(seeds)),
        top_k=4,
        max_images=budget,
        seed=seed,
        recipe=space,
    )
    result = run_search(evaluator, [intent], [VocabularyProposer()], settings, folder, resume=False, progress=False)
    search = result.intents[0]
    pick = search.best()[0]
    start_value = world.value(world.parts(intent.start_prompt), START_RECIPE)
    start_meaning, _ = world.expected(world.parts(intent.start_prompt), START_RECIPE)
    meaning, likeness = world.expected(world.parts(pick.prompt), pick.recipe)
    front = [world.expected(world.parts(item.prompt), item.recipe) for item in pareto_front(search.history)]
    return {
        "true_uplift": world.value(world.parts(pick.prompt), pick.recipe) - start_value,
        "measured_uplift": pick.total - search.start.total,
        "likeness": likeness,
        "meaning": meaning,
        "front": 1000 * hypervolume([(lk, mn) for mn, lk in front], (0.0, start_meaning - 0.02)),
        "worse": float(world.value(world.parts(pick.prompt), pick.recipe) < start_value - 1e-12),
        "rendered": float(len(evaluator.rendered)),
    }


def hypervolume(points: list[tuple[float, float]], reference: tuple[float, float]) -> float:
    """Area dominated by (x, y) points (both higher is better) above `reference`."""
    area, best_y = 0.0, reference[1]
    for x, y in sorted(points, key=lambda point: -point[0]):
        if x > reference[0] and y > best_y:
            area += (x - reference[0]) * (y - best_y)
            best_y = y
    return area


def main_recipe(args: argparse.Namespace) -> int:
    intent = Intent.create(INTENT, SUBJECT_TOKEN, CLASS_WORD)
    methods = {"prompt only": (), "prompt + recipe": ("negative_prompt", "guidance", "lora_scale")}
    collected: dict[tuple[str, int], list[dict[str, float]]] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sdxlab-bench-recipe-") as temporary:
        for index in range(args.worlds):
            world = World.draw(1000 + index)
            world.recipe = RecipeEffects.draw(1000 + index, args.lora_meaning)
            for budget in args.budgets:
                for method, parts in methods.items():
                    folder = Path(temporary) / f"{index}-{budget}-{len(parts)}"
                    collected.setdefault((method, budget), []).append(
                        search_recipe(world, intent, budget, index, folder, parts)
                    )
    wall = time.perf_counter() - started
    figures = []
    for (method, budget), rows in collected.items():
        figure = {"method": method, "pictures": budget, "worlds": len(rows)}
        for key in rows[0]:
            values = np.array([row[key] for row in rows])
            figure[key] = float(values.mean())
            figure[f"{key}_se"] = float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else 0.0
        figures.append(figure)
    print(
        f"\nRecipe benchmark (LoRA meaning {args.lora_meaning:g}/unit): {args.worlds} worlds, {wall:.0f} s. Joint prompt + recipe search against prompt-only "
        "search at equal pictures; true (noise-free) values; front: hypervolume x 1000 (more is better)."
    )
    print(
        f"{'method':16} {'pictures':>8} {'true uplift':>16} {'likeness':>8} {'meaning':>8} {'front':>12} {'worse':>6}"
    )
    for f in sorted(figures, key=lambda f: (f["pictures"], f["method"])):
        print(
            f"{f['method']:16} {f['pictures']:>8} {f['true_uplift']:>+8.4f} ±{f['true_uplift_se']:.4f} "
            f"(measured {f['measured_uplift']:+.4f}) "
            f"{f['likeness']:>8.3f} {f['meaning']:>8.4f} {f['front']:>6.2f} ±{f['front_se']:.2f} {f['worse']:>6.2f}"
        )
    record = {
        "bench": "prompt_search_recipe",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
        "versions": versions(),
        "objective": f"total = clip_t + {LIKENESS_WEIGHT} x likeness (synthetic world with recipe effects)",
        "lora_meaning": args.lora_meaning,
        "worlds": args.worlds,
        "wall_seconds": round(wall, 1),
        "figures": figures,
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    with open(args.results, "a", encoding="utf-8") as results:
        results.write(json.dumps(record) + "\n")
    print(f"Appended to {args.results}.")
    return 0


def mutate(parts: list[str], rng: random.Random) -> list[str]:
    parts = list(parts)
    kind = rng.choices(["add", "drop", "swap"], weights=[0.5, 0.2, 0.3])[0] if parts else "add"
    if kind == "add":
        parts.append(rng.choice([part for part in ALL_PARTS if part not in parts]))
    elif kind == "drop":
        parts.pop(rng.randrange(len(parts)))
    else:
        index = rng.randrange(len(parts))
        same = [p for p in ALL_PARTS if CATEGORY[p] == CATEGORY[parts[index]] and p not in parts]
        if same:
            parts[index] = rng.choice(same)
    return parts


def as_prompt(intent: Intent, parts: list[str]) -> str:
    return ", ".join([intent.start_prompt, *parts])


def search_random(world: World, intent: Intent, budget: int, seed: int, seeds: int = 2) -> str:
    rng, evaluator = random.Random(seed), BenchEvaluator(world)
    best, best_score = intent.start_prompt, evaluator.mean_total(intent.start_prompt, range(seeds))
    tried = {prompt_key(best)}
    while len(evaluator.rendered) + seeds <= budget:
        prompt = as_prompt(intent, rng.sample(ALL_PARTS, rng.randint(1, 6)))
        if prompt_key(prompt) in tried:
            continue
        tried.add(prompt_key(prompt))
        score = evaluator.mean_total(prompt, range(seeds))
        if score > best_score:
            best, best_score = prompt, score
    return best


def search_hill_climb(world: World, intent: Intent, budget: int, seed: int, seeds: int = 2) -> str:
    rng, evaluator = random.Random(seed), BenchEvaluator(world)
    current, current_score = [], evaluator.mean_total(intent.start_prompt, range(seeds))
    tried, stale = {prompt_key(intent.start_prompt)}, 0
    while len(evaluator.rendered) + seeds <= budget and stale < 1000:
        parts = mutate(current, rng)
        prompt = as_prompt(intent, parts)
        if prompt_key(prompt) in tried:
            stale += 1
            continue
        tried.add(prompt_key(prompt))
        score = evaluator.mean_total(prompt, range(seeds))
        if score > current_score:
            current, current_score = parts, score
    return as_prompt(intent, current)


def measure(world: World, intent: Intent, pick: str, optimum: float) -> dict[str, float]:
    start = intent.start_prompt
    start_value, pick_value = world.value(world.parts(start)), world.value(world.parts(pick))
    heldout = np.mean([world.picture(pick, s)["total"] - world.picture(start, s)["total"] for s in HELDOUT_SEEDS])
    span = optimum - start_value
    return {
        "share": (pick_value - start_value) / span if span > 0 else 1.0,
        "true_uplift": pick_value - start_value,
        "heldout_uplift": float(heldout),
        "worse": float(pick_value < start_value - 1e-12),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", type=int, default=24, help="synthetic worlds (intents) averaged over")
    parser.add_argument(
        "--budgets", type=int, nargs="+", default=[26, 50, 102, 204, 404], help="pictures per intent, round 0 included"
    )
    parser.add_argument(
        "--configs",
        nargs="+",
        default=["1x4", "2x4", "4x5"],
        help="sdxlab variants as SEEDSxCANDIDATES (seeds per candidate x candidates per round)",
    )
    parser.add_argument("--results", type=Path, default=RESULTS_FILE)
    parser.add_argument(
        "--recipe",
        action="store_true",
        help="compare joint prompt + recipe search with prompt-only search (budgets default 50 102 204)",
    )
    parser.add_argument(
        "--lora-meaning",
        type=float,
        default=0.04,
        help="--recipe: CLIP-T lost per unit of LoRA scale (0.04; try 0.1 for a LoRA that overfits)",
    )
    args = parser.parse_args(argv)
    if args.recipe and "--budgets" not in (argv if argv is not None else sys.argv):
        args.budgets = [50, 102, 204]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.recipe:
        return main_recipe(args)
    intent = Intent.create(INTENT, SUBJECT_TOKEN, CLASS_WORD)
    configs = [tuple(int(value) for value in config.split("x")) for config in args.configs]
    methods = [f"sdxlab {s}x{c}" for s, c in configs] + ["random", "hill-climb", "start"]
    collected: dict[tuple[str, int], list[dict[str, float]]] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sdxlab-bench-search-") as temporary:
        for index in range(args.worlds):
            world = World.draw(1000 + index)
            optimum, _ = reachable_optimum(world)
            for budget in args.budgets:
                picks = {
                    f"sdxlab {s}x{c}": search_sdxlab(
                        world, intent, budget, s, c, index, Path(temporary) / f"{index}-{budget}-{s}x{c}"
                    )
                    for s, c in configs
                }
                picks["random"] = search_random(world, intent, budget, index)
                picks["hill-climb"] = search_hill_climb(world, intent, budget, index)
                picks["start"] = intent.start_prompt
                for method, pick in picks.items():
                    collected.setdefault((method, budget), []).append(measure(world, intent, pick, optimum))
    wall = time.perf_counter() - started
    figures = []
    for method in methods:
        for budget in args.budgets:
            rows = collected[(method, budget)]
            figure = {"method": method, "pictures": budget, "worlds": len(rows)}
            for key in ("share", "true_uplift", "heldout_uplift", "worse"):
                values = np.array([row[key] for row in rows])
                figure[key] = float(values.mean())
                figure[f"{key}_se"] = float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else 0.0
            figures.append(figure)
    print_table(figures, args.worlds, wall)
    record = {
        "bench": "prompt_search",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
        "versions": versions(),
        "objective": f"total = clip_t + {LIKENESS_WEIGHT} x likeness (synthetic world)",
        "worlds": args.worlds,
        "heldout_seeds": len(HELDOUT_SEEDS),
        "wall_seconds": round(wall, 1),
        "figures": figures,
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    with open(args.results, "a", encoding="utf-8") as results:
        results.write(json.dumps(record) + "\n")
    print(f"Appended to {args.results}.")
    return 0


def print_table(figures: list[dict], worlds: int, wall: float) -> None:
    print(
        f"\nSynthetic prompt-search benchmark: {worlds} worlds, {wall:.0f} s. share: of the reachable optimum "
        "(noise-free); uplifts in total units (0.01 = one CLIP-T hundredth); worse: pick truly below the start."
    )
    print(f"{'method':16} {'pictures':>8} {'share':>12} {'true uplift':>14} {'held-out uplift':>16} {'worse':>6}")
    for f in figures:
        print(
            f"{f['method']:16} {f['pictures']:>8} {f['share']:>6.2f} ±{f['share_se']:.2f} "
            f"{f['true_uplift']:>+8.4f} ±{f['true_uplift_se']:.4f} {f['heldout_uplift']:>+9.4f} ±{f['heldout_uplift_se']:.4f} "
            f"{f['worse']:>6.2f}"
        )


def versions() -> dict[str, str]:
    import sdxlab

    return {"python": platform.python_version(), "sdxlab": sdxlab.__version__, "numpy": np.__version__}


if __name__ == "__main__":
    sys.exit(main())
