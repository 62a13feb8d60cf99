"""Training speed and memory: the common DreamBooth-LoRA example loop against `sdxlab.train`, in one run.

(a) "reference": a training loop written here that mirrors diffusers' `train_dreambooth_lora_sdxl.py` example
    at its defaults: batch 1, LoRA rank 4 on the attention projections, bf16 UNet with float32 LoRA weights,
    and every step the fp32 VAE encodes the image and both text encoders encode the caption.
(b) `sdxlab.train` with its defaults (train_batch_size="auto"), at batch 1 and rank 4 (the reference's
    work per sample) with the captured step (train_cuda_graph="auto", its CUDA default) and with the eager
    step, and with a memory-saving setting (batch 1, gradient checkpointing);
(c) the memory profiles env/profiles/sdxl-16gb.yaml and sdxl-10gb.yaml (their training lines), each under a cap
    on what PyTorch may allocate (16 / 10 GiB), so they meet the limits of a card of that size.

On a GPU the model is a randomly initialised SDXL with the exact SDXL-base-1.0 architecture at 1024×1024
(`sdxlab.sdxl.random_weights`); without one, the tiny offline model at 128×128 on the CPU. Random weights: the
samples/s and memory are real, the losses and pictures mean nothing.

samples/s is the steady state: the timed steps after the warm-up steps (for sdxlab, timed from the trainer's
step events). "peak" is the most GPU memory PyTorch allocated during the recipe's whole run (model, caches,
training, export), "reserved" the most its caching allocator held (what a card must have); "wall" is that
whole run. The note says which step ran ("captured step", "eager step", or why a capture fell back). sdxlab runs without validation images (they do not change the
training speed) and with one checkpoint, at the end.

    .venv/bin/python bench/bench_train.py                          # GPU if there is one, else CPU + tiny model
    .venv/bin/python bench/bench_train.py --steps 40 --warmup 5    # longer, steadier figures
    .venv/bin/python bench/bench_train.py --recipes reference       # only the baseline

Prints a table and appends one JSON line (device, date, versions, figures) to bench/results.jsonl.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.utils import logging as diffusers_logging
from PIL import Image, ImageDraw

from sdxlab.files import write_image, write_jsonl
from sdxlab.labels import is_random_weights
from sdxlab.models import TINY_RESOLUTION, choose_placement, load_pipeline

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_FILE = BENCH_DIR / "results.jsonl"
CAPTION = "a photo of sks person"
GIB = 1024**3

# sdxlab settings measured besides the reference: recipe id -> (table label, TrainConfig overrides).
SDXLAB_SETTINGS = {
    # TrainConfig's defaults are the demo's (rank 4); the sdxl profile's rank 16 is what was measured here
    "sdxlab-defaults": ("sdxlab defaults (batch auto)", {"lora_rank": 16}),
    "sdxlab-batch1": ("sdxlab batch 1, rank 4", {"batch_size": 1, "lora_rank": 4}),
    "sdxlab-batch1-eager": (
        "sdxlab batch 1, rank 4, eager step",
        {"batch_size": 1, "lora_rank": 4, "cuda_graph": False},
    ),
    "sdxlab-low-memory": (
        "sdxlab low memory (batch 1, checkpointing)",
        {"batch_size": 1, "lora_rank": 4, "gradient_checkpointing": True},
    ),
}
# The memory profiles (env/profiles/<name>.yaml, training lines only), each run under a cap on what PyTorch may
# allocate (torch.cuda.set_per_process_memory_fraction), so "auto" choices and out-of-memory errors happen as on
# a card of that size: recipe id -> (table label, profile, cap in GiB).
PROFILE_SETTINGS = {
    "sdxl-16gb": ("profile sdxl-16gb (capped at 16 GiB)", "sdxl-16gb", 16.0),
    "sdxl-10gb": ("profile sdxl-10gb (capped at 10 GiB)", "sdxl-10gb", 10.0),
}
# profile lines the benchmark sets itself (length, checkpoints, pictures) or that do not change the speed
NOT_FROM_PROFILE = {
    "steps",
    "checkpoint_every",
    "keep_checkpoints",
    "lr_warmup_steps",
    "validation_seeds",
    "validation_steps",
    "validation_prompts",
    "validation_guidance",
    "gpu_price_per_hour",
    "resume",
}


@dataclass
class Figures:
    """One row of the table."""

    recipe: str
    batch_size: int | None = None
    samples_per_second: float | None = None
    seconds_per_step: float | None = None
    peak_memory_gib: float | None = None
    peak_reserved_gib: float | None = None  # what the caching allocator held: the card must have this much
    wall_seconds: float | None = None
    note: str = ""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    diffusers_logging.set_verbosity_error()  # keep the table readable
    placement = choose_placement(args.device)
    model = args.model or ("random-sdxl" if placement.device.type == "cuda" else "tiny")
    resolution = args.resolution or (TINY_RESOLUTION if is_random_weights(model) else 1024)
    print(
        f"Device: {device_name(placement.device)}; model: {model} at {resolution}×{resolution}, "
        f"{placement.dtype}; {args.warmup} warm-up + {args.steps} timed steps.",
        flush=True,
    )

    rows = []
    with tempfile.TemporaryDirectory(prefix="sdxlab-bench-train-") as workdir:
        dataset_dir = make_dataset(Path(workdir) / "dataset", resolution, args.images)
        for recipe in args.recipes:
            print(f"… {recipe}", flush=True)
            try:
                if recipe == "reference":
                    rows.append(reference_recipe(model, dataset_dir, placement, resolution, args))
                elif recipe in PROFILE_SETTINGS:
                    label, profile, cap = PROFILE_SETTINGS[recipe]
                    with memory_cap(placement.device, cap):
                        rows.append(
                            sdxlab_recipe(
                                recipe,
                                label,
                                profile_overrides(profile),
                                model,
                                dataset_dir,
                                Path(workdir),
                                placement,
                                resolution,
                                args,
                            )
                        )
                else:
                    label, overrides = SDXLAB_SETTINGS[recipe]
                    rows.append(
                        sdxlab_recipe(
                            recipe, label, overrides, model, dataset_dir, Path(workdir), placement, resolution, args
                        )
                    )
            except Exception as error:  # one failing recipe must not lose the others' figures
                traceback.print_exc()
                rows.append(Figures(recipe, note=f"failed: {type(error).__name__}: {str(error).splitlines()[0][:160]}"))
            release_memory(placement.device)

    print_table(rows, placement.device, model, resolution)
    record = {
        "bench": "train",
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "device": device_name(placement.device),
        "versions": versions(),
        "model": model,
        "weights": "random (speed and memory only; losses and pictures are meaningless)",
        "resolution": resolution,
        "dtype": str(placement.dtype).removeprefix("torch."),
        "steps": args.steps,
        "warmup": args.warmup,
        "figures": [asdict(row) for row in rows],
    }
    if placement.device.type == "cpu":  # CPU figures swing with whatever else the machine is doing
        record["load_average_1min"] = round(os.getloadavg()[0], 2)
    with open(args.results, "a", encoding="utf-8") as results:
        results.write(json.dumps(record) + "\n")
    print(f"Appended to {args.results}.")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="cuda, cpu, or auto (default)")
    parser.add_argument(
        "--model", default=None, help="random-sdxl (default on a GPU), tiny (default on the CPU), or a model folder"
    )
    parser.add_argument("--resolution", type=int, default=None, help="default 1024 for SDXL, 128 for tiny")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 20 on a GPU, 10 on the CPU)")
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed steps first, at least 1 (default 5 on a GPU, 2 on the CPU)"
    )
    parser.add_argument("--images", type=int, default=8, help="synthetic training images")
    parser.add_argument("--rank", type=int, default=4, help="the reference recipe's LoRA rank (the example's default)")
    parser.add_argument(
        "--recipes",
        default=",".join(["reference", *SDXLAB_SETTINGS, *PROFILE_SETTINGS]),
        help="comma-separated: reference and/or " + ", ".join([*SDXLAB_SETTINGS, *PROFILE_SETTINGS]),
    )
    parser.add_argument("--results", type=Path, default=RESULTS_FILE, help="JSON-lines file to append to")
    args = parser.parse_args(argv)
    on_gpu = choose_placement(args.device).device.type == "cuda"
    args.steps = args.steps or (20 if on_gpu else 10)
    args.warmup = max(1, args.warmup if args.warmup is not None else (5 if on_gpu else 2))
    args.recipes = [recipe.strip() for recipe in args.recipes.split(",") if recipe.strip()]
    known = ["reference", *SDXLAB_SETTINGS, *PROFILE_SETTINGS]
    unknown = [recipe for recipe in args.recipes if recipe not in known]
    if unknown:
        parser.error(f"unknown recipe(s) {unknown}; choose from {', '.join(known)}")
    return args


# --- inputs ------------------------------------------------------------------------------------------------


def fresh_pipeline(model: str, placement):
    """A new pipeline for one recipe run (each run adds its own adapters, so none is reused)."""
    if model == "random-sdxl":
        from sdxlab.sdxl.random_weights import build_random_sdxl

        return build_random_sdxl(placement.device, placement.dtype)  # built on the GPU: seconds, no 7 GB download
    return load_pipeline(model, device=placement.device, dtype=placement.dtype)


def make_dataset(dataset_dir: Path, resolution: int, count: int) -> Path:
    """A capture-stage dataset folder (docs/ARCHITECTURE.md) of smooth random pictures with face masks."""
    generator = np.random.default_rng(0)
    rows = []
    source_size = resolution * 3 // 2  # as if cropped from a larger photo: truthful micro-conditioning
    for number in range(1, count + 1):
        coarse = generator.uniform(0, 255, size=(8, 8, 3)).astype(np.uint8)
        image = Image.fromarray(coarse).resize((resolution, resolution), Image.BICUBIC)
        mask = Image.new("L", (resolution, resolution), 76)  # background weight 0.3
        ImageDraw.Draw(mask).ellipse(
            [resolution // 4, resolution // 5, resolution * 3 // 4, resolution * 4 // 5], fill=255
        )
        write_image(dataset_dir / f"images/{number:04d}.png", image)
        write_image(dataset_dir / f"masks/{number:04d}.png", mask)
        offset = resolution // 4
        rows.append(
            {
                "file_name": f"images/{number:04d}.png",
                "text": CAPTION,
                "mask_file": f"masks/{number:04d}.png",
                "source": f"synthetic/{number:04d}.png",
                "face_box": [resolution // 4, resolution // 5, resolution * 3 // 4, resolution * 4 // 5],
                "crop_box": [offset, offset, offset + resolution, offset + resolution],
                "original_size": [source_size, source_size],
                "upscaled": False,
            }
        )
    write_jsonl(dataset_dir / "metadata.jsonl", rows)
    return dataset_dir


# --- (a) the reference recipe ------------------------------------------------------------------------------


def reference_recipe(model: str, dataset_dir: Path, placement, resolution: int, args) -> Figures:
    """diffusers' DreamBooth-LoRA-SDXL example loop at its defaults, step for step (see the module docstring)."""
    from diffusers import DDPMScheduler
    from peft import LoraConfig

    device, weight_dtype = placement.device, placement.dtype
    reset_peak_memory(device)
    started = time.perf_counter()
    pipe = fresh_pipeline(model, placement)
    unet, vae = pipe.unet, pipe.vae
    text_encoders, tokenizers = [pipe.text_encoder, pipe.text_encoder_2], [pipe.tokenizer, pipe.tokenizer_2]
    for component in (unet, vae, *text_encoders):
        component.requires_grad_(False)
    vae.to(dtype=torch.float32)  # the example keeps SDXL's VAE in fp32 (it overflows in half precision)
    unet.add_adapter(
        LoraConfig(
            r=args.rank,
            lora_alpha=args.rank,
            init_lora_weights="gaussian",
            target_modules=["to_k", "to_q", "to_v", "to_out.0"],
        )
    )
    parameters = [parameter for parameter in unet.parameters() if parameter.requires_grad]
    for parameter in parameters:  # the example's cast_training_params: trainable weights in fp32
        parameter.data = parameter.data.float()
    optimizer = torch.optim.AdamW(parameters, lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-4, eps=1e-8)
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    examples = read_examples(dataset_dir)
    unet.train()
    autocast = torch.autocast(device.type, dtype=weight_dtype, enabled=weight_dtype != torch.float32)

    def training_step(index: int) -> float:
        pixels, time_ids = examples[index % len(examples)]
        pixel_values = pixels[None].to(device, torch.float32)
        latents = vae.encode(pixel_values).latent_dist.sample() * vae.config.scaling_factor
        latents = latents.to(weight_dtype)
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (1,), device=device).long()
        noisy = noise_scheduler.add_noise(latents, noise, timesteps)
        prompt_embeds, pooled = encode_caption(text_encoders, tokenizers, CAPTION, device)
        add_time_ids = torch.tensor([time_ids], device=device, dtype=weight_dtype)
        with autocast:
            prediction = unet(
                noisy, timesteps, prompt_embeds, added_cond_kwargs={"time_ids": add_time_ids, "text_embeds": pooled}
            ).sample
        loss = F.mse_loss(prediction.float(), noise.float(), reduction="mean")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        optimizer.zero_grad()
        return loss.item()

    for index in range(args.warmup):
        training_step(index)
    synchronize(device)
    timed_start = time.perf_counter()
    for index in range(args.warmup, args.warmup + args.steps):
        training_step(index)
    synchronize(device)
    timed = time.perf_counter() - timed_start
    figures = Figures(
        "reference (diffusers example loop)",
        batch_size=1,
        samples_per_second=args.steps / timed,
        seconds_per_step=timed / args.steps,
        peak_memory_gib=peak_memory(device),
        peak_reserved_gib=peak_reserved(device),
        wall_seconds=time.perf_counter() - started,
    )
    return figures


