"""Prompt parts: the offline proposer's vocabulary, and prompts as lists of weighted parts.

A prompt is read as comma-separated parts ("a photo of sks person as an astronaut on Mars", "cinematic",
"golden hour lighting"). The offline proposer mutates prompts part by part, so this module turns text into
parts and back; AUTOMATIC1111's `(part:1.2)` weight syntax is understood when reading (so it can be removed:
the sampler has no prompt weights).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

# What people add to prompts to steer a picture, grouped by what each part controls. A mutation swaps a
# part for another of its own group, so a lighting word is replaced by a lighting word.
PROMPT_PARTS: dict[str, tuple[str, ...]] = {
    "setting": (
        "in a sunlit studio",
        "on a city street at night",
        "in a misty forest",
        "on a mountain summit",
        "in a cozy library",
        "on a beach at sunset",
        "in a neon-lit alley",
        "in a grand ballroom",
        "in a desert landscape",
        "under a starry sky",
        "in a rainy cafe",
        "in an old european town",
    ),
    "style": (
        "cinematic",
        "photorealistic",
        "hyperrealistic",
        "editorial photography",
        "fine art portrait",
        "baroque",
        "art nouveau",
        "film noir",
        "pop art",
        "surrealist",
        "renaissance style",
        "minimalist",
    ),
    "medium": (
        "oil painting",
        "watercolor",
        "charcoal sketch",
        "digital painting",
        "35mm film photo",
        "polaroid photo",
        "studio photograph",
        "pencil drawing",
        "acrylic on canvas",
        "3d render",
        "ink illustration",
        "analog photograph",
    ),
    "lighting": (
        "golden hour lighting",
        "soft window light",
        "dramatic rim light",
        "studio softbox lighting",
        "volumetric light",
        "backlit",
        "chiaroscuro",
        "overcast daylight",
        "candlelight",
        "neon glow",
        "high key lighting",
        "low key lighting",
    ),
    "framing": (
        "close-up portrait",
        "head and shoulders",
        "full body shot",
        "medium shot",
        "85mm lens",
        "35mm lens",
        "shallow depth of field",
        "bokeh",
        "wide angle",
        "eye level",
        "three-quarter view",
        "centered composition",
    ),
    "mood": (
        "serene",
        "heroic",
        "melancholic",
        "joyful",
        "mysterious",
        "confident",
        "dreamy",
        "epic",
        "intimate",
        "playful",
        "contemplative",
        "dramatic",
    ),
    "detail": (
        "highly detailed",
        "sharp focus",
        "intricate details",
        "8k",
        "detailed skin texture",
        "award winning",
        "masterpiece",
        "natural skin",
        "crisp",
        "rich colors",
        "muted palette",
        "film grain",
    ),
}

WEIGHTED_PART = re.compile(r"^\((?P<text>.+):(?P<weight>\d+(?:\.\d+)?)\)$")


@dataclass(frozen=True)
class Part:
    """One comma-separated piece of a prompt and its attention weight (1.0: plain text)."""

    text: str
    weight: float = 1.0

    @property
    def key(self) -> str:
        """The part's identity for comparisons: case and spacing do not make a different part."""
        return normalise(self.text)


def normalise(text: str) -> str:
    return " ".join(text.lower().split())


def split_parts(prompt: str) -> list[Part]:
    """Read a prompt as comma-separated parts, understanding `(text:1.2)` weights; commas inside brackets stay."""
    pieces, depth, current = [], 0, []
    for character in prompt:
        depth += {"(": 1, ")": -1}.get(character, 0)
        if character == "," and depth <= 0:
            pieces.append("".join(current))
            current = []
        else:
            current.append(character)
    pieces.append("".join(current))
    parts = []
    for piece in pieces:
        piece = " ".join(piece.split())
        if not piece:
            continue
        match = WEIGHTED_PART.match(piece)
        parts.append(Part(match["text"].strip(), float(match["weight"])) if match else Part(piece))
    return parts


def join_parts(parts: list[Part]) -> str:
    """The prompt text of its parts (weights are not written: the sampler would read them as text)."""
    return ", ".join(part.text for part in parts)


def prompt_key(prompt: str) -> str:
    """Two prompts that differ only in case, spacing or weight formatting are the same candidate."""
    return " , ".join(f"{part.key}:{part.weight:.2f}" for part in split_parts(prompt))


@cache
def _category_index(vocabulary_items: tuple[tuple[str, tuple[str, ...]], ...]) -> dict[str, str]:
    return {normalise(word): category for category, words in vocabulary_items for word in words}


def category_of(part: Part, vocabulary: dict[str, tuple[str, ...]]) -> str | None:
    """The vocabulary group a part belongs to, or None for the person's own words."""
    return _category_index(tuple((name, tuple(words)) for name, words in vocabulary.items())).get(part.key)


def has_subject(prompt: str, subject_token: str) -> bool:
    """Whether the subject token (the word that stands for the person) is in the prompt as a whole word."""
    return re.search(rf"(?<![\w]){re.escape(subject_token)}(?![\w])", prompt, flags=re.IGNORECASE) is not None
