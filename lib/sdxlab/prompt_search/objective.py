"""What a picture is worth to the search: a list of named terms, each a column per picture, with weights.

    total = 1.0 x clip_t + 0.1 x intent_parts + 0.05 x mood + 0.05 x likeness - 0.1 x copy   (default `search_weights`)

A term that does not apply to a picture (NaN: mood when the intent names none) is left out of its total and the
other weights are scaled up so the positive weights still sum to the same.

- `clip_t` (meaning): CLIP alignment of the picture with the person's *intent* ("sks person as an astronaut
  on Mars" read as "person as an astronaut on Mars"), never with the candidate prompt: scored against itself,
  a prompt that merely describes its own picture well would win, and the search would learn to game the
  scorer instead of delivering what was asked. Real CLIP-T sits around 0.2-0.35; prompts for one intent
  differ by hundredths.
- `likeness`: the face's identity similarity placed between 04_evaluate's floor and ceiling, so 0 looks like
  a stranger and 1 like another of the person's photos. A picture without a face (or with a stranger's face)
  sits at the floor, 0: losing the face costs 0.05 x the likeness it would have had, about one or two
  hundredths of CLIP-T, a graded penalty the size of a meaning difference, not a cliff that pushes every
  search to close-ups. The calibration is 04's (`metrics/summary.json`); if 04 has not run it is computed
  the same way, once.
- `face_found`: 1 when a face was detected; its own column (weight 0 by default: the likeness term already
  charges for a lost face).
- `copy`: 1 when 04's copy check (`sdxlab.evaluate.copying`) flags the picture as a copy of a training photo.

- `intent_parts`: every part of the intent (who, where, doing, style, lighting, framing, mood) scored by CLIP
  against a neutral phrase (`part_<role>` columns), soft-min combined (`sdxlab.prompt_search.intent`); the
  weakest part is fed back to the proposers. `mood`: P(the expression the intent asks for) by fer's real
  weights (`sdxlab.evaluate.expression`), NaN when no mood is asked. `vqa`: yes/no answers of a BLIP VQA model,
  only with a model given. Their extra columns (`mood_*`, `weakest_part`, `vqa_*`) are kept, never weighted.

Every column is kept per picture in candidates.csv, whatever its weight. Terms are open: any scorer
registered in `sdxlab.evaluate` can be weighted by name, and a measure may add several columns.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sdxlab.settings.common import CLASS_WORD, SUBJECT_TOKEN

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
        return cls(
            text=text,
            start_prompt=subject_prompt(start, subject_token, class_word),
            subject_token=subject_token,
            class_word=class_word,
        )

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
    text = (
        re.sub(rf"\b{re.escape(phrase)}\s+{re.escape(class_word)}\b", phrase, text, flags=re.IGNORECASE)
        if class_word
        else text
    )
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


TERM_MEANINGS = {
    "clip_t": "meaning: CLIP alignment of the picture with what the person asked for (about 0.2-0.35; "
    "prompts differ by hundredths)",
    "likeness": "likeness: 0 = looks like a stranger (or no face found), 1 = looks like another of the "
    "person's own photos",
    "face_found": "1 when a face was found in the picture, 0 when not",
    "copy": "1 when the picture is a near copy of one of the person's training photos",
    "intent_parts": "meaning, part by part: every part of the intent (who, where, doing, style, lighting, framing, "
    "mood) scored against a neutral phrase (0..1), combined by a soft minimum so one missing part "
    "costs more than a slightly weaker global match",
    "mood": "mood: probability (0..1) that the face shows the expression the intent asks for (fer's real "
    "weights); only when the intent names a mood",
    "vqa": "yes/no questions about the intent's parts answered by a visual question-answering model (0..1)",
    TOTAL: "the weighted sum of the terms",
}
DEFAULT_WEIGHTS = {"clip_t": 1.0, "intent_parts": 0.1, "mood": 0.05, "likeness": 0.05, "copy": -0.1}
# Extra columns a scorer's `columns()` gives besides its own name (kept per picture, never in the total).
SCORER_COLUMNS = {
    "mood": [
        "mood_expected",
        "mood_min",
        "mood_faces",
        "mood_top",
        *[f"mood_p_{name}" for name in ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")],
    ],
    "intent_parts": [
        *[f"part_{role}" for role in ("who", "where", "doing", "style", "lighting", "framing", "mood")],
        "weakest_part",
    ],
    "vqa": [
        *[f"vqa_{role}" for role in ("who", "where", "doing", "style", "lighting", "framing", "mood")],
        "vqa_weakest",
    ],
}


def formula_text(weights: Mapping[str, float]) -> str:
    """ "total = 1 x clip_t + 0.05 x likeness - 0.1 x copy" for those weights."""
    parts = []
    for index, (name, weight) in enumerate((name, weight) for name, weight in weights.items() if weight):
        sign = ("-" if weight < 0 else "") if index == 0 else ("- " if weight < 0 else "+ ")
        parts.append(f"{sign}{abs(weight):g} x {name}")
    return "total = " + " ".join(parts)


class Measure(Protocol):
    """Something that measures pictures into one or more named columns (higher is not always better: a
    penalty such as `copy` gets a negative weight)."""

    columns: list[str]

    def measure(self, images: Sequence[Any], texts: Sequence[str]) -> dict[str, list[float]]: ...


class ScorerMeasure:
    """One-number scorers of `sdxlab.evaluate` as measures: one column named after the scorer."""

    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer
        self.columns = [scorer.name]

    def measure(self, images: Sequence[Any], texts: Sequence[str]) -> dict[str, list[float]]:
        return {self.scorer.name: [float(value) for value in self.scorer.score(list(images), list(texts))]}


class ColumnsMeasure:
    """A scorer with `columns(images, texts)` (mood, intent_parts, vqa): its own score and every extra column
    (`part_who`, `mood_top`, ...; see `sdxlab.evaluate.score_columns`); only the column named after the scorer
    can carry a weight."""

    def __init__(self, scorer: Scorer, extra: Sequence[str] | None = None) -> None:
        self.scorer = scorer
        self.columns = [scorer.name, *(SCORER_COLUMNS.get(scorer.name, []) if extra is None else extra)]

    @property
    def meaningful(self) -> bool:
        return bool(getattr(self.scorer, "meaningful", True))

    def measure(self, images: Sequence[Any], texts: Sequence[str]) -> dict[str, list]:
        from sdxlab.evaluate.scorers import score_columns

        rows = score_columns(self.scorer, list(images), list(texts))
        return {column: [row.get(column, math.nan) for row in rows] for column in self.columns}


def as_measure(item: Scorer | Measure) -> Measure:
    if hasattr(item, "measure") and isinstance(getattr(item, "columns", None), list):
        return item
    if callable(getattr(item, "columns", None)):
        return ColumnsMeasure(item)
    return ScorerMeasure(item)


def cell(value: Any) -> float | str:
    """A column's value as kept per picture: a number (NaN for "does not apply") or a label such as
    `weakest_part`; "" read back from candidates.csv is NaN for numbers."""
    if isinstance(value, str):
        try:
            return float(value) if value.strip() else math.nan
        except ValueError:
            return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


@dataclass
class Objective:
    """Measures (or one-number scorers) and a weight per column; total = the weighted sum of the columns.

    A measure none of whose columns has a non-zero weight is not run; every column of a measure that runs
    is kept (weight 0 means "shown, not counted").
    """

    scorers: dict[str, Scorer | Measure]
    weights: dict[str, float]
    description: dict[str, Any] = field(default_factory=dict)  # what changes the numbers (for resuming)
    notes: list[str] = field(default_factory=list)  # terms left out, and why

    def __post_init__(self) -> None:
        self.measures = [as_measure(item) for item in self.scorers.values()]
        known = {column for measure in self.measures for column in measure.columns}
        missing = sorted(name for name, weight in self.weights.items() if weight and name not in known)
        if missing:
            raise ValueError(f"No scorer for weight(s) {', '.join(missing)}; known terms: {', '.join(sorted(known))}.")
        if not any(weight > 0 for weight in self.weights.values()):
            raise ValueError("At least one scorer weight must be above zero, or every prompt scores the same.")
        self.active = [measure for measure in self.measures if any(self.weights.get(c, 0) for c in measure.columns)]

    @property
    def score_names(self) -> list[str]:
        """Every column kept per picture, in the order of the measures."""
        return [column for measure in self.active for column in measure.columns]

    @property
    def terms(self) -> dict[str, float]:
        """The columns that count in the total, with their weights."""
        return {name: float(weight) for name, weight in self.weights.items() if weight and name in self.score_names}

    def total(self, scores: Mapping[str, float]) -> float:
        """The weighted sum of the terms; a term that does not apply (NaN: no mood asked for, no part of that
        kind) is left out and the others are scaled up so their positive weights still sum to the same."""
        terms = self.terms
        present = {name: weight for name, weight in terms.items() if not _is_nan(scores.get(name, math.nan))}
        positive_all = sum(weight for weight in terms.values() if weight > 0)
        positive_here = sum(weight for weight in present.values() if weight > 0)
        if positive_here <= 0:
            return math.nan
        scale = positive_all / positive_here
        return float(scale * sum(weight * float(scores[name]) for name, weight in present.items()))

    def formula(self) -> str:
        """The total in plain arithmetic, e.g. "total = 1 x clip_t + 0.05 x likeness - 0.1 x copy"."""
        return formula_text(self.terms)

    def to_dict(self) -> dict[str, Any]:
        """What the objective is, for best_prompts.json: the formula, every term and its meaning, the notes."""
        return {
            "formula": self.formula(),
            "weights": self.terms,
            "columns": {name: TERM_MEANINGS.get(name, "another score") for name in self.score_names},
            **{key: value for key, value in self.description.items() if key != "weights"},
            "notes": list(self.notes),
        }

    def score(self, images: Sequence[Any], intent: Intent) -> list[dict[str, float]]:
        """Every column and the total for each image, all measured against the intent."""
        texts = [intent.alignment_text] * len(images)
        columns: dict[str, list[float]] = {}
        for measure in self.active:
            values = measure.measure(list(images), texts)
            for column in measure.columns:
                if len(values[column]) != len(images):
                    raise RuntimeError(f"Term '{column}' has {len(values[column])} scores for {len(images)} images.")
                columns[column] = values[column]
        rows = [{name: cell(columns[name][index]) for name in self.score_names} for index in range(len(images))]
        for row in rows:
            row[TOTAL] = self.total(row)
        return rows


def _is_nan(value: Any) -> bool:
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return True


# --- the likeness and copy terms --------------------------------------------------------------------------------


@dataclass(frozen=True)
class LikenessScale:
    """04_evaluate's calibration of identity similarity: floor (strangers) and ceiling (own photos)."""

    floor: float
    ceiling: float
    source: str  # where it came from, in words

    def position(self, similarity: float | None) -> float:
        """0 = floor (also: no face, or a stranger's face below it), 1 = ceiling; above 1 is kept."""
        if similarity is None or math.isnan(similarity):
            return 0.0
        return max(0.0, (float(similarity) - self.floor) / (self.ceiling - self.floor))

    def to_dict(self) -> dict[str, Any]:
        return {"floor": self.floor, "ceiling": self.ceiling, "source": self.source}

    @classmethod
    def from_calibration(cls, calibration, source: str) -> LikenessScale | None:
        if calibration is None or not calibration.known:
            return None
        return cls(float(calibration.floor.mean), float(calibration.ceiling.mean), source)

    @classmethod
    def from_summary(
        cls, summary_path: str | Path, dataset_dir: str | Path, training_faces: int
    ) -> LikenessScale | None:
        """04's calibration from `metrics/summary.json` if it was made from this dataset (same folder, same
        number of faces, written after the dataset), else None; `LikenessUnavailable` when 04 found no usable
        floor or ceiling for this very dataset (computing it again would fail the same way)."""
        import json

        path = Path(summary_path)
        try:
            summary = json.loads(path.read_text())
            calibration = summary["calibration"]
            floor = float(calibration["floor"]["mean"] if calibration["floor"]["mean"] is not None else math.nan)
            ceiling = float(calibration["ceiling"]["mean"] if calibration["ceiling"]["mean"] is not None else math.nan)
            same_folder = Path(summary["dataset_dir"]).resolve() == Path(dataset_dir).resolve()
            newer = path.stat().st_mtime >= max(
                (item.stat().st_mtime for item in Path(dataset_dir).rglob("*")), default=0
            )
            same_faces = int(calibration.get("training_faces") or 0) == int(training_faces)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not (same_folder and newer and same_faces):
            return None
        if math.isnan(floor) or math.isnan(ceiling) or ceiling <= floor:
            from sdxlab.evaluate import LikenessUnavailable

            raise LikenessUnavailable(
                f"04_evaluate's calibration in {path} has no usable floor (strangers) and ceiling (your photos "
                "against each other), so a likeness number would mean nothing; run 04_evaluate with network once "
                "or with evaluate_other_people_dir."
            )
        return cls(floor, ceiling, f"04_evaluate ({path})")


