"""The GPU check: one call on a fresh GPU machine without network runs sdxlab for real at full SDXL size.

    bench/gpu_check.sh                      # on the GPU machine (installs the carried wheels first)
    bench/gpu_check.sh --dry-run            # here: the same script end to end with the tiny model on the CPU
    .venv/bin/python bench/gpu_check.py --dry-run --parts model,equivalence,train

Parts, in order of importance, each in its own guard (a failure is recorded and the next part runs) and with a
time budget (the part is stopped when it runs over). Expected times are for one H100/H200, from
../shared/reference/ANCHORS.md; the whole check is planned for ~9 minutes (--budget, default 550 s).

 1. environment   device, versions, free memory                                                    ~1 s
 2. model         the random full-size SDXL (`sdxlab.sdxl.random_weights`, exact SDXL-base-1.0 architecture)
                  written as a diffusers folder of safetensors and loaded back through
                  `sdxlab.models.load_pipeline`, as a user's local SDXL folder is loaded             ~60 s
 3. equivalence   the captured training step against the eager one (`train.graphed.compare_with_eager`):
                  same loss and LoRA gradients for 4 steps within the stated bf16 tolerance, and
                  their milliseconds per step (eager batch 1 ≈ 0.6 s/step, captured ≈ 0.11 s)       ~20 s
 4. train         notebooks/02_train.ipynb's cells with the `sdxl` profile, shortened to 24 steps with a
                  checkpoint every 12 (auto batch, validation pictures, both LoRA files)             ~90 s
 5. bench_train   bench/bench_train.py, 3 warm-up + 10 timed steps per recipe: the reference recipe,
                  sdxlab's defaults, batch 1 captured and eager, low memory, and the sdxl-16gb and
                  sdxl-10gb profiles under 16 / 10 GiB caps                                         ~160 s
 6. sample        notebooks/03_sample.ipynb: 2 prompts × 2 seeds, the LoRA-scale sweep, every checkpoint ~45 s
 7. sampler_graphs the Sampler's CUDA-graph UNet replay against its eager pipeline (same picture within
                  a tolerance) and the stock pipeline call, at batch 1, 30 steps (03's sampler)      ~25 s
 8. bench_sample  bench/bench_sample.py --cuda-graphs, stock, fused and CUDA graphs, one timed call per
                  round, batch 1 (and 4 when 140 s are left)                                         ~55-120 s
 9. prompt_search notebooks/05_prompt_search.ipynb: one round of three candidates on two seeds, held-out
                  check (tiny CLIP: no network for a real one; no likeness: dlib is not carried)     ~40 s

Planned: ~510 s of the 550 s budget; what does not fit is skipped (the order above is the priority).

The notebooks run without papermill (not on the GPU image): each parameters cell is executed, the profile's
values and this script's overrides are laid over it (only names the cell declares, as the runner does), then
every later code cell in order, with `display` and `IPython.display` stood in where IPython is missing.

Everything lands in the output folder ($OUT, else --out), at most 8 files (what the run tool brings back):
gpu_check.log, summary.md, results.jsonl (one JSON line per part plus the bench scripts' lines),
equivalence.json, validation_grid.png, grid_prompts_seeds.png, grid_lora_scale.png, sampler_graphs.png.
The run folder itself (LoRA files, checkpoints, samples) stays in --work. Random weights throughout: the figures
are speed, memory and agreement between code paths, never picture quality.
"""

from __future__ import annotations

import argparse
import builtins
import contextlib
import datetime
import gc
import importlib.util
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# No network there: nothing may wait on the hub. No progress bars: the run tool returns only the output's tail.
for _name, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TQDM_DISABLE": "1",
}.items():
    os.environ.setdefault(_name, _value)

PROJECT = Path(__file__).resolve().parent.parent
BENCH = PROJECT / "bench"
GIB = 1024**3
# Not on the GPU image (../.library KINDS.md) and not carried: the dry run hides them too, so it fails where the
# GPU run would. (diffusers, open_clip_torch and bitsandbytes travel as wheels; see bench/gpu_prepare.sh.)
MISSING_ON_GPU_IMAGE = (
    "dlib",
    "face_recognition_models",
    "imagehash",
    "pillow_heif",
    "papermill",
    "nbformat",
    "nbclient",
    "ipywidgets",
    "ipykernel",
    "jupyterlab",
    "IPython",
    "prodigyopt",
    "playwright",
)
RESULT_FILES = (
    "gpu_check.log",
    "summary.md",
    "results.jsonl",
    "equivalence.json",
    "validation_grid.png",
    "grid_prompts_seeds.png",
    "grid_lora_scale.png",
    "sampler_graphs.png",
)


class OverBudget(Exception):
    """A part ran past its time budget."""


