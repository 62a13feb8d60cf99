"""The common block every notebook's parameters cell starts with (same names, same defaults everywhere)."""

from __future__ import annotations

from dataclasses import dataclass

from sdxlab.labels import TINY_MODEL
from sdxlab.layout import RUN_NAME
from sdxlab.settings.base import Settings, setting

SUBJECT_TOKEN = "sks"  # the default subject token, here and in every signature that takes one
CLASS_WORD = "person"  # the default class word, likewise


def _run_name(value: str) -> str | None:
    if not RUN_NAME.match(value):
        return "a plain folder name: letters, digits, '.', '_' or '-', starting with a letter or digit (no '/' or '..')"
    return None


def _resolution(value: int) -> str | None:
    if value % 8:
        low = max(8, value // 8 * 8)
        return (
            f"a multiple of 8 (the VAE works on 8×8 pixel blocks), e.g. {low} or {low + 8}; "
            f"{value} is not divisible by 8"
        )
    return None


def _device(value: str) -> str | None:
    if value in ("auto", "cpu", "mps", "cuda") or value.startswith("cuda:"):
        return None
    return '"auto", "cuda" (or "cuda:1"...), "mps" or "cpu"'


def _word(value: str) -> str | None:
    return None if value.strip() else "a word, not empty"


@dataclass
class CommonSettings(Settings):
    """What every stage shares: which run, which model, which resolution, who the subject is."""

    run: str = setting(
        "demo", "run folder name under outputs/ (the runner passes the run it is executing)", check=_run_name
    )
    outputs_dir: str | None = setting(None, "None: $SDXLAB_OUTPUTS if set, else <project>/outputs")
    model: str = setting(
        TINY_MODEL,
        '"tiny" (offline toy model: shows the workflow, not quality), a hub '
        "id, a diffusers folder or a .safetensors file",
        check=_word,
    )
    resolution: int = setting(
        128, "training and sampling resolution in pixels; 1024 for SDXL", minimum=8, check=_resolution
    )
    subject_token: str = setting(SUBJECT_TOKEN, "the rare token that stands for you in prompts", check=_word)
    class_word: str = setting(CLASS_WORD, "what you are, for captions and prior preservation")
    device: str = setting("auto", '"auto", "cuda", "mps" or "cpu"', check=_device)
    seed: int = setting(0, "global seed, for reproducible runs", minimum=0)