class LikenessMeasure:
    """Columns `likeness` (calibrated position, 0 without a face) and `face_found` (1/0).

    `faces` is a `sdxlab.evaluate.LikenessScorer` (anything whose `measure(images)` gives readings with a
    `similarity`, None when no face was found)."""

    columns = ["likeness", "face_found"]

    def __init__(self, faces, scale: LikenessScale) -> None:
        self.faces = faces
        self.scale = scale

    def measure(self, images: Sequence[Any], texts: Sequence[str]) -> dict[str, list[float]]:
        readings = self.faces.measure(list(images))
        return {
            "likeness": [self.scale.position(reading.similarity) for reading in readings],
            "face_found": [float(reading.similarity is not None) for reading in readings],
        }


class ClipMeasure:
    """Column `clip_t` (alignment with the intent) and, with `copy_reference`, `copy` (04's copy flag), from
    one CLIP pass over the pictures."""

    def __init__(self, alignment, copy_reference: tuple | None = None) -> None:
        self.alignment = alignment  # sdxlab.evaluate.ClipAlignmentScorer
        self.copy_reference = copy_reference  # (training embeddings, mirrored embeddings, file names)
        self.columns = ["clip_t"] + (["copy"] if copy_reference is not None else [])

    def measure(self, images: Sequence[Any], texts: Sequence[str]) -> dict[str, list[float]]:
        embeddings = self.alignment.clip.embed_images(list(images))
        values = {"clip_t": [float(value) for value in self.alignment.score_embeddings(embeddings, list(texts))]}
        if self.copy_reference is not None:
            from sdxlab.evaluate.copying import check_copies

            flags = check_copies(embeddings, *self.copy_reference).flags
            values["copy"] = [float(flag) for flag in flags]
        return values