@dataclass
class Check:
    """What the parts share."""

    out: Path
    work: Path
    dry: bool
    deadline: float
    device: Any = None
    dtype: Any = None
    resolution: int = 1024
    model_dir: Path | None = None
    dataset_dir: Path | None = None
    run: str = "gpu-check"
    pipe: Any = None
    sampler: Any = None
    parts: list[dict] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def outputs_dir(self) -> Path:
        return self.work / "outputs"

    @property
    def layout(self):
        from sdxlab.layout import RunLayout

        return RunLayout.for_run(self.run, self.outputs_dir)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()


# --- 1. environment ------------------------------------------------------------------------------------------


def part_environment(check: Check) -> dict:
    import torch

    from sdxlab.models import choose_placement

    placement = choose_placement("cpu" if check.dry else "auto")
    check.device, check.dtype = placement.device, placement.dtype
    facts = {
        "device": device_name(placement.device),
        "dtype": str(placement.dtype).removeprefix("torch."),
        "versions": versions(),
        "python": sys.executable,
        "dry_run": check.dry,
    }
    if placement.device.type == "cuda":
        free, total = torch.cuda.mem_get_info(placement.device)
        facts.update(
            gpu_memory_total_gib=round(total / GIB, 1),
            gpu_memory_free_gib=round(free / GIB, 1),
            capability=".".join(map(str, torch.cuda.get_device_capability(placement.device))),
        )
    elif not check.dry:
        facts["note"] = "no CUDA device: this is a dry run with the tiny model"
    check.facts.update(facts)
    return facts


# --- 2. the model, as a user's local folder ---------------------------------------------------------------------


def part_model(check: Check) -> dict:
    """Build the model, write it as a diffusers folder of safetensors, load it back through load_pipeline."""
    import torch

    from sdxlab.models import build_tiny_pipeline, load_pipeline

    folder = check.work / ("tiny-sdxl" if check.dry else "random-sdxl-base-1.0")
    started = time.perf_counter()
    if not (folder / "model_index.json").exists():
        if check.dry:
            built = build_tiny_pipeline()
        else:
            from sdxlab.sdxl.random_weights import build_random_sdxl

            built = build_random_sdxl(check.device, check.dtype)
        built.save_pretrained(folder, safe_serialization=True)
        del built
        release(check.device)
    written = time.perf_counter() - started
    loaded_at = time.perf_counter()
    check.pipe = load_pipeline(folder, device=check.device, dtype=check.dtype)
    if check.device.type == "cuda":
        torch.cuda.synchronize(check.device)
    check.model_dir = folder
    check.resolution = 128 if check.dry else 1024
    size = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
    return {
        "folder": str(folder),
        "folder_gib": round(size / GIB, 2),
        "build_and_write_s": round(written, 1),
        "load_s": round(time.perf_counter() - loaded_at, 1),
        "unet_parameters": sum(p.numel() for p in check.pipe.unet.parameters()),
        "dtypes": {
            name: str(getattr(check.pipe, name).dtype).removeprefix("torch.")
            for name in ("unet", "vae", "text_encoder", "text_encoder_2")
        },
    }


# --- 3. the captured training step against the eager one ----------------------------------------------------------


def part_equivalence(check: Check) -> dict:
    import torch
    from diffusers import DDPMScheduler

    from sdxlab.train import TrainConfig
    from sdxlab.train.graphed import CapturedStep, compare_with_eager
    from sdxlab.train.lora import add_unet_lora
    from sdxlab.train.step import Batch

    pipe = check.pipe or _load(check)
    unet = pipe.unet
    config = TrainConfig(**{**profile_train_fields("sdxl"), "device": str(check.device)})
    trainable = add_unet_lora(unet, config)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # LoRA B starts at zero; random B makes every gradient non-zero from the first step
        for name, parameter in unet.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.01)
    unet.train()
    latent = check.resolution // 8
    time_dims = 6 * unet.config.addition_time_embed_dim
    pooled = unet.config.projection_class_embeddings_input_dim - time_dims
    autocast = None if check.dtype == torch.float32 else check.dtype

    def batch(seed: int, rows: int = 1) -> Batch:
        g = torch.Generator().manual_seed(seed)

        def random(*shape):
            return torch.randn(shape, generator=g).to(check.device)

        side = float(check.resolution)
        return Batch(
            latents=random(rows, 4, latent, latent),
            prompt_embeds=random(rows, 77, unet.config.cross_attention_dim),
            pooled=random(rows, pooled),
            time_ids=torch.tensor(
                [[side * 1.5, side * 1.5, side / 4, side / 4, side, side]] * rows, device=check.device
            ),
            loss_weights=(torch.rand((rows, 1, latent, latent), generator=g) * 0.5 + 0.5).to(check.device),
            is_prior=torch.zeros(rows, dtype=torch.bool, device=check.device),
        )

    steps = [[batch(seed)] for seed in range(4)]
    runner = CapturedStep(
        unet,
        DDPMScheduler.from_config(pipe.scheduler.config),
        trainable,
        config,
        autocast,
        check.device,
        capture=None if check.device.type == "cuda" else False,
    )
    report = compare_with_eager(runner, steps)
    report["note"] = (
        "random weights and random inputs; CPU dry run: no capture, fp32"
        if check.dry
        else "random weights and random inputs, full SDXL UNet at 1024 px, bf16 autocast"
    )
    (check.out / "equivalence.json").write_text(json.dumps(report, indent=2))
    check.pipe = None  # the LoRA added here must not reach later parts: they load their own pipelines
    pipe = unet = trainable = None  # noqa: F841 - free the GPU memory now
    release(check.device)
    worst = max(report["steps"], key=lambda row: row["gradient_relative"])
    return {
        "passed": report["passed"],
        "mode": report["mode"],
        "capture_seconds": report["capture_seconds"],
        "worst_loss_relative": max(row["loss_relative"] for row in report["steps"]),
        "worst_gradient_relative": worst["gradient_relative"],
        "floor_gradient_relative": max(row["gradient_relative"] for row in report["eager_vs_eager"]),
        "ms_per_step": report["ms_per_step"],
        "optimizer_ms_per_step": report["optimizer_ms_per_step"],
    }


