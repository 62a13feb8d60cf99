"""Scorers: one number per image, higher is better, behind one small interface.

A scorer has a `name` and `score(images, texts) -> list[float]`. Evaluation and the prompt search use them
the same way, and a new one (an aesthetic predictor, a vision-language judge) is added by writing a class
with that shape and registering a factory:

    @register_scorer("aesthetics")
    def _aesthetics(**kwargs): return MyAestheticScorer(**kwargs)

    scorer = make_scorer("aesthetics", model="...")
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

from sdxlab.evaluate.clip import DEFAULT_CLIP_MODEL, ClipModel, load_clip
from sdxlab.evaluate.inputs import LORA_TAG, photo_sources, training_photos
from sdxlab.evaluate.likeness import (
    Calibration,
    IdentityReference,
    LikenessReading,
    LikenessUnavailable,
    calibrate,
    compare,
    read_face,
)
from sdxlab.settings.common import CLASS_WORD, SUBJECT_TOKEN


@runtime_checkable
class Scorer(Protocol):
    """Scores images, higher is better; `texts` are the prompts (or intents) the images were made for."""

    name: str

    def score(self, images: list[Image.Image], texts: list[str]) -> list[float]: ...


_FACTORIES: dict[str, Callable[..., Scorer]] = {}


def register_scorer(name: str, factory: Callable[..., Scorer] | None = None):
    """Register a scorer factory under `name` (usable as a decorator); `make_scorer(name, **kwargs)` calls it."""

    def register(function: Callable[..., Scorer]) -> Callable[..., Scorer]:
        _FACTORIES[name] = function
        return function

    return register(factory) if factory is not None else register


def make_scorer(name: str, **kwargs) -> Scorer:
    """Build a registered scorer: "likeness" (needs dataset_dir=...), "clip_t" (clip_model=...), or one added later."""
    if name not in _FACTORIES:
        raise ValueError(f"Unknown scorer {name!r}; registered scorers: {', '.join(available_scorers())}.")
    return _FACTORIES[name](**kwargs)


def available_scorers() -> list[str]:
    return sorted(_FACTORIES)


class ScorerUnavailable(RuntimeError):
    """A scorer's weights or inputs cannot be had; the message is one sentence saying why and what to do."""


def try_make_scorer(name: str, **kwargs) -> tuple[Scorer | None, str]:
    """`make_scorer`, or (None, "<name>: <one sentence>") when the scorer cannot be built (weights missing, no
    network, no training faces): the caller goes on without that term and shows the sentence."""
    from sdxlab.models import ModelLoadError

    try:
        return make_scorer(name, **kwargs), ""
    except (ScorerUnavailable, LikenessUnavailable, ModelLoadError) as error:
        return None, f"{name}: {error}"


def build_scorers(specs: Mapping[str, Mapping]) -> tuple[dict[str, Scorer], list[str]]:
    """Every scorer in `specs` ({name: kwargs}) that can be built, and one note per scorer left out."""
    scorers, notes = {}, []
    for name, kwargs in specs.items():
        scorer, note = try_make_scorer(name, **dict(kwargs))
        if scorer is None:
            notes.append(note)
        else:
            scorers[name] = scorer
    return scorers, notes


def score_columns(scorer: Scorer, images: list[Image.Image], texts: list[str]) -> list[dict[str, object]]:
    """One dict per image: the scorer's extra columns (`part_who`, `mood_top`, ...) when it has `columns`, and
    always its score under its own name (NaN = the term does not apply to this text, e.g. no mood asked)."""
    if hasattr(scorer, "columns"):
        return [dict(row) for row in scorer.columns(images, texts)]
    return [{scorer.name: float(value)} for value in scorer.score(images, texts)]


# --- prompt alignment -----------------------------------------------------------------------------------------

_WEIGHTED = re.compile(r"\(([^():]+):\s*[-+]?\d*\.?\d+\)")  # A1111 emphasis "(word:1.3)" -> "word"


def intent_text(prompt: str, subject_token: str | Sequence[str] = SUBJECT_TOKEN, class_word: str = CLASS_WORD) -> str:
    """The prompt as a stranger would read it: the subject token becomes the class word.

    "a photo of sks person on Mars" -> "a photo of person on Mars"; "{subject} as a knight" ->
    "person as a knight". CLIP has never seen the made-up token, so scoring alignment against it would
    measure noise (and a prompt search would learn to game it). LoRA tags and emphasis weights are dropped.
    """
    tokens = [subject_token] if isinstance(subject_token, str) else list(subject_token)
    text = LORA_TAG.sub(" ", prompt)
    text = _WEIGHTED.sub(r"\1", text)
    # "{subject}" and pivotal-tuning token runs like "<s0><s1>" are the subject too.
    tokens = sorted({token for token in tokens if token}, key=len, reverse=True)
    text = text.replace("{subject}", tokens[0] if tokens else class_word)
    for token in tokens:
        word = re.escape(token)
        text = re.sub(rf"(?<!\w){word}(?!\w)\s+{re.escape(class_word)}(?!\w)", class_word, text, flags=re.IGNORECASE)
        text = re.sub(rf"(?<!\w){word}(?!\w)", class_word, text, flags=re.IGNORECASE)
    return re.sub(r"\s+", " ", re.sub(r"\s+([,.;:!?])", r"\1", text)).strip(" ,")