def copy_reference(clip, dataset_dir: str | Path):
    """CLIP embeddings of the training photos and their mirror images, as 04's copy check uses them; None
    with fewer than two photos (no bar for "the same picture")."""
    from PIL import ImageOps

    from sdxlab.evaluate.inputs import open_rgb, training_photos

    paths, _ = training_photos(dataset_dir)
    photos = [(path.name, image) for path in paths for image in [open_rgb(path)[0]] if image is not None]
    if len(photos) < 2:
        return None
    images = [image for _, image in photos]
    return (
        clip.embed_images(images),
        clip.embed_images([ImageOps.mirror(image) for image in images]),
        [name for name, _ in photos],
    )


def build_objective(
    weights: Mapping[str, float] | None = None,
    *,
    dataset_dir: str | Path | None = None,
    metrics_dir: str | Path | None = None,
    clip_model: str = "tiny",
    device: str = "auto",
    subject_token: str = SUBJECT_TOKEN,
    class_word: str = CLASS_WORD,
    other_people_dir: str | Path | None = None,
    vqa_model: str | None = None,
    intent_splitter=None,
    mood_download: bool = True,
) -> Objective:
    """Build the terms named in `weights` (default `DEFAULT_WEIGHTS`): "clip_t" (meaning), "likeness" and
    "face_found" (the person's face, from the run's dataset, calibrated with 04's floor and ceiling), "copy"
    (04's copy flag), "intent_parts" (every part of the intent by the same CLIP; `intent_splitter` splits the
    intent, default the rule splitter), "mood" (fer's expression model, downloaded once when `mood_download`),
    "vqa" (only with `vqa_model`, a BLIP VQA hub id or folder), or any scorer registered in `sdxlab.evaluate`.
    A weight of 0 skips a term (unless another term needs its measure). A term that cannot be built (no
    training photos, no floor, weights missing) is left out with a note in `objective.notes`, and the search
    goes on with the others."""
    from sdxlab import evaluate

    weights = {
        str(name): float(weight) for name, weight in dict(DEFAULT_WEIGHTS if weights is None else weights).items()
    }
    wanted = {name for name, weight in weights.items() if weight}
    scorers: dict[str, Any] = {}
    notes: list[str] = []
    description: dict[str, Any] = {
        "clip_model": str(clip_model),
        "dataset": str(dataset_dir) if dataset_dir is not None else None,
    }
    alignment = None
    if wanted & {"clip_t", "copy", "intent_parts"}:
        alignment = evaluate.ClipAlignmentScorer(
            clip_model=clip_model, device=device, subject_token=subject_token, class_word=class_word
        )
    if wanted & {"clip_t", "copy"}:
        reference = None
        if "copy" in wanted:
            reference = copy_reference(alignment.clip, dataset_dir) if dataset_dir is not None else None
            if reference is None:
                notes.append("The copy penalty is left out: it needs at least two training photos in the dataset.")
        if "clip_t" in wanted or reference is not None:
            scorers["clip"] = ClipMeasure(alignment, reference)
    if wanted & {"likeness", "face_found"}:
        try:
            measure, source_note = _likeness_measure(dataset_dir, metrics_dir, other_people_dir)
            scorers["likeness"] = measure
            description["likeness_scale"] = measure.scale.to_dict()
            notes.extend(source_note)
        except evaluate.LikenessUnavailable as error:
            notes.append(f"Likeness is left out of the objective: {error}")
    specs: dict[str, dict[str, Any]] = {}
    if "intent_parts" in wanted:
        specs["intent_parts"] = {
            "clip": alignment.clip,
            "subject_token": subject_token,
            "class_word": class_word,
            **({"splitter": intent_splitter} if intent_splitter is not None else {}),
        }
        description["intent_split"] = "language_model" if intent_splitter is not None else "rules"
    if "mood" in wanted:
        specs["mood"] = {"download": mood_download}
    if "vqa" in wanted:
        if vqa_model:
            specs["vqa"] = {
                "model": vqa_model,
                "device": device,
                "subject_token": subject_token,
                "class_word": class_word,
            }
            description["vqa_model"] = str(vqa_model)
        else:
            notes.append(
                "vqa: no visual question-answering model is set (search_vqa_model), so the vqa term is "
                "left out; set it to a BLIP VQA hub id or folder to grade yes/no questions."
            )
    for name in sorted(wanted - {"clip_t", "copy", "likeness", "face_found", "intent_parts", "mood", "vqa"}):
        specs[name] = {}
    from sdxlab.evaluate.scorers import build_scorers

    built, left_out = build_scorers(specs)
    notes.extend(left_out)
    for name, scorer in built.items():
        scorers[name] = scorer
        if not getattr(scorer, "meaningful", True):
            notes.append(
                f"{name}: scored with random weights (the tiny demo CLIP); its numbers only show the "
                "mechanics, not meaning."
            )
    known = {column for item in scorers.values() for column in as_measure(item).columns}
    active = {name: weight for name, weight in weights.items() if name in known}
    if not any(weight > 0 for weight in active.values()):
        raise ValueError("No scorer is left to score pictures with: " + " ".join(notes or ["all weights are zero."]))
    description["weights"] = active
    return Objective(scorers=scorers, weights=active, description=description, notes=notes)


