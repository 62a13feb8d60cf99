"""The prompt-search stage's settings (notebook 05_prompt_search), declared once: default, help, allowed values.

`PromptSearchSettings` is the notebook's declaration; `search_loop()` turns it into the loop's own
`sdxlab.prompt_search.search.SearchSettings` and `generation` into how every picture is drawn.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sdxlab.evaluate.settings import EvaluateSettings
from sdxlab.prompt_search.choose import PROPOSERS, make_proposers
from sdxlab.settings import GenerationSettings, Settings, like, setting

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
# How API keys begin (OpenAI, Anthropic, Hugging Face, GitHub, Slack, AWS, Google): an environment variable's
# name never does.
KEY_PREFIXES = ("sk-", "sk_", "hf_", "ghp_", "gho_", "ghs_", "github_pat_", "xox", "AKIA", "AIza", "Bearer")


def looks_like_a_key(value: str) -> bool:
    """Whether a text looks like a secret rather than the name of the variable that holds one."""
    if value.startswith(KEY_PREFIXES) or not ENV_NAME.match(value):
        return True
    letters = value.replace("_", "")
    mixed = (
        any(c.islower() for c in letters) and any(c.isupper() for c in letters) and any(c.isdigit() for c in letters)
    )
    return len(value) >= 20 and mixed  # names are words; keys are long random mixtures


def _env_name(value: str) -> str | None:
    if value and looks_like_a_key(value):
        return (
            "the NAME of an environment variable that holds the key (e.g. OPENAI_API_KEY), not the key itself; "
            "set the variable before starting Jupyter"
        )
    return None


def _proposers(value: list[str]) -> str | None:
    if not value or any(name not in PROPOSERS for name in value):
        return f"a list of one or more of {', '.join(PROPOSERS)}"
    return None


def _not_empty(value: list) -> str | None:
    return None if value else "a list with at least one entry"


def _weights(value: dict) -> str | None:
    numbers = isinstance(value, dict) and all(
        isinstance(w, (int, float)) and not isinstance(w, bool) for w in value.values()
    )
    if not numbers or not any(w > 0 for w in value.values()):
        return (
            "a mapping of term names (clip_t, likeness, face_found, copy, or a registered scorer) to numbers, "
            "at least one above 0 (negative weights are penalties)"
        )
    return None


RECIPE_PARTS = ("negative_prompt", "guidance", "lora_scale")  # sdxlab.prompt_search.recipe lists the same


def _recipe(value: list[str]) -> str | None:
    if any(name not in RECIPE_PARTS for name in value) or len(set(value)) != len(value):
        return f"a list of none or some of {', '.join(RECIPE_PARTS)} (each once)"
    return None


def _range(value: list[float]) -> str | None:
    numbers = (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    )
    if not numbers or not 0 <= value[0] <= value[1]:
        return "two numbers [low, high] with 0 <= low <= high"
    return None


def _url(value: str) -> str | None:
    return (
        None
        if re.match(r"^https?://", value)
        else "a URL starting with http:// or https://, e.g. http://127.0.0.1:8080/v1"
    )


@dataclass
class PromptSearchSettings(Settings):
    """What to search for, how long, how each picture is drawn and scored, and who proposes prompts."""

    prefix = "search_"
    title = "prompt search"

    intents: list[str] = setting(
        ["a photo of {subject} as an astronaut on Mars, cinematic"],
        "what you want, one per intent; {subject} is you",
        check=_not_empty,
    )
    start_prompts: list[str] | str = setting(
        [], 'your own first attempt per intent (same order); [] or "" uses the intent itself'
    )
    proposers: list[str] = setting(
        ["vocabulary"],
        '"vocabulary" (offline, no model), "local_lm", "endpoint"; several share each round',
        check=_proposers,
    )
    rounds: int = setting(
        3, "rounds after round 0 (your starting prompt); many short rounds beat one long one", minimum=0
    )
    candidates_per_round: int = setting(4, "new prompts per round", minimum=1)
    seed_count: int = setting(2, "fixed search seeds every candidate is rendered on (seed, seed+1, ...)", minimum=1)
    top_k: int = setting(4, "how many of the best prompts so far the proposers see", minimum=1)
    patience: int = setting(0, "stop an intent after this many rounds without improvement; 0: never", minimum=0)
    max_images: int = setting(0, "picture budget per intent; 0: no limit", minimum=0)
    max_minutes: float = setting(0, "time budget per intent in minutes; 0: no limit", minimum=0)
    weights: dict[str, float] = setting(
        {"clip_t": 1.0, "intent_parts": 0.1, "mood": 0.05, "likeness": 0.05, "copy": -0.1},
        "objective: the total is the sum of weight x term (clip_t: meaning; intent_parts: each part of the intent, "
        "soft minimum; mood: the asked-for expression, only when the intent names a mood; likeness: 0 a stranger or "
        "no face, 1 your photos; face_found: 1 or 0; copy: 1 if it copies a training photo; vqa: yes/no answers)",
        check=_weights,
    )
    intent_split: str = setting(
        "rules",
        'how the intent is split into parts: "rules" (offline) or "language_model" (the endpoint proposer\'s model)',
        choices=("rules", "language_model"),
    )
    vqa_model: str | None = setting(
        None, "a BLIP VQA hub id or folder (safetensors) for the vqa term; None: no vqa term"
    )
    recipe: list[str] = setting(
        [],
        'also searched with the prompt: any of "negative_prompt", "guidance", '
        '"lora_scale"; [] (default): the prompt only, which did better at equal pictures '
        "in bench/RESULTS.md",
        check=_recipe,
    )
    guidance_range: list[float] = setting(
        [3.0, 9.0], "guidance scales the recipe search may try [low, high]", check=_range
    )
    lora_scale_range: list[float] = setting(
        [0.6, 1.2], "LoRA scales the recipe search may try [low, high]", check=_range
    )
    clip_model: str = like(EvaluateSettings, "clip_model")
    steps: int = like(GenerationSettings, "steps", default=4, help="denoising steps per picture")
    guidance: float = like(GenerationSettings, "guidance", help="classifier-free guidance scale")
    negative_prompt: str = like(GenerationSettings, "negative_prompt", help="negative prompt for every picture")
    lora_scale: float = like(GenerationSettings, "lora_scale", help="how strongly your LoRA is applied")
    scheduler: str = like(GenerationSettings, "scheduler", help='"euler", "euler_a", "dpmpp_2m" or "dpmpp_2m_karras"')
    batch_size: int = like(
        GenerationSettings, "batch_size", default=4, help="pictures per UNet call (does not change the pictures)"
    )
    finalists: int = setting(3, "best prompts re-checked on held-out seeds", minimum=1)
    min_likeness: float | None = setting(
        None,
        "your point on the likeness x meaning front: the held-out headline becomes the most meaningful prompt "
        "with likeness (0..1) at least this; None: the search's pick by total",
        minimum=0,
        maximum=1,
    )
    heldout_seed_count: int = setting(
        6,
        "held-out seeds for that check (never seen by the search); at least 6 for a "
        "paired test to reach p < 0.05; more: narrower interval",
        minimum=2,
    )
    why_max_parts: int = setting(
        6,
        "why the headline wins: at most this many of its added parts (phrases, negative "
        "prompt, guidance, LoRA scale) taken away one at a time, each rendered on the "
        "search seeds (cached); 0: skip",
        minimum=0,
    )
    resume: bool = setting(True, "continue from candidates.csv if it exists with the same settings")
    lm_model: str = setting("gpt2", "local_lm proposer: a hub id or a local folder of any causal LM")
    lm_max_new_tokens: int = setting(96, "local_lm proposer: tokens generated per prompt", minimum=1)
    lm_allow_pickle: bool = setting(
        False, "local_lm proposer: also load .bin (pickle) weights, which can run code; only for files you trust"
    )
    endpoint_url: str = setting(
        "http://127.0.0.1:8080/v1",
        "endpoint proposer: OpenAI-compatible API root (llama.cpp, vLLM, Ollama)",
        check=_url,
    )
    endpoint_model: str = setting("local-model", "endpoint proposer: the model name the server expects")
    endpoint_api_key_env: str = setting(
        "OPENAI_API_KEY",
        "endpoint proposer: NAME of the environment variable holding the key",
        check=_env_name,
        secret=True,
    )
    endpoint_timeout_s: float = setting(
        60, "endpoint proposer: seconds to wait for one answer (then retried twice)", above=0
    )

    @property
    def generation(self) -> GenerationSettings:
        return GenerationSettings.of(self)

    def intent_splitter(self):
        """None for the rule splitter; with "language_model", a splitter that asks the endpoint proposer's model
        (and falls back to the rules when it gives no usable answer)."""
        if self.intent_split != "language_model":
            return None
        from sdxlab.prompt_search.intent import endpoint_asker, split_with_language_model

        proposer = make_proposers(
            ["endpoint"],
            endpoint_url=self.endpoint_url,
            endpoint_model=self.endpoint_model,
            endpoint_api_key_env=self.endpoint_api_key_env,
            endpoint_timeout_s=self.endpoint_timeout_s,
        )[0]
        ask = endpoint_asker(proposer)
        return lambda text: split_with_language_model(text, ask)

    def recipe_space(self, start):
        """What the search may change besides the prompt, starting from `start` (the generation settings above)."""
        from sdxlab.prompt_search.recipe import RecipeSpace

        return RecipeSpace(
            start=start,
            parts=tuple(self.recipe),
            guidance_range=tuple(self.guidance_range),
            lora_scale_range=tuple(self.lora_scale_range),
        )

    def search_seeds(self, seed: int) -> list[int]:
        """The fixed seeds every candidate is rendered on: seed, seed+1, ..."""
        return [seed + index for index in range(self.seed_count)]

    def start_prompt_list(self) -> list[str]:
        return self.start_prompts if isinstance(self.start_prompts, list) else [self.start_prompts]

    def intent_start_pairs(self) -> list[tuple[str, str | None]]:
        """Each intent with your starting prompt for it: the start prompts pair with the intents in order; a
        missing or empty one is None (the search then starts from the intent itself)."""
        starts = self.start_prompt_list()
        return [
            (text, (starts[index] or None) if index < len(starts) else None) for index, text in enumerate(self.intents)
        ]