class ClipAlignmentScorer:
    """CLIP-T: cosine between the image and the prompt's intent text (subject token -> class word)."""

    name = "clip_t"

    def __init__(
        self,
        clip_model: str = DEFAULT_CLIP_MODEL,
        device: str = "auto",
        subject_token: str | Sequence[str] = SUBJECT_TOKEN,
        class_word: str = CLASS_WORD,
        clip: ClipModel | None = None,
    ):
        self.clip = clip or load_clip(clip_model, device)
        self.subject_token = subject_token
        self.class_word = class_word

    @property
    def meaningful(self) -> bool:
        return self.clip.meaningful

    def intent(self, prompt: str) -> str:
        return intent_text(prompt, self.subject_token, self.class_word)

    def score(self, images: list[Image.Image], texts: list[str]) -> list[float]:
        if len(images) != len(texts):
            raise ValueError(f"clip_t needs one text per image, got {len(images)} images and {len(texts)} texts.")
        return self.score_embeddings(self.clip.embed_images(images), texts)

    def score_embeddings(self, image_embeddings: np.ndarray, texts: list[str]) -> list[float]:
        """CLIP-T from image embeddings already computed (evaluation reuses them for diversity and copying)."""
        intents = [self.intent(text) for text in texts]
        unique = sorted(set(intents))
        text_embeddings = dict(zip(unique, self.clip.embed_texts(unique), strict=True))
        return [float(image @ text_embeddings[intent]) for image, intent in zip(image_embeddings, intents, strict=True)]


# --- likeness -------------------------------------------------------------------------------------------------


class LikenessScorer:
    """Identity similarity of each image's main face to the person's training photos (0 when no face is found).

    `score` gives the raw cosine similarity to the training centroid (what a search maximises); `measure`
    gives everything: similarity to the centroid and to the nearest photo, dlib distances, and the
    calibrated position between the floor (other people) and the ceiling (own photos, leave-one-out).
    """

    name = "likeness"

    def __init__(self, reference: IdentityReference, calibration: Calibration | None = None, upsample: int = 1):
        self.reference = reference
        self.calibration = calibration
        self.upsample = upsample

    @classmethod
    def from_dataset(
        cls,
        dataset_dir: str | Path,
        other_people_dir: str | Path | None = None,
        download_floor: bool = True,
        upsample: int = 1,
    ) -> LikenessScorer:
        """The person from a training set (01_capture's dataset/ or any folder of their photos), calibrated.

        Raises `LikenessUnavailable` (one sentence) when the folder holds no usable face.
        """
        from sdxlab.evaluate.other_people import other_people

        paths, notes = training_photos(dataset_dir)
        if not paths:
            raise LikenessUnavailable(" ".join(notes))
        reference = IdentityReference.from_photos(paths, upsample, sources=photo_sources(paths))
        reference.notes[:0] = notes
        others = other_people(other_people_dir, download=download_floor, upsample=upsample)
        calibration = calibrate(reference, others.embeddings, others.source)
        calibration.notes[:0] = others.notes
        return cls(reference, calibration, upsample)

    @property
    def notes(self) -> list[str]:
        return self.reference.notes + (self.calibration.notes if self.calibration else [])

    def measure(self, images: Sequence[Image.Image]) -> list[LikenessReading]:
        return [compare(read_face(image, self.upsample), self.reference, self.calibration) for image in images]

    def score(self, images: list[Image.Image], texts: list[str] | None = None) -> list[float]:
        return [reading.similarity if reading.similarity is not None else 0.0 for reading in self.measure(images)]

    def position(self, similarity: float | None) -> float:
        return self.calibration.position(similarity) if self.calibration is not None else math.nan


register_scorer("clip_t", lambda **kwargs: ClipAlignmentScorer(**kwargs))
register_scorer("likeness", lambda dataset_dir, **kwargs: LikenessScorer.from_dataset(dataset_dir, **kwargs))


@register_scorer("mood")
def _mood(**kwargs) -> Scorer:
    """Facial expression vs the mood words of the intent (fer's mini-Xception; see `evaluate.expression`)."""
    from sdxlab.evaluate.expression import ExpressionScorer

    return ExpressionScorer(**kwargs)


@register_scorer("intent_parts")
def _intent_parts(**kwargs) -> Scorer:
    """Every part of the intent (who, where, doing, style, lighting, framing, mood) by CLIP, soft-min combined."""
    from sdxlab.prompt_search.intent import IntentPartsScorer

    return IntentPartsScorer(**kwargs)


@register_scorer("vqa")
def _vqa(**kwargs) -> Scorer:
    """P(yes) to yes/no questions from the intent's parts, by a BLIP VQA model (model=hub id or folder)."""
    from sdxlab.evaluate.vqa import VqaScorer

    return VqaScorer(**kwargs)