def _load(check: Check):
    from sdxlab.models import load_pipeline

    return load_pipeline(check.model_dir, device=check.device, dtype=check.dtype)


# --- 4, 6, 8: the notebooks' own cells ----------------------------------------------------------------------------


def common_overrides(check: Check) -> dict:
    return {
        "run": check.run,
        "outputs_dir": str(check.outputs_dir),
        "model": str(check.model_dir),
        "resolution": check.resolution,
        "device": str(check.device),
    }


def part_train(check: Check) -> dict:
    import torch

    dataset = check.layout.dataset
    if not (dataset / "metadata.jsonl").exists():
        shutil.copytree(check.dataset_dir, dataset)
    overrides = {
        **common_overrides(check),
        "train_steps": 24,
        "train_checkpoint_every": 12,
        "train_lr_warmup_steps": 4,
        "train_validation_seeds": [0],
        "train_keep_checkpoints": 0,
    }
    if check.dry:
        overrides.update(train_steps=4, train_checkpoint_every=2, train_lr_warmup_steps=1, train_validation_steps=2)
    memory: dict[str, Any] = {}

    def at_start(event) -> None:  # after caching: what is left on the GPU besides the UNet
        if event.kind == "start" and check.device.type == "cuda":
            memory["allocated_after_caching_gib"] = round(torch.cuda.memory_allocated(check.device) / GIB, 2)
        if event.kind == "start":
            memory["vae_device"] = str(event.pipe.vae.device)
            memory["text_encoder_devices"] = [
                str(event.pipe.text_encoder.device),
                str(event.pipe.text_encoder_2.device),
            ]

    from sdxlab.train import loop

    original_train = loop.train

    def train_with_probe(config, callbacks=(), pipe=None):
        return original_train(config, callbacks=[*callbacks, at_start], pipe=pipe)

    sys.path.insert(0, str(BENCH))
    from bench_train import watch_step_runner

    import sdxlab.train

    sdxlab.train.train = train_with_probe  # the notebook imports train from sdxlab.train
    try:
        with watch_step_runner() as runners:
            namespace = run_notebook(check, "02_train", "sdxl", overrides)
    finally:
        sdxlab.train.train = original_train
    result = namespace["result"]
    history = result.history
    steady = [row for row in history if row["step"] > 3] or history
    seconds_per_step = (
        (steady[-1]["elapsed_s"] - steady[0]["elapsed_s"]) / max(len(steady) - 1, 1) if len(steady) > 1 else None
    )
    copy_out(check, check.layout.lora / "validation_grid.png", "validation_grid.png")
    figures = {
        "batch_size": result.batch_size,
        "steps": len(history),
        "wall_s": round(result.wall_seconds, 1),
        "training_s": round(history[-1]["elapsed_s"], 1) if history else None,
        "seconds_per_step": seconds_per_step,
        "samples_per_s": result.batch_size / seconds_per_step if seconds_per_step else None,
        "step_runner": (runners[0].mode if runners and runners[0] is not None else "eager") + " step",
        "files": {path.name: path.stat().st_size for path in (result.lora_file, result.kohya_file, result.config_file)},
        "checkpoints": [path.name for path in result.checkpoints],
        "validation_images": len(result.validation),
        "final_loss": history[-1]["loss"] if history else None,
        **memory,
    }
    config = json.loads(result.config_file.read_text())
    figures["gradient_checkpointing"] = config.get("train_gradient_checkpointing")
    if seconds_per_step and not check.dry:
        # the standard job: the sdxl profile's 500 steps with a checkpoint every 100; the overhead beyond the
        # training steps (load, caches, batch probe, capture, 2 checkpoints) is counted once, an upper bound
        standard_steps = int(load_profile_values("sdxl").get("train_steps", 500))
        overhead = result.wall_seconds - history[-1]["elapsed_s"]
        figures["standard_job_estimate_s"] = round(overhead * 2.5 + standard_steps * seconds_per_step, 0)
    check.facts["train"] = figures
    return figures


