"""Evaluate a run (or any folder of images): the per-image table, the summary, the plots, and run comparisons.

The column and key names are documented in `sdxlab.evaluate`'s docstring and listed in `PER_IMAGE_COLUMNS`,
`SUMMARY_KEYS` and `GROUP_KEYS`; tests hold them stable.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageOps

from sdxlab import files
from sdxlab.evaluate.clip import DEFAULT_CLIP_MODEL
from sdxlab.evaluate.copying import CopyCheck, check_copies
from sdxlab.evaluate.diversity import mean_distance_within_groups
from sdxlab.evaluate.inputs import checkpoint_step, find_samples, open_rgb, photo_sources, training_photos
from sdxlab.evaluate.likeness import POSE_FEATURES, Calibration, LikenessUnavailable, compare, read_face
from sdxlab.evaluate.scorers import ClipAlignmentScorer, LikenessScorer, intent_text
from sdxlab.labels import RANDOM_WEIGHTS_NOTE, is_random_weights
from sdxlab.layout import RunLayout
from sdxlab.models import ModelLoadError
from sdxlab.settings.common import CLASS_WORD, SUBJECT_TOKEN

PER_IMAGE_COLUMNS = (
    "file",
    "prompt",
    "intent",
    "seed",
    "lora_scale",
    "checkpoint",
    "checkpoint_step",
    "face_found",
    "face_count",
    "face_score",
    "face_size",
    "likeness",
    "likeness_nearest",
    "likeness_position",
    "identity_distance",
    "identity_distance_nearest",
    "identity_match",
    "likeness_nearest_photo",
    "clip_t",
    "diversity_clip",
    "diversity_pose",
    *POSE_FEATURES,
    "copy_distance",
    "copy_nearest_photo",
    "copy_flag",
    "combined_score",
    "note",
)
SUMMARY_KEYS = (
    "note",
    "meaningful",
    "created",
    "run",
    "samples_dir",
    "dataset_dir",
    "clip_model",
    "images",
    "notes",
    "calibration",
    "overall",
    "per_prompt",
    "per_lora_scale",
    "per_checkpoint",
    "files",
)
GROUP_KEYS = (
    "images",
    "faces_found",
    "face_found_rate",
    "likeness_mean",
    "likeness_nearest_mean",
    "likeness_position_mean",
    "identity_match_rate",
    "clip_t_mean",
    "clip_diversity",
    "pose_diversity",
    "copies",
)
CALIBRATION_KEYS = (
    "training_faces",
    "training_photos",
    "ceiling",
    "ceiling_nearest",
    "floor",
    "floor_nearest",
    "floor_source",
    "strangers",
    "copy_threshold",
    "notes",
)
RANDOM_CLIP_NOTE = (
    "CLIP-T, CLIP diversity and copy distances come from a tiny random-weight CLIP and are "
    "meaningless; use a real CLIP model (the clip_model parameter) for real numbers."
)
UNKNOWN_PROMPT = "(prompt unknown)"
THUMBNAIL = 256  # longest side of the copies kept for galleries


@dataclass
class Evaluation:
    """Everything one evaluation produced; `per_image` and `summary` are also written to `metrics_dir`."""

    per_image: pd.DataFrame
    summary: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    metrics_dir: Path | None = None
    calibration: Calibration | None = None
    thumbnails: dict[str, Image.Image] = field(default_factory=dict)  # file -> small copy, for galleries

    @property
    def empty(self) -> bool:
        return self.per_image.empty


def evaluate_run(
    run: str,
    outputs_dir: str | Path | None = None,
    *,
    samples_dir: str | Path | None = None,
    dataset_dir: str | Path | None = None,
    model: str | None = None,
    subject_token: str = SUBJECT_TOKEN,
    random_images: bool | None = None,
    **options: Any,
) -> Evaluation:
    """Evaluate a run's samples/ against its dataset/ and write metrics/ (see `evaluate_folder` for options).

    `model` is the generator's model (the notebook's `model`): "tiny" labels every number as meaningless
    (so does a train_config.json saying so). Pivotal-tuning tokens from train_config.json count as the
    subject token when prompts are turned into intent texts.
    """
    layout = RunLayout.for_run(run, outputs_dir)
    config = _train_config(layout.lora / "train_config.json")
    tokens = [str(token) for token in config.get("tokens") or []]
    subject = [subject_token, "".join(tokens), *tokens] if tokens else subject_token
    if random_images is None:
        random_images = is_random_weights(model, config.get("model"))
    return evaluate_folder(
        samples_dir or layout.samples,
        layout.metrics,
        dataset_dir=layout.dataset if dataset_dir is None else dataset_dir,
        run=run,
        subject_token=subject,
        random_images=random_images,
        **options,
    )


def _train_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def evaluate_folder(
    samples_dir: str | Path,
    metrics_dir: str | Path | None = None,
    *,
    dataset_dir: str | Path | None = None,
    clip_model: str = DEFAULT_CLIP_MODEL,
    prompt: str | None = None,
    other_people_dir: str | Path | None = None,
    subject_token: str | Sequence[str] = SUBJECT_TOKEN,
    class_word: str = CLASS_WORD,
    device: str = "auto",
    random_images: bool = False,
    upsample: int = 1,
    download_floor: bool = True,
    run: str | None = None,
    progress: bool = True,
    likeness: LikenessScorer | None = None,
) -> Evaluation:
    """Evaluate a folder of generated images; writes per_image.csv and summary.json when `metrics_dir` is given.

    Nothing here raises on bad input: a missing training set skips likeness, an unreachable CLIP model skips
    alignment, diversity-by-CLIP and copying, and each reason lands in `notes` (and in summary.json).
    `random_images=True` labels every number as meaningless (images from the tiny random-weight model).
    `likeness` reuses a `LikenessScorer` already built (e.g. to show its calibration first) instead of
    building one from `dataset_dir` and `other_people_dir`.
    """
    found = find_samples(samples_dir, prompt)
    notes = list(found.notes)
    images, samples, thumbnails, image_notes = [], [], {}, []
    for sample in found.samples:
        image, problem = open_rgb(sample.path)
        if image is None:
            notes.append(problem)
            continue
        images.append(image)
        samples.append(sample)
        image_notes.append([problem] if problem else [])
        thumbnails[sample.file] = ImageOps.contain(image, (THUMBNAIL, THUMBNAIL))
    if not samples:
        if found.samples:
            notes.append(f"None of the images in {found.folder} could be read; nothing was evaluated.")
        return Evaluation(pd.DataFrame(columns=list(PER_IMAGE_COLUMNS)), {}, notes, None)

    if likeness is None:
        likeness = _likeness_scorer(dataset_dir, other_people_dir, download_floor, upsample, notes)
    else:
        notes.extend(likeness.notes)
    readings = [read_face(image, upsample) for image in _progress(images, "faces", progress)]
    compared = [
        compare(reading, likeness.reference, likeness.calibration) if likeness else None for reading in readings
    ]

    clip_scorer = _clip_scorer(clip_model, device, subject_token, class_word, notes)
    prompts = [sample.prompt for sample in samples]
    intents = [intent_text(text, subject_token, class_word) if text else None for text in prompts]
    clip_t = [math.nan] * len(samples)
    diversity_clip = np.full(len(samples), np.nan)
    copies = CopyCheck(math.nan, np.full(len(samples), np.nan), [""] * len(samples), np.zeros(len(samples), bool))
    groups = [(text or "", sample.lora_scale, sample.checkpoint) for text, sample in zip(prompts, samples, strict=True)]
    if clip_scorer is not None:
        embeddings = clip_scorer.clip.embed_images(images)
        with_prompt = [index for index, text in enumerate(prompts) if text]
        scores = clip_scorer.score_embeddings(embeddings[with_prompt], [prompts[index] for index in with_prompt])
        for index, score in zip(with_prompt, scores, strict=True):
            clip_t[index] = score
        diversity_clip = mean_distance_within_groups(embeddings, groups)
        copies = _copy_check(clip_scorer, embeddings, dataset_dir, notes)
    pose = np.array([[reading.pose.get(name, np.nan) for name in POSE_FEATURES] for reading in readings])
    diversity_pose = mean_distance_within_groups(pose, groups, metric="euclidean")

    rows = []
    for index, sample in enumerate(samples):
        reading, likeness_reading = readings[index], compared[index]
        row_notes = image_notes[index]
        if not reading.face_found:
            row_notes.append("no face found")
        elif reading.face_count > 1:
            row_notes.append(f"{reading.face_count} faces; the largest confident one was measured")
        rows.append(
            {
                "file": sample.file,
                "prompt": sample.prompt or "",
                "intent": intents[index] or "",
                "seed": sample.seed,
                "lora_scale": sample.lora_scale,
                "checkpoint": sample.checkpoint,
                "checkpoint_step": checkpoint_step(sample.checkpoint),
                "face_found": reading.face_found,
                "face_count": reading.face_count,
                "face_score": reading.face_score,
                "face_size": reading.face_size,
                "likeness": likeness_reading.similarity if likeness_reading else None,
                "likeness_nearest": likeness_reading.similarity_nearest if likeness_reading else None,
                "likeness_position": likeness_reading.position if likeness_reading else None,
                "identity_distance": likeness_reading.distance if likeness_reading else None,
                "identity_distance_nearest": likeness_reading.distance_nearest if likeness_reading else None,
                "identity_match": likeness_reading.identity_match if likeness_reading else None,
                "likeness_nearest_photo": (likeness_reading.nearest_photo or "") if likeness_reading else "",
                "clip_t": clip_t[index],
                "diversity_clip": diversity_clip[index],
                "diversity_pose": diversity_pose[index],
                **{name: reading.pose.get(name) for name in POSE_FEATURES},
                "copy_distance": copies.distances[index],
                "copy_nearest_photo": copies.nearest[index],
                "copy_flag": bool(copies.flags[index]) if not math.isnan(copies.threshold) else None,
                "note": "; ".join(row_notes),
            }
        )
    frame = pd.DataFrame(rows)
    frame["combined_score"] = combined_score(frame)
    frame = frame[list(PER_IMAGE_COLUMNS)]

    clip_meaningful = clip_scorer.meaningful if clip_scorer is not None else None
    summary = build_summary(
        frame,
        notes=notes,
        calibration=likeness.calibration if likeness else None,
        training_faces=len(likeness.reference) if likeness else 0,
        training_photos=likeness.reference.photos if likeness else 0,
        copy_threshold=copies.threshold,
        random_images=random_images,
        clip_meaningful=clip_meaningful,
        clip_model=clip_model if clip_scorer is not None else None,
        run=run,
        samples_dir=found.folder,
        dataset_dir=dataset_dir,
    )
    evaluation = Evaluation(frame, summary, notes, None, likeness.calibration if likeness else None, thumbnails)
    if metrics_dir is not None:
        write_evaluation(evaluation, Path(metrics_dir))
    return evaluation


def _progress(items, label: str, enabled: bool):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=label, leave=False)


def _likeness_scorer(dataset_dir, other_people_dir, download_floor: bool, upsample: int, notes: list[str]):
    if dataset_dir is None:
        notes.append("No training set given; likeness is skipped (the other metrics still run).")
        return None
    try:
        scorer = LikenessScorer.from_dataset(dataset_dir, other_people_dir, download_floor, upsample)
    except LikenessUnavailable as error:
        notes.append(str(error))
        return None
    notes.extend(scorer.notes)
    return scorer


def _clip_scorer(clip_model: str, device: str, subject_token, class_word: str, notes: list[str]):
    try:
        return ClipAlignmentScorer(clip_model, device, subject_token, class_word)
    except ModelLoadError as error:
        notes.append(f"{error} Prompt alignment, CLIP diversity and copy detection are skipped.")
        return None


def _copy_check(clip_scorer: ClipAlignmentScorer, embeddings: np.ndarray, dataset_dir, notes: list[str]) -> CopyCheck:
    paths, _ = training_photos(dataset_dir) if dataset_dir is not None else ([], [])
    photos = [
        (path.name, image, source)
        for path, source in zip(paths, photo_sources(paths), strict=True)
        for image in [open_rgb(path)[0]]
        if image is not None
    ]
    if len({source for _, _, source in photos}) < 2:
        notes.append("Copy detection needs at least two training photos; no image was checked for copying.")
    training = clip_scorer.clip.embed_images([image for _, image, _ in photos])
    mirrored = clip_scorer.clip.embed_images([ImageOps.mirror(image) for _, image, _ in photos])
    return check_copies(
        embeddings, training, mirrored, [name for name, _, _ in photos], [source for _, _, source in photos]
    )


def combined_score(frame: pd.DataFrame) -> pd.Series:
    """Mean of the percentile ranks of likeness (no face ranks last) and CLIP-T within this evaluation.

    Only for ordering (the best/worst gallery): it is relative to the images evaluated together.
    """
    parts = []
    if frame["likeness"].notna().any():
        parts.append(frame["likeness"].astype(float).fillna(-np.inf).rank(pct=True))
    if frame["clip_t"].notna().any():
        parts.append(frame["clip_t"].astype(float).rank(pct=True))
    if not parts:
        return pd.Series(np.nan, index=frame.index)
    return pd.concat(parts, axis=1).mean(axis=1)


def headline_figures(evaluation: Evaluation) -> dict[str, Any]:
    """The figures 04_evaluate records at its end (plain JSON values; None where not measured).

    From summary.json: the images and faces, the mean likeness (raw and calibrated), the share recognised,
    the mean CLIP-T, the copy flags, and what the calibration stood on (training photos, strangers).
    """
    summary = evaluation.summary or {}
    overall, calibration = summary.get("overall", {}), summary.get("calibration", {})
    return {
        "images": summary.get("images", 0),
        "meaningful_images": summary.get("meaningful", {}).get("images"),  # False: tiny random-weight model
        "meaningful_clip": summary.get("meaningful", {}).get("clip"),  # False: tiny CLIP, None: alignment skipped
        "faces_found": overall.get("faces_found", 0),
        "likeness_mean": overall.get("likeness_mean"),
        "likeness_position_mean": overall.get("likeness_position_mean"),
        "identity_match_rate": overall.get("identity_match_rate"),
        "clip_t_mean": overall.get("clip_t_mean"),
        "copies": overall.get("copies"),
        "training_faces": calibration.get("training_faces"),
        "training_photos": calibration.get("training_photos"),
        "strangers": calibration.get("strangers"),
        "ceiling_mean": (calibration.get("ceiling") or {}).get("mean"),
        "floor_mean": (calibration.get("floor") or {}).get("mean"),
    }


# --- summary --------------------------------------------------------------------------------------------------


def group_stats(frame: pd.DataFrame) -> dict[str, Any]:
    """The GROUP_KEYS statistics of some rows of per_image (NaN-free: missing values are None)."""
    faces_found = int(frame["face_found"].astype(bool).sum())
    likeness_known = frame["identity_match"].notna()
    stats = {
        "images": len(frame),
        "faces_found": faces_found,
        "face_found_rate": faces_found / len(frame) if len(frame) else None,
        "likeness_mean": _mean(frame["likeness"]),
        "likeness_nearest_mean": _mean(frame["likeness_nearest"]),
        "likeness_position_mean": _mean(frame["likeness_position"]),
        # no face counts as "not recognised": the share of all images in which dlib sees the person
        "identity_match_rate": (
            float(frame.loc[likeness_known, "identity_match"].astype(bool).sum()) / len(frame)
            if likeness_known.any()
            else None
        ),
        "clip_t_mean": _mean(frame["clip_t"]),
        "clip_diversity": _mean(frame["diversity_clip"]),
        "pose_diversity": _mean(frame["diversity_pose"]),
        "copies": int(frame["copy_flag"].fillna(False).astype(bool).sum())
        if frame["copy_flag"].notna().any()
        else None,
    }
    return stats


def _mean(values: pd.Series) -> float | None:
    numbers = pd.to_numeric(values, errors="coerce").dropna()
    return float(numbers.mean()) if len(numbers) else None


def _scale_key(value: Any) -> str:
    return "none" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{float(value):g}"


def build_summary(
    frame: pd.DataFrame,
    *,
    notes: list[str],
    calibration: Calibration | None,
    training_faces: int,
    copy_threshold: float,
    random_images: bool,
    clip_meaningful: bool | None,
    clip_model: str | None,
    run: str | None,
    samples_dir: Path,
    dataset_dir,
    training_photos: int | None = None,
) -> dict[str, Any]:
    warnings = ([RANDOM_WEIGHTS_NOTE] if random_images else []) + (
        [RANDOM_CLIP_NOTE] if clip_meaningful is False else []
    )
    per_checkpoint = {}
    for label, rows in frame.groupby("checkpoint", sort=False):
        step = rows["checkpoint_step"].dropna()
        per_checkpoint[str(label)] = {**group_stats(rows), "step": int(step.iloc[0]) if len(step) else None}
    calibration_dict = dict.fromkeys(CALIBRATION_KEYS)
    calibration_dict.update(
        {
            "training_faces": training_faces,
            "copy_threshold": copy_threshold,
            "notes": [],
            "strangers": 0,
            "training_photos": training_faces if training_photos is None else training_photos,
        }
    )
    if calibration is not None:
        calibration_dict.update(calibration.to_dict())
    summary = {
        "note": "; ".join(warnings),  # each note is a clause; the CLIP one ends the sentence
        "meaningful": {"images": not random_images, "clip": clip_meaningful},
        "created": dt.datetime.now().isoformat(timespec="seconds"),
        "run": run,
        "samples_dir": str(samples_dir),
        "dataset_dir": str(dataset_dir) if dataset_dir is not None else None,
        "clip_model": clip_model,
        "images": len(frame),
        "notes": list(notes),
        "calibration": calibration_dict,
        "overall": group_stats(frame),
        "per_prompt": {
            prompt or UNKNOWN_PROMPT: group_stats(rows) for prompt, rows in frame.groupby("prompt", sort=False)
        },
        "per_lora_scale": {
            key: group_stats(rows) for key, rows in frame.groupby(frame["lora_scale"].map(_scale_key), sort=False)
        },
        "per_checkpoint": per_checkpoint,
        "files": [],
    }
    return _json_safe(summary)


def _json_safe(value: Any) -> Any:
    """NaN and numpy numbers become JSON's null and plain numbers (strict JSON readers reject NaN)."""
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(value) or math.isinf(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


# --- writing and plots ----------------------------------------------------------------------------------------


def write_evaluation(evaluation: Evaluation, metrics_dir: Path) -> Path:
    """per_image.csv, the plots and summary.json (last, so a complete summary means a complete folder)."""
    from sdxlab.plots import close

    metrics_dir.mkdir(parents=True, exist_ok=True)
    files.write_csv(metrics_dir / "per_image.csv", evaluation.per_image)
    written = ["per_image.csv"]
    for name, figure in evaluation_figures(evaluation).items():
        files.save_figure(metrics_dir / f"{name}.png", figure)
        close(figure)
        written.append(f"{name}.png")
    evaluation.summary["files"] = [*written, "summary.json"]
    files.write_json(metrics_dir / "summary.json", evaluation.summary)
    evaluation.metrics_dir = metrics_dir
    return metrics_dir


def evaluation_figures(evaluation: Evaluation) -> dict[str, Any]:
    """The figures worth drawing for this evaluation, by file stem (those without data are left out)."""
    from sdxlab.evaluate import plots

    frame, note = evaluation.per_image, evaluation.summary.get("note", "")
    figures = {}
    if evaluation.calibration is not None:
        figures["likeness_calibration"] = plots.likeness_calibration(
            evaluation.calibration, frame["likeness"].dropna().astype(float).tolist(), note
        )
    if frame["clip_t"].notna().any():
        figures["likeness_vs_alignment"] = plots.likeness_vs_alignment(frame, note)
    if frame["checkpoint"].nunique() > 1:
        figures["likeness_per_checkpoint"] = plots.likeness_per_checkpoint(frame, note)
    figures["gallery"] = best_and_worst_gallery(evaluation)
    return figures


def best_and_worst_gallery(evaluation: Evaluation, count: int = 4):
    """The `count` best and worst images by combined score, captioned with their scores."""
    from sdxlab.evaluate import plots

    frame = evaluation.per_image
    ordered = frame.sort_values("combined_score", ascending=False, na_position="last")
    count = min(count, max(1, len(ordered) // 2)) if len(ordered) > 1 else 1
    best = ordered.head(count)
    worst = ordered.tail(count).iloc[::-1] if len(ordered) > 1 else ordered.iloc[0:0]
    return plots.best_worst_gallery(
        [evaluation.thumbnails[row["file"]] for _, row in best.iterrows()],
        [evaluation.thumbnails[row["file"]] for _, row in worst.iterrows()],
        [f"best: {score_caption(row)}" for _, row in best.iterrows()],
        [f"worst: {score_caption(row)}" for _, row in worst.iterrows()],
        "Best and worst images (combined rank of likeness and CLIP-T)",
        evaluation.summary.get("note", ""),
    )


def score_caption(row: pd.Series) -> str:
    """A short caption with an image's scores, e.g. "likeness 0.95 (pos 0.82), CLIP-T 0.31"."""
    scores = []
    if not row["face_found"]:
        scores.append("no face")
    elif pd.notna(row["likeness"]):
        position = f" (pos {row['likeness_position']:.2f})" if pd.notna(row["likeness_position"]) else ""
        scores.append(f"likeness {row['likeness']:.3f}{position}")
    if pd.notna(row["clip_t"]):
        scores.append(f"CLIP-T {row['clip_t']:.3f}")
    if row["copy_flag"] is True:
        scores.append("copy?")
    return f"{str(row['file'])[-30:]}\n{', '.join(scores)}"


# --- comparing runs -------------------------------------------------------------------------------------------

# the summary's per-group figures that compare across runs (counts and the nearest-photo likeness do not)
COMPARE_METRICS = tuple(key for key in GROUP_KEYS if key not in ("images", "faces_found", "likeness_nearest_mean"))


@dataclass
class RunComparison:
    table: pd.DataFrame  # one row per run (and group), one column per metric
    figure: Any
    notes: list[str]


def compare_runs(*runs: str | Path, outputs_dir: str | Path | None = None, by: str = "overall") -> RunComparison:
    """Compare evaluated runs side by side: a table of their summary metrics and a bar chart.

    `runs` are run names (under the outputs folder), run folders or metrics folders. `by` is "overall",
    "prompt", "lora_scale" or "checkpoint" (one row per run and group). Runs not evaluated yet are named in
    `notes` and left out.
    """
    from sdxlab.evaluate import plots

    sections = {"overall": None, "prompt": "per_prompt", "lora_scale": "per_lora_scale", "checkpoint": "per_checkpoint"}
    if by not in sections:
        raise ValueError(f"compare_runs(by={by!r}) must be one of {', '.join(sections)}.")
    rows, notes, warnings = [], [], set()
    for run in runs:
        summary_path = _summary_path(run, outputs_dir)
        if summary_path is None:
            notes.append(
                f"Run {run!s} has no metrics/summary.json; evaluate it with 04_evaluate first. It was left out."
            )
            continue
        try:
            summary = json.loads(summary_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            notes.append(f"{summary_path} could not be read ({type(error).__name__}); run {run!s} was left out.")
            continue
        name = summary.get("run") or summary_path.parent.parent.name
        if summary.get("note"):
            warnings.add(summary["note"])
        groups = {"all": summary.get("overall", {})} if sections[by] is None else summary.get(sections[by], {})
        for group, stats in groups.items():
            rows.append({"run": name, by: group, **{metric: stats.get(metric) for metric in COMPARE_METRICS}})
    table = pd.DataFrame(rows, columns=["run", by, *COMPARE_METRICS])
    if by == "overall":
        table = table.drop(columns=[by])
    figure = plots.runs_comparison(table, by if by != "overall" else None, " ".join(sorted(warnings)))
    return RunComparison(table, figure, notes)


def _summary_path(run: str | Path, outputs_dir) -> Path | None:
    candidates = []
    path = Path(run)
    if path.is_dir():
        candidates += [path / "summary.json", path / "metrics" / "summary.json"]
    else:
        with contextlib.suppress(ValueError):  # not a valid run name: nothing to find
            candidates.append(RunLayout.for_run(str(run), outputs_dir).metrics / "summary.json")
    return next((candidate for candidate in candidates if candidate.is_file()), None)