def read_examples(dataset_dir: Path) -> list[tuple[torch.Tensor, list[int]]]:
    """(pixels in [-1, 1], the six SDXL time ids) per image, as the example's data loader yields them."""
    examples = []
    for line in (dataset_dir / "metadata.jsonl").read_text().splitlines():
        row = json.loads(line)
        with Image.open(dataset_dir / row["file_name"]) as image:
            array = np.asarray(image.convert("RGB"), dtype=np.float32)
        pixels = torch.from_numpy(array).permute(2, 0, 1) / 127.5 - 1.0
        left, top = row["crop_box"][:2]
        height, width = row["original_size"]
        examples.append((pixels, [height, width, top, left, pixels.shape[1], pixels.shape[2]]))
    return examples


def encode_caption(text_encoders, tokenizers, caption: str, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The example's encode_prompt: penultimate hidden states of both encoders, pooled output of the second."""
    hidden_states, pooled = [], None
    for tokenizer, text_encoder in zip(tokenizers, text_encoders, strict=True):
        ids = tokenizer(
            caption, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids.to(device)
        output = text_encoder(ids, output_hidden_states=True)
        pooled = output[0]
        hidden_states.append(output.hidden_states[-2])
    return torch.cat(hidden_states, dim=-1), pooled


# --- (b) sdxlab.train --------------------------------------------------------------------------------------


def sdxlab_recipe(
    recipe: str,
    label: str,
    overrides: dict,
    model: str,
    dataset_dir: Path,
    workdir: Path,
    placement,
    resolution: int,
    args,
) -> Figures:
    """One run of `sdxlab.train.train`, timed from its step events: the steps after the warm-up ones."""
    from sdxlab.train import TrainConfig, train

    step_times: list[float] = []

    def on_event(event) -> None:
        if event.kind == "step":  # emitted after the step's loss was read back, so the GPU has finished it
            step_times.append(time.perf_counter())

    reset_peak_memory(placement.device)
    started = time.perf_counter()
    pipe = fresh_pipeline(model, placement)
    steps = args.warmup + args.steps
    config = TrainConfig(
        dataset_dir=dataset_dir,
        output_dir=workdir / recipe,
        model=model,
        resolution=resolution,
        device=str(placement.device),
        steps=steps,
        checkpoint_every=steps,
        lr_warmup_steps=0,
        validation_prompts=[],
        progress=False,
        lora_name="bench",
        **overrides,
    )
    with watch_step_runner() as runners:
        result = train(config, callbacks=[on_event], pipe=pipe)
    step_note = f"{runners[0].mode} step" if runners and runners[0] is not None else "eager step"
    synchronize(placement.device)
    timed = step_times[-1] - step_times[args.warmup - 1]
    samples_per_step = result.batch_size * config.gradient_accumulation
    return Figures(
        label,
        batch_size=samples_per_step,
        samples_per_second=args.steps * samples_per_step / timed,
        seconds_per_step=timed / args.steps,
        peak_memory_gib=peak_memory(placement.device),
        peak_reserved_gib=peak_reserved(placement.device),
        wall_seconds=time.perf_counter() - started,
        note=step_note,
    )


def profile_overrides(profile: str) -> dict:
    """The TrainConfig fields a profile sets (its train_* lines, inherited ones included), minus NOT_FROM_PROFILE."""
    from sdxlab.run import load_profile

    values = load_profile(profile)
    fields = {key.removeprefix("train_"): value for key, value in values.items() if key.startswith("train_")}
    return {key: value for key, value in fields.items() if key not in NOT_FROM_PROFILE}


@contextlib.contextmanager
def watch_step_runner():
    """The step runners the trainer chooses inside the block (None: its eager step), to say which one was timed."""
    from sdxlab.train import loop

    chosen, original = [], loop.choose_step_runner

    def spy(*args, **kwargs):
        chosen.append(original(*args, **kwargs))
        return chosen[-1]

    loop.choose_step_runner = spy
    try:
        yield chosen
    finally:
        loop.choose_step_runner = original


@contextlib.contextmanager
def memory_cap(device: torch.device, gib: float):
    """Let PyTorch allocate at most `gib` on this GPU while the block runs (as on a card of that size)."""
    if device.type != "cuda":
        yield
        return
    total = torch.cuda.get_device_properties(device).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, gib * GIB / total), device)
    try:
        yield
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)