def part_sample(check: Check) -> dict:
    overrides = {
        **common_overrides(check),
        "sample_seeds": [1, 2],
        "sample_lora_scales": [0.0, 0.5, 1.0],
        "sample_show_playground": False,
    }
    profile = load_profile_values("sdxl")
    overrides["sample_prompts"] = profile["sample_prompts"][:2]
    if check.dry:
        overrides.update(sample_steps=3)
    started = time.perf_counter()
    namespace = run_notebook(check, "03_sample", "sdxl", overrides)
    samples = check.layout.samples
    for name in ("grid_prompts_seeds.png", "grid_lora_scale.png"):
        copy_out(check, samples / name, name)
    images = sorted(samples.glob("*.png"))
    count = len([path for path in images if not path.name.startswith("grid_")])
    seconds = time.perf_counter() - started
    check.sampler = namespace["sampler"]  # sampler_graphs goes on with it: one pipeline load less
    del namespace
    described = check.sampler.describe().splitlines()[0]
    return {
        "images": count,
        "seconds": round(seconds, 1),
        "sampler": described,
        "seconds_per_image_upper_bound": round(seconds / max(count, 1), 2),
    }


def part_prompt_search(check: Check) -> dict:
    overrides = {
        **common_overrides(check),
        "search_rounds": 1,
        "search_candidates_per_round": 3,
        "search_seed_count": 2,
        "search_heldout_seed_count": 2,
        "search_finalists": 2,
        "search_patience": 0,
        "search_steps": 20,
        "search_weights": {"clip_t": 1.0},
        "clip_model": "tiny",
        "search_proposers": ["vocabulary"],
        "search_bootstrap_samples": 200,
    }
    if check.dry:
        overrides.update(search_steps=2)
    namespace = run_notebook(check, "05_prompt_search", "sdxl", overrides)
    summary = namespace["summary"]
    figures = {
        "pictures_generated": namespace["evaluator"].generated,
        "candidates_csv_rows": sum(1 for _ in (check.layout.prompt_search / "candidates.csv").open()) - 1,
        "written": sorted(path.name for path in check.layout.prompt_search.iterdir() if path.is_file()),
        "note": "tiny CLIP (no network for a real one) and no likeness (dlib not carried): scores meaningless",
    }
    if isinstance(summary, dict):
        figures["best_prompts_keys"] = sorted(summary)[:12]
    del namespace
    release(check.device)
    return figures


def run_notebook(
    check: Check, stage: str, profile: str, overrides: dict[str, Any], notebooks: Path = PROJECT / "notebooks"
) -> dict[str, Any]:
    """Execute a notebook's code cells in one namespace as papermill would, without papermill or a kernel."""
    notebook = json.loads((notebooks / f"{stage}.ipynb").read_text(encoding="utf-8"))
    cells = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    first = next(index for index, cell in enumerate(cells) if "parameters" in cell["metadata"].get("tags", []))
    namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": notebook_builtins(), "display": display}
    exec(compile(source(cells[first]), f"{stage}.ipynb[parameters]", "exec"), namespace)
    declared = {name for name in namespace if not name.startswith("__") and name != "display"}
    unknown = sorted(set(overrides) - declared)
    if unknown:
        raise ValueError(f"{stage}.ipynb declares no parameter {', '.join(unknown)}")
    values = {key: value for key, value in load_profile_values(profile).items() if key in declared}
    values.update(overrides)
    namespace.update(values)
    print(f"[gpu_check] {stage}: {json.dumps({k: v for k, v in values.items()}, default=str)[:600]}", flush=True)
    for number, cell in enumerate(cells[first + 1 :], start=first + 2):
        exec(compile(source(cell), f"{stage}.ipynb cell {number}", "exec"), namespace)
    return namespace


def source(cell: dict) -> str:
    text = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith(("%", "!")))


def display(*objects, **options):
    """Stands in for IPython's display: figures are already saved by the notebooks, other objects are printed short."""
    for item in objects:
        if type(item).__name__ in ("Figure", "Image", "PngImageFile") or hasattr(item, "savefig"):
            continue
        text = item.to_string(max_rows=8) if hasattr(item, "to_string") else repr(item)
        print(text[:800])
    return None


