"""What a picture is worth to the search: a weighted combination of scorers from `sdxlab.evaluate`.

Alignment is always measured against the person's *intent* ("sks person as an astronaut on Mars" read as
"person as an astronaut on Mars"), never against the candidate prompt: scored against itself, a prompt that
merely describes its own picture well would win, and the search would learn to game the scorer instead of
delivering what was asked. Likeness compares the face with the training photos (no face: zero). Every
scorer's own score is kept next to the weighted total, so the trade-off stays visible.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

SUBJECT_PLACEHOLDER = "{subject}"
TOTAL = "total"


class Scorer(Protocol):
    """The scorer interface of `sdxlab.evaluate`: one number per image, higher is better."""

    name: str

    def score(self, images: Sequence[Any], texts: Sequence[str]) -> list[float]: ...


@dataclass(frozen=True)
class Intent:
    """What the person wants, and how they first tried to ask for it.

    `text` and `start_prompt` may write the person as `{subject}` or as the subject token itself; the search
    works on prompts that spell it out (`sks person`), which is what people paste into the playground.
    """

    text: str
    start_prompt: str
    subject_token: str
    class_word: str

    @classmethod
    def create(cls, text: str, subject_token: str, class_word: str, start_prompt: str | None = None) -> Intent:
        text = " ".join(str(text).split())
        if not text:
            raise ValueError("An intent is empty; write what you want, e.g. '{subject} as an astronaut on Mars'.")
        start = " ".join(str(start_prompt).split()) if start_prompt else text
        return cls(text=text, start_prompt=subject_prompt(start, subject_token, class_word),
                   subject_token=subject_token, class_word=class_word)

    @property
    def subject_phrase(self) -> str:
        return f"{self.subject_token} {self.class_word}".strip()

    @property
    def alignment_text(self) -> str:
        """The text images are aligned against: the intent with the person written as the class word."""
        return alignment_text(self.text, self.subject_token, self.class_word)


def subject_prompt(text: str, subject_token: str, class_word: str) -> str:
    """Write the person as `<token> <class word>` ("sks person"): `{subject}` is expanded, the token kept.

    A prompt that never names the person gets "photo of sks person, " in front, because a picture of
    someone else cannot be the answer to "me as ...".
    """
    phrase = f"{subject_token} {class_word}".strip()
    text = text.replace(SUBJECT_PLACEHOLDER, phrase)
    # "{subject} person" would have become "sks person person"
    text = re.sub(rf"\b{re.escape(phrase)}\s+{re.escape(class_word)}\b", phrase, text, flags=re.IGNORECASE) if class_word else text
    if not re.search(rf"(?<!\w){re.escape(subject_token)}(?!\w)", text, flags=re.IGNORECASE):
        text = f"photo of {phrase}, {text}"
    return " ".join(text.split())


def alignment_text(text: str, subject_token: str, class_word: str) -> str:
    """The intent as a scorer reads it; uses `sdxlab.evaluate.intent_text` when that stage is installed."""
    try:
        from sdxlab.evaluate import intent_text
    except ImportError:
        intent_text = None
    if intent_text is not None:
        return intent_text(text, subject_token, class_word)
    phrase = f"{subject_token} {class_word}".strip()
    text = text.replace(SUBJECT_PLACEHOLDER, class_word)
    text = re.sub(rf"(?<!\w){re.escape(phrase)}(?!\w)", class_word, text, flags=re.IGNORECASE)
    text = re.sub(rf"(?<!\w){re.escape(subject_token)}(?!\w)", class_word, text, flags=re.IGNORECASE)
    return " ".join(text.split())


@dataclass
class Objective:
    """Scorers and their weights; the total is the weighted mean of the scorers' scores."""

    scorers: dict[str, Scorer]
    weights: dict[str, float]
    description: dict[str, Any] = field(default_factory=dict)  # what changes the numbers (for resuming)
    notes: list[str] = field(default_factory=list)  # scorers left out, and why

    def __post_init__(self) -> None:
        missing = sorted(set(self.weights) - set(self.scorers))
        if missing:
            raise ValueError(f"No scorer for weight(s) {', '.join(missing)}.")
        if not any(weight > 0 for weight in self.weights.values()):
            raise ValueError("At least one scorer weight must be above zero, or every prompt scores the same.")

    @property
    def score_names(self) -> list[str]:
        return [name for name in self.weights if self.weights[name] > 0]

    def total(self, scores: Mapping[str, float]) -> float:
        active = {name: weight for name, weight in self.weights.items() if weight > 0}
        return sum(weight * float(scores[name]) for name, weight in active.items()) / sum(active.values())

    def score(self, images: Sequence[Any], intent: Intent) -> list[dict[str, float]]:
        """Sub-scores and total for each image, all measured against the intent."""
        texts = [intent.alignment_text] * len(images)
        columns = {}
        for name in self.score_names:
            values = list(self.scorers[name].score(list(images), texts))
            if len(values) != len(images):
                raise RuntimeError(f"Scorer '{name}' returned {len(values)} scores for {len(images)} images.")
            columns[name] = values
        rows = [{name: float(columns[name][index]) for name in self.score_names} for index in range(len(images))]
        for row in rows:
            row[TOTAL] = self.total(row)
        return rows


def build_objective(
    weights: Mapping[str, float],
    *,
    dataset_dir: str | Path | None = None,
    clip_model: str = "tiny",
    device: str = "auto",
    subject_token: str = "sks",
    class_word: str = "person",
) -> Objective:
    """Build the scorers named in `weights` from `sdxlab.evaluate`: "clip_t" (alignment with the intent),
    "likeness" (the person's face, from the run's dataset), or any other registered scorer name. A weight of
    0 skips that scorer. A scorer that cannot be built (no training photos for likeness) is left out with a
    note in `objective.notes`, and the search goes on with the others."""
    from sdxlab import evaluate

    weights = {str(name): float(weight) for name, weight in dict(weights).items()}
    scorers: dict[str, Scorer] = {}
    notes: list[str] = []
    for name, weight in weights.items():
        if weight <= 0:
            continue
        if name == "clip_t":
            scorers[name] = evaluate.ClipAlignmentScorer(clip_model=clip_model, device=device,
                                                         subject_token=subject_token, class_word=class_word)
        elif name == "likeness":
            try:
                if dataset_dir is None:
                    raise evaluate.LikenessUnavailable("No dataset folder was given.")
                # the search needs raw similarity only: no download of the floor's faces
                scorer = evaluate.LikenessScorer.from_dataset(dataset_dir, download_floor=False)
            except evaluate.LikenessUnavailable as error:
                notes.append(f"Likeness is left out of the objective: {error}")
                continue
            scorers[name] = scorer
        else:
            scorers[name] = evaluate.make_scorer(name)
    active = {name: weight for name, weight in weights.items() if name in scorers}
    if not active:
        raise ValueError("No scorer is left to score pictures with: " + " ".join(notes or ["all weights are zero."]))
    description = {"weights": active, "clip_model": str(clip_model),
                   "dataset": str(dataset_dir) if dataset_dir is not None else None}
    return Objective(scorers=scorers, weights=active, description=description, notes=notes)
