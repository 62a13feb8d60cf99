"""Evaluate (04_evaluate): does it look like me, does it follow the prompt, is it varied, did it copy my selfies?

`evaluate_run(run)` reads `outputs/<run>/samples/` (or any folder of images: `evaluate_folder`) and the
person's training photos in `outputs/<run>/dataset/`, and writes `outputs/<run>/metrics/`:

- `per_image.csv` (one row per generated image),
- `summary.json` (the same numbers summarised overall, per prompt, per LoRA scale, per checkpoint),
- plots: `likeness_calibration.png`, `likeness_vs_alignment.png` (when prompts are known),
  `likeness_per_checkpoint.png` (when several checkpoints were sampled), `gallery.png` (best and worst).

Modules: `scorers` (the `Scorer` interface, `ClipAlignmentScorer`, `LikenessScorer`, `make_scorer`),
`clip` (loading CLIP, the tiny offline CLIP), `likeness` (faces, identity, floor/ceiling calibration),
`other_people` (the floor's faces), `diversity`, `copying`, `inputs` (what is read), `report` (tables,
summary, which plots to draw, `compare_runs`), `plots` (the figures).

per_image.csv columns (stable; empty cells mean "not measured"):

    file                       image path relative to the samples folder (as in samples.csv)
    prompt                     the prompt it was made from ("" when unknown)
    intent                     the prompt with the subject token replaced by the class word (what CLIP scores)
    seed, lora_scale           from samples.csv or the PNG's parameters
    checkpoint                 training checkpoint folder name (e.g. step_000400) or "final"
    checkpoint_step            the step number in `checkpoint` (empty for "final")
    face_found                 a confident face was detected (dlib HOG)
    face_count                 confident faces in the image
    face_score, face_size      detector confidence; face width over the image's shorter side
    likeness                   cosine similarity of the main face's identity descriptor to the training centroid
    likeness_nearest           the same to the nearest single training photo
    likeness_position          calibrated likeness: 0 = floor (other people), 1 = ceiling (own photos, leave-one-out)
    identity_distance          dlib Euclidean distance to the centroid (dlib: < 0.6 usually means the same person)
    identity_distance_nearest  the same to the nearest training photo
    identity_match             identity_distance < 0.6
    likeness_nearest_photo     file name of the training photo nearest in identity
    clip_t                     CLIP cosine between the image and `intent`
    diversity_clip             mean CLIP image-embedding cosine distance to the other images of its group
                               (same prompt, LoRA scale and checkpoint)
    diversity_pose             mean distance of its pose/expression vector to those of its group's other faces
    face_yaw, face_pitch, face_roll, mouth_open, mouth_width
                               pose and expression proxies from the 68 landmarks (see `likeness.pose_features`)
    copy_distance              CLIP image-embedding distance to the nearest training photo (mirrored or not)
    copy_nearest_photo         that photo's file name
    copy_flag                  copy_distance is below the smallest distance between two training photos
    combined_score             mean percentile rank of likeness and CLIP-T in this evaluation (orders the gallery)
    note                       what went wrong or is worth knowing for this image ("no face found", "grayscale")

summary.json keys (stable):

    note            "" or the warning that numbers come from random weights and are meaningless
    meaningful      {"images": false for tiny-model images, "clip": false for the tiny CLIP, null if skipped}
    created, run, samples_dir, dataset_dir, clip_model
    images          number of images evaluated
    notes           every message about skipped metrics or bad input, in plain sentences
    calibration     training_faces (training images with a face), training_photos (the source photos they
                    were cropped from: a main and a loose crop of one photo count once), ceiling /
                    ceiling_nearest (one value per source photo, leave-one-photo-out) / floor / floor_nearest
                    ({mean, low, high, count}; low/high are the 10th/90th percentiles), floor_source,
                    strangers (other people's faces the floor is made of: every one found), copy_threshold, notes
    overall, per_prompt, per_lora_scale, per_checkpoint
                    group statistics; per_* map a prompt / scale ("0.8", "none") / checkpoint label to them,
                    and per_checkpoint entries also carry "step". Group statistics:
                    images, faces_found, face_found_rate, likeness_mean, likeness_nearest_mean,
                    likeness_position_mean (means over images with a face), identity_match_rate (share of
                    ALL images recognised as the person: no face counts as a miss), clip_t_mean,
                    clip_diversity, pose_diversity, copies
    files           the files written to metrics/
"""

from sdxlab.lazy import lazy_exports

# name -> module it lives in; imported on first use (sdxlab.lazy says why)
_EXPORTS = {
    "CALIBRATION_KEYS": "report",
    "Calibration": "likeness",
    "ClipAlignmentScorer": "scorers",
    "ClipModel": "clip",
    "DEFAULT_CLIP_MODEL": "clip",
    "Evaluation": "report",
    "GROUP_KEYS": "report",
    "IdentityReference": "likeness",
    "LikenessScorer": "scorers",
    "LikenessUnavailable": "likeness",
    "PER_IMAGE_COLUMNS": "report",
    "RunComparison": "report",
    "SUMMARY_KEYS": "report",
    "Scorer": "scorers",
    "TINY_CLIP": "clip",
    "available_scorers": "scorers",
    "calibrate": "likeness",
    "compare_runs": "report",
    "evaluate_folder": "report",
    "evaluate_run": "report",
    "find_samples": "inputs",
    "group_photo_faces": "other_people",
    "group_photo_path": "other_people",
    "headline_figures": "report",
    "intent_text": "scorers",
    "load_clip": "clip",
    "make_scorer": "scorers",
    "other_people": "other_people",
    "parse_a1111_parameters": "inputs",
    "read_face": "likeness",
    "register_scorer": "scorers",
    "tiny_clip": "clip",
    "training_photos": "inputs",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