def notebook_builtins() -> dict:
    """Builtins whose __import__ hands the notebook a stand-in `IPython.display` when IPython is not installed."""
    have_ipython = importlib.util.find_spec("IPython") is not None if "IPython" not in BLOCKED else False
    stand_in = types.ModuleType("IPython.display")
    stand_in.display = display
    stand_in.Image = lambda *args, **kwargs: None

    def notebook_import(name, globals=None, locals=None, fromlist=(), level=0):
        if not have_ipython and name in ("IPython.display", "IPython"):
            if name == "IPython.display" or "display" in (fromlist or ()):
                return stand_in
            parent = types.ModuleType("IPython")
            parent.display, parent.get_ipython = stand_in, lambda: None
            return parent
        return builtins.__import__(name, globals, locals, fromlist, level)

    return {**vars(builtins), "__import__": notebook_import}


# --- 7. the sampler's CUDA-graph replay against its eager pipeline -------------------------------------------------


def part_sampler_graphs(check: Check) -> dict:
    import numpy as np
    import torch
    from PIL import Image

    from sdxlab.sample import Sampler
    from sdxlab.sample.cuda_graphs import GraphedUNet

    sys.path.insert(0, str(BENCH))
    import bench_sample

    sampler, check.sampler = check.sampler, None
    if sampler is None:
        sampler = Sampler.from_run(check.layout, model=str(check.model_dir), device=str(check.device))
    if sampler.lora is None:  # train did not finish: a random rank-4 LoRA, as bench_sample uses
        sampler.load_lora(bench_sample.make_random_lora(sampler.pipe, check.work / "random-lora"))
    steps = 3 if check.dry else 30
    options = dict(
        negative_prompt="blurry, low quality",
        steps=steps,
        guidance=5.0,
        width=check.resolution,
        height=check.resolution,
        scheduler="euler",
        batch_size=1,
        progress=False,
        lora_scale=1.0,
    )
    on_gpu = check.device.type == "cuda"

    def timed(call):
        if on_gpu:
            torch.cuda.synchronize(check.device)
        started = time.perf_counter()
        value = call()
        if on_gpu:
            torch.cuda.synchronize(check.device)
        return value, time.perf_counter() - started

    prompt, seeds = ["a photo of {subject}"], [1]
    sampler.generate(prompt, seeds, **options)  # warm-up: fuses the LoRA
    eager, eager_s = timed(lambda: sampler.generate(prompt, seeds, **options))
    again, _ = timed(lambda: sampler.generate(prompt, seeds, **options))
    if on_gpu:
        sampler.enable_cuda_graphs()
        wrapper = sampler._graphed_unet
        how = "CUDA graphs"
    else:  # the CPU has no graphs: the wrapper's eager fallback exercises the same comparison code
        wrapper = GraphedUNet(sampler.pipe.unet)
        wrapper.install()
        how = "GraphedUNet's eager fallback (CPU: no capture)"
    _, capture_s = timed(lambda: sampler.generate(prompt, seeds, **options))  # captures the graphs
    graphed, graphed_s = timed(lambda: sampler.generate(prompt, seeds, **options))
    graphs = len(wrapper.graphs)
    if on_gpu:
        sampler.disable_cuda_graphs()
    else:
        wrapper.uninstall()
    bench_sample.stock_call(sampler, 1, steps, check.resolution)  # warm-up of the stock path (unfuses the LoRA)
    _, stock_s = timed(lambda: bench_sample.stock_call(sampler, 1, steps, check.resolution))

    a = np.asarray(eager[0].image, dtype=np.int16)
    b = np.asarray(graphed[0].image, dtype=np.int16)
    difference = np.abs(a - b)
    floor = np.abs(a - np.asarray(again[0].image, dtype=np.int16))
    side = 512 if check.resolution > 512 else check.resolution
    panel = Image.new("RGB", (side * 3, side))
    for index, picture in enumerate(
        [eager[0].image, graphed[0].image, Image.fromarray(np.clip(difference * 16, 0, 255).astype(np.uint8))]
    ):
        panel.paste(picture.resize((side, side)), (index * side, 0))
    panel.save(check.out / "sampler_graphs.png")
    mean_difference = float(difference.mean())
    passed = mean_difference <= SAMPLER_MEAN_TOLERANCE and int(difference.max()) <= SAMPLER_MAX_TOLERANCE
    sampler = eager = graphed = again = None  # noqa: F841 - free the GPU memory now
    release(check.device)
    return {
        "how": how,
        "graphs_captured": graphs,
        "steps": steps,
        "passed": bool(passed and (graphs > 0 or not on_gpu)),
        "tolerance": {"mean_abs_255": SAMPLER_MEAN_TOLERANCE, "max_abs_255": SAMPLER_MAX_TOLERANCE},
        "mean_abs_difference": round(mean_difference, 4),
        "max_abs_difference": int(difference.max()),
        "eager_vs_eager_max": int(floor.max()),
        "eager_s": round(eager_s, 3),
        "graphed_s": round(graphed_s, 3),
        "first_graphed_call_s": round(capture_s, 3),
        "stock_s": round(stock_s, 3),
        "graphed_speedup_vs_stock": round(stock_s / graphed_s, 2),
        "eager_speedup_vs_stock": round(stock_s / eager_s, 2),
        "picture": "sampler_graphs.png: eager | CUDA graphs | difference × 16",
    }


