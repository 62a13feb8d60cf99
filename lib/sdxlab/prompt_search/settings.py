"""The prompt-search stage's settings (notebook 05_prompt_search), declared once: default, help, allowed values.

`PromptSearchSettings` is the notebook's declaration; `search_loop()` turns it into the loop's own
`sdxlab.prompt_search.search.SearchSettings` and `generation` into how every picture is drawn.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sdxlab.evaluate.settings import EvaluateSettings
from sdxlab.settings import GenerationSettings, Settings, like, setting

PROPOSERS = ("vocabulary", "local_lm", "endpoint")  # sdxlab.prompt_search.proposers.PROPOSER_NAMES lists the same
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
# How API keys begin (OpenAI, Anthropic, Hugging Face, GitHub, Slack, AWS, Google): an environment variable's
# name never does.
KEY_PREFIXES = ("sk-", "sk_", "hf_", "ghp_", "gho_", "ghs_", "github_pat_", "xox", "AKIA", "AIza", "Bearer")


def looks_like_a_key(value: str) -> bool:
    """Whether a text looks like a secret rather than the name of the variable that holds one."""
    if value.startswith(KEY_PREFIXES) or not ENV_NAME.match(value):
        return True
    letters = value.replace("_", "")
    mixed = any(c.islower() for c in letters) and any(c.isupper() for c in letters) and any(c.isdigit() for c in letters)
    return len(value) >= 20 and mixed  # names are words; keys are long random mixtures


def _env_name(value: str) -> str | None:
    if value and looks_like_a_key(value):
        return ("the NAME of an environment variable that holds the key (e.g. OPENAI_API_KEY), not the key itself; "
                "set the variable before starting Jupyter")
    return None


def _proposers(value: list[str]) -> str | None:
    if not value or any(name not in PROPOSERS for name in value):
        return f"a list of one or more of {', '.join(PROPOSERS)}"
    return None


def _not_empty(value: list) -> str | None:
    return None if value else "a list with at least one entry"


def _url(value: str) -> str | None:
    return None if re.match(r"^https?://", value) else "a URL starting with http:// or https://, e.g. http://127.0.0.1:8080/v1"


@dataclass
class PromptSearchSettings(Settings):
    """What to search for, how long, how each picture is drawn and scored, and who proposes prompts."""

    prefix = "search_"
    title = "prompt search"

    intents: list[str] = setting(["a photo of {subject} as an astronaut on Mars, cinematic"],
                                 "what you want, one per intent; {subject} is you", check=_not_empty)
    start_prompts: list[str] | str = setting([], "your own first attempt per intent (same order); [] or \"\" uses the "
                                                 "intent itself")
    proposers: list[str] = setting(["vocabulary"], "\"vocabulary\" (offline, no model), \"local_lm\", \"endpoint\"; "
                                                   "several share each round", check=_proposers)
    rounds: int = setting(3, "rounds after round 0 (your starting prompt); many short rounds beat one long one",
                          minimum=0)
    candidates_per_round: int = setting(4, "new prompts per round", minimum=1)
    seed_count: int = setting(2, "fixed search seeds every candidate is rendered on (seed, seed+1, ...)", minimum=1)
    top_k: int = setting(4, "how many of the best prompts so far the proposers see", minimum=1)
    patience: int = setting(0, "stop an intent after this many rounds without improvement; 0: never", minimum=0)
    max_images: int = setting(0, "picture budget per intent; 0: no limit", minimum=0)
    max_minutes: float = setting(0, "time budget per intent in minutes; 0: no limit", minimum=0)
    weights: dict[str, float] = setting({"clip_t": 1.0, "likeness": 1.0}, "objective: weight per scorer (clip_t: "
                                        "meaning, likeness: your face)", check=_not_empty)
    clip_model: str = like(EvaluateSettings, "clip_model")
    steps: int = like(GenerationSettings, "steps", default=4, help="denoising steps per picture")
    guidance: float = like(GenerationSettings, "guidance", help="classifier-free guidance scale")
    negative_prompt: str = like(GenerationSettings, "negative_prompt", help="negative prompt for every picture")
    lora_scale: float = like(GenerationSettings, "lora_scale", help="how strongly your LoRA is applied")
    scheduler: str = like(GenerationSettings, "scheduler", help="\"euler\", \"euler_a\", \"dpmpp_2m\" or "
                                                                 "\"dpmpp_2m_karras\"")
    batch_size: int = like(GenerationSettings, "batch_size", default=4,
                           help="pictures per UNet call (does not change the pictures)")
    finalists: int = setting(3, "best prompts re-checked on held-out seeds", minimum=1)
    heldout_seed_count: int = setting(4, "held-out seeds for that check (never seen by the search); more: narrower "
                                         "interval", minimum=1)
    bootstrap_samples: int = setting(2000, "bootstrap resamples for the uplift's confidence interval", minimum=1)
    resume: bool = setting(True, "continue from candidates.csv if it exists with the same settings")
    lm_model: str = setting("gpt2", "local_lm proposer: a hub id or a local folder of any causal LM")
    lm_max_new_tokens: int = setting(96, "local_lm proposer: tokens generated per prompt", minimum=1)
    endpoint_url: str = setting("http://127.0.0.1:8080/v1", "endpoint proposer: OpenAI-compatible API root "
                                "(llama.cpp, vLLM, Ollama)", check=_url)
    endpoint_model: str = setting("local-model", "endpoint proposer: the model name the server expects")
    endpoint_api_key_env: str = setting("OPENAI_API_KEY", "endpoint proposer: NAME of the environment variable "
                                        "holding the key", check=_env_name, secret=True)
    endpoint_timeout_s: float = setting(60, "endpoint proposer: seconds to wait for one answer (then retried twice)",
                                        above=0)

    @property
    def generation(self) -> GenerationSettings:
        return GenerationSettings(steps=self.steps, guidance=self.guidance, scheduler=self.scheduler,
                                  negative_prompt=self.negative_prompt, lora_scale=self.lora_scale,
                                  batch_size=self.batch_size)

    def search_seeds(self, seed: int) -> list[int]:
        """The fixed seeds every candidate is rendered on: seed, seed+1, ..."""
        return [seed + index for index in range(self.seed_count)]

    def start_prompt_list(self) -> list[str]:
        return self.start_prompts if isinstance(self.start_prompts, list) else [self.start_prompts]