# --- measuring and reporting -------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / GIB if device.type == "cuda" else None


def peak_reserved(device: torch.device) -> float | None:
    return torch.cuda.max_memory_reserved(device) / GIB if device.type == "cuda" else None


def release_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def versions() -> dict[str, str]:
    import diffusers
    import peft
    import transformers

    found = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
    }
    if torch.cuda.is_available():
        found["cuda"] = str(torch.version.cuda)
    return found


def print_table(rows: list[Figures], device: torch.device, model: str, resolution: int) -> None:
    reference = next((row for row in rows if row.recipe.startswith("reference") and row.samples_per_second), None)

    def number(value: float | None, digits: int = 2) -> str:
        return "—" if value is None else f"{value:.{digits}f}"

    print(
        f"\nTraining, {device_name(device)}, {model} at {resolution}×{resolution} (random weights: speed and memory only)"
    )
    header = ["recipe", "batch", "samples/s", "× reference", "s/step", "peak GiB", "reserved GiB", "wall s", "note"]
    lines = [header]
    for row in rows:
        ratio = row.samples_per_second / reference.samples_per_second if reference and row.samples_per_second else None
        lines.append(
            [
                row.recipe,
                "—" if row.batch_size is None else str(row.batch_size),
                number(row.samples_per_second),
                number(ratio, 1),
                number(row.seconds_per_step, 3),
                number(row.peak_memory_gib, 1),
                number(row.peak_reserved_gib, 1),
                number(row.wall_seconds, 0),
                row.note,
            ]
        )
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    for index, line in enumerate(lines):
        print(" | ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
        if index == 0:
            print("-+-".join("-" * width for width in widths))


if __name__ == "__main__":
    sys.exit(main())