# Same picture: at most half a grey level on average and 8 levels anywhere (0-255); eager vs eager is the floor.
SAMPLER_MEAN_TOLERANCE = 0.5
SAMPLER_MAX_TOLERANCE = 8


# --- 5, 9: the benchmark scripts ------------------------------------------------------------------------------------


def part_bench_train(check: Check, budget: float) -> dict:
    recipes = "reference,sdxlab-defaults,sdxlab-batch1,sdxlab-batch1-eager,sdxlab-low-memory,sdxl-16gb,sdxl-10gb"
    arguments = ["--steps", "10", "--warmup", "3", "--recipes", recipes]
    if check.dry:
        arguments = [
            "--device",
            "cpu",
            "--steps",
            "1",
            "--warmup",
            "1",
            "--images",
            "2",
            "--recipes",
            "reference,sdxlab-batch1,sdxl-16gb",
        ]
    return run_bench(check, "bench_train.py", arguments, budget)


def part_bench_sample(check: Check, budget: float) -> dict:
    batches = ["1", "4"] if budget > 140 else ["1"]  # batch 4 costs ~70 s more on an H100
    arguments = ["--cuda-graphs", "--variants", "fused,graphs", "--repeats", "1", "--batches", *batches]
    if check.dry:
        arguments = ["--device", "cpu", "--steps", "2", "--repeats", "1", "--batches", "1"]
    return run_bench(check, "bench_sample.py", arguments, budget)


def run_bench(check: Check, script: str, arguments: list[str], budget: float) -> dict:
    command = [sys.executable, "-u", str(BENCH / script), *arguments, "--results", str(check.out / "results.jsonl")]
    print(f"[gpu_check] {' '.join(command)}", flush=True)
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(PROJECT / "lib"), os.environ.get("PYTHONPATH", "")]),
    }
    before = lines_in(check.out / "results.jsonl")
    try:
        completed = subprocess.run(
            command,
            cwd=PROJECT,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=max(budget, 1),
        )
        output, code = completed.stdout, completed.returncode
    except subprocess.TimeoutExpired as error:
        output = error.stdout.decode() if isinstance(error.stdout, bytes) else (error.stdout or "")
        print(output, flush=True)
        raise OverBudget(f"{script} ran past {budget:.0f} s") from None
    print(output, flush=True)
    if code:
        raise RuntimeError(f"{script} exited with {code}; its output is in gpu_check.log")
    records = [json.loads(line) for line in (check.out / "results.jsonl").read_text().splitlines()[before:]]
    lines = output.splitlines()
    header = next((i for i, line in enumerate(lines) if line.startswith(("recipe ", "variant "))), len(lines))
    table = lines[max(header - 1, 0) :]
    table = table[: next((i for i, line in enumerate(table) if line.startswith("Appended")), len(table))]
    return {
        "command": " ".join([script, *arguments]),
        "table": table,
        "figures": records[-1]["figures"] if records else [],
    }