def _likeness_measure(dataset_dir, metrics_dir, other_people_dir) -> tuple[LikenessMeasure, list[str]]:
    from sdxlab import evaluate

    if dataset_dir is None:
        raise evaluate.LikenessUnavailable("No dataset folder was given.")
    faces = evaluate.LikenessScorer.from_dataset(dataset_dir, download_floor=False)
    scale = None
    if metrics_dir is not None:
        scale = LikenessScale.from_summary(Path(metrics_dir) / "summary.json", dataset_dir, len(faces.reference))
    notes = []
    if scale is None:  # 04 has not run on this dataset: the same calibration, computed here once
        calibrated = evaluate.LikenessScorer.from_dataset(dataset_dir, other_people_dir, download_floor=True)
        scale = LikenessScale.from_calibration(
            calibrated.calibration,
            f"computed by 05 as 04_evaluate does (floor: {calibrated.calibration.floor_source or 'unknown'})",
        )
        if scale is None:
            raise evaluate.LikenessUnavailable(
                "its floor (strangers) or ceiling (your photos against each other) is unknown, so a likeness "
                "number would mean nothing; " + " ".join(calibrated.notes[-1:]) + " Run 04_evaluate with network "
                "once, or pass evaluate_other_people_dir."
            )
        notes.append("04_evaluate's calibration was not found for this dataset; it was computed the same way.")
    return LikenessMeasure(faces, scale), notes