def lines_in(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


# --- running the parts ---------------------------------------------------------------------------------------------

# name -> (function, budget in seconds, what it needs first)
PARTS = {
    "environment": (part_environment, 30, ()),
    "model": (part_model, 150, ("environment",)),
    "equivalence": (part_equivalence, 90, ("model",)),
    "train": (part_train, 240, ("model",)),
    "bench_train": (part_bench_train, 220, ("environment",)),
    # without a trained LoRA (train failed) these still run, on the base model, and say so
    "sample": (part_sample, 150, ("model",)),
    "sampler_graphs": (part_sampler_graphs, 120, ("model",)),
    "bench_sample": (part_bench_sample, 150, ("environment",)),
    "prompt_search": (part_prompt_search, 120, ("model",)),
}
SUMMARY_RESERVE_S = 10  # kept for writing the summary
MIN_PART_S = 15  # a part with less time than this left is skipped


def run_part(check: Check, name: str) -> None:
    import torch

    function, budget, needs = PARTS[name]
    if name != "sampler_graphs" and check.sampler is not None:
        check.sampler = None  # 03's sampler is kept for sampler_graphs only
        release(check.device)
    failed_needs = [need for need in needs if not any(p["part"] == need and p["status"] == "ok" for p in check.parts)]
    budget = min(budget, check.remaining() - SUMMARY_RESERVE_S)
    record: dict[str, Any] = {"bench": "gpu_check", "part": name, "date": now()}
    if failed_needs:
        record.update(status="skipped", reason=f"needs {', '.join(failed_needs)}")
    elif budget < MIN_PART_S:
        record.update(status="skipped", reason="out of time (the check's --budget is spent)")
    else:
        print(f"\n[gpu_check] === {name} (budget {budget:.0f} s) ===", flush=True)
        if check.device is not None and check.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(check.device)
        started = time.perf_counter()
        in_process = name not in ("bench_train", "bench_sample")
        previous = signal.signal(signal.SIGALRM, _over_budget) if in_process else None
        if in_process:
            signal.setitimer(signal.ITIMER_REAL, budget)
        try:
            figures = function(check, budget) if not in_process else function(check)
            record.update(status="ok", figures=figures)
        except OverBudget as error:
            record.update(status="over budget", error=str(error) or f"stopped after {budget:.0f} s")
        except Exception as error:
            traceback.print_exc()
            record.update(status="failed", error=f"{type(error).__name__}: {first_line(error)}")
        finally:
            if in_process:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)
        record.update(seconds=round(time.perf_counter() - started, 1), budget_s=round(budget))
        if check.device is not None and check.device.type == "cuda":
            record["peak_gib"] = round(torch.cuda.max_memory_allocated(check.device) / GIB, 2)
            record["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved(check.device) / GIB, 2)
        release(check.device)
        print(
            f"[gpu_check] {name}: {record['status']} in {record['seconds']} s"
            + (f" ({record.get('error')})" if record.get("error") else ""),
            flush=True,
        )
    check.parts.append(record)
    with open(check.out / "results.jsonl", "a", encoding="utf-8") as results:
        results.write(json.dumps(record, default=str) + "\n")


def _over_budget(signum, frame):
    raise OverBudget()


def write_summary(check: Check, started: float) -> Path:
    lines = [
        f"# GPU check, {now()}",
        "",
        f"{check.facts.get('device', '?')}; {json.dumps(check.facts.get('versions', {}))}",
        f"Total {time.monotonic() - started:.0f} s. Random weights with the exact SDXL-base-1.0 architecture: "
        "speed, memory and agreement between code paths only, never picture quality."
        + (" DRY RUN: tiny model on the CPU, figures mean nothing." if check.dry else ""),
        "",
        "| part | status | seconds | budget | peak GiB | note |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for part in check.parts:
        figures = part.get("figures") or {}
        note = part.get("error") or part.get("reason") or ""
        if part["part"] == "equivalence" and figures:
            note = (
                f"passed={figures['passed']}, {figures['mode']}; worst loss rel {figures['worst_loss_relative']:.2e}, "
                f"grad rel {figures['worst_gradient_relative']:.2e} (eager-vs-eager {figures['floor_gradient_relative']:.2e}); "
                f"ms/step eager {figures['ms_per_step']['eager']:.0f}, captured {figures['ms_per_step']['captured']:.0f}"
            )
        elif part["part"] == "train" and figures:
            rate = f"{figures['samples_per_s']:.2f}" if figures.get("samples_per_s") else "—"
            note = (
                f"batch {figures['batch_size']}, {figures['step_runner']}, {rate} samples/s, wall {figures['wall_s']} s, "
                f"standard job ≤ {figures.get('standard_job_estimate_s', '—')} s (estimate)"
            )
        elif part["part"] == "sampler_graphs" and figures:
            note = (
                f"passed={figures['passed']}; mean |Δ| {figures['mean_abs_difference']}, max {figures['max_abs_difference']}; "
                f"graphs {figures['graphed_s']} s vs stock {figures['stock_s']} s ({figures['graphed_speedup_vs_stock']}×)"
            )
        lines.append(
            f"| {part['part']} | {part['status']} | {part.get('seconds', '—')} | {part.get('budget_s', '—')} | "
            f"{part.get('peak_gib', '—')} | {note} |"
        )
    for part in check.parts:
        table = (part.get("figures") or {}).get("table")
        if table:
            lines += ["", f"## {part['part']}: `{part['figures']['command']}`", "", "```", *table, "```"]
    path = check.out / "summary.md"
    path.write_text("\n".join(lines) + "\n")
    return path


# --- helpers -----------------------------------------------------------------------------------------------------


class Tee:
    def __init__(self, stream, log):
        self.stream, self.log = stream, log

    def write(self, text):
        self.stream.write(text)
        self.log.write(text)
        return len(text)

    def flush(self):
        self.stream.flush()
        self.log.flush()

    def __getattr__(self, name):
        return getattr(self.stream, name)


BLOCKED: set[str] = set()


def hide_packages(names) -> None:
    """Make these packages look absent (import fails, find_spec returns None), as on the GPU image."""
    BLOCKED.update(names)
    for module in list(sys.modules):
        if module.split(".")[0] in BLOCKED:
            del sys.modules[module]
    for name in names:
        sys.modules[name] = None  # Python's own way to say "not importable"


def profile_train_fields(profile: str) -> dict:
    values = load_profile_values(profile)
    fields = {key.removeprefix("train_"): value for key, value in values.items() if key.startswith("train_")}
    return {
        key: value
        for key, value in fields.items()
        if key not in ("steps", "checkpoint_every", "validation_seeds", "validation_steps", "gpu_price_per_hour")
    }


def load_profile_values(profile: str) -> dict:
    from sdxlab.run import load_profile

    return load_profile(profile)


def copy_out(check: Check, source: Path, name: str, max_side: int = 2048) -> None:
    """A picture into the output folder, scaled down to keep what comes back small."""
    if not source.is_file():
        return
    from PIL import Image

    with Image.open(source) as picture:
        picture.thumbnail((max_side, max_side))
        picture.save(check.out / name, optimize=True)


def release(device) -> None:
    gc.collect()
    if device is not None and getattr(device, "type", None) == "cuda":
        import torch

        torch.cuda.empty_cache()


def device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in ("torch", "diffusers", "transformers", "peft", "accelerate", "safetensors", "bitsandbytes"):
        try:
            found[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - a missing or broken package is itself a finding
            found[name] = "missing"
    import torch

    if torch.cuda.is_available():
        found["cuda"] = str(torch.version.cuda)
    return found


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:300] if lines else "no details"


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny model on the CPU (automatic without CUDA)")
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: $OUT, else outputs/gpu-check-<time>)"
    )
    parser.add_argument(
        "--work", type=Path, default=None, help="working folder: model, run folder (default: a temporary one)"
    )
    parser.add_argument(
        "--dataset",
        type=Path,
        default=BENCH / "gpu_data" / "dataset",
        help="a captured dataset at 1024 px (bench/gpu_prepare.sh); synthetic pictures when missing",
    )
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, in this order: {', '.join(PARTS)}")
    parser.add_argument("--budget", type=float, default=550, help="seconds for the whole check (default 550)")
    parser.add_argument(
        "--show-hidden", action="store_true", help="dry run: do not hide the packages the GPU image lacks"
    )
    args = parser.parse_args(argv)
    args.parts = [part.strip() for part in args.parts.split(",") if part.strip()]
    unknown = [part for part in args.parts if part not in PARTS]
    if unknown:
        parser.error(f"unknown part(s) {unknown}; choose from {', '.join(PARTS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    import torch

    dry = args.dry_run or not torch.cuda.is_available()
    if dry and not args.show_hidden:
        hide_packages(MISSING_ON_GPU_IMAGE)
    out = args.out or (
        Path(os.environ["OUT"])
        if os.environ.get("OUT")
        else PROJECT / "outputs" / f"gpu-check-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    )
    out.mkdir(parents=True, exist_ok=True)
    work_context = (
        contextlib.nullcontext(args.work) if args.work else tempfile.TemporaryDirectory(prefix="sdxlab-gpu-check-")
    )
    with work_context as work, open(out / "gpu_check.log", "a", encoding="utf-8") as log:
        sys.stdout, sys.stderr = Tee(sys.__stdout__, log), Tee(sys.__stderr__, log)
        try:
            work = Path(work)
            check = Check(out=out, work=work, dry=dry, deadline=time.monotonic() + args.budget)
            check.dataset_dir = dataset_for(check, args.dataset)
            print(
                f"[gpu_check] {'DRY RUN (tiny model, CPU)' if dry else 'GPU run'}; output {out}; work {work}; "
                f"budget {args.budget:.0f} s; parts {', '.join(args.parts)}",
                flush=True,
            )
            for name in PARTS:
                if name in args.parts:
                    run_part(check, name)
            summary = write_summary(check, started)
            print(summary.read_text(), flush=True)
            unexpected = sorted(path.name for path in out.iterdir() if path.name not in RESULT_FILES)
            if unexpected:
                print(f"[gpu_check] note: files beyond the 8 that come back: {unexpected}", flush=True)
        finally:
            sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    failed = [part["part"] for part in check.parts if part["status"] != "ok"]
    return 1 if failed else 0


def dataset_for(check: Check, carried: Path) -> Path:
    """The carried 1024 px dataset on the GPU; synthetic pictures at the model's size otherwise (dry run)."""
    if not check.dry and (carried / "metadata.jsonl").exists():
        return carried
    sys.path.insert(0, str(BENCH))
    from bench_train import make_dataset

    resolution = 128 if check.dry else 1024
    if not check.dry:
        print(
            f"[gpu_check] note: no captured dataset in {carried} (run bench/gpu_prepare.sh): synthetic pictures",
            flush=True,
        )
    return make_dataset(check.work / f"synthetic-{resolution}", resolution, 16 if not check.dry else 4)


if __name__ == "__main__":
    sys.exit(main())
