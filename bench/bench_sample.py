"""Sampling speed: seconds per image, the stock `StableDiffusionXLPipeline` call against `sdxlab.sample.Sampler`.

Both run in the same process on the same pipeline with the same LoRA loaded (rank 4 on the UNet's attention
projections, random non-zero weights), 30 Euler steps with guidance on, at batch 1 and batch 4:

- "stock": `pipe(prompt=[...] * batch, ...)` with the LoRA loaded by `load_lora_weights` (diffusers' usual way:
  unfused, the LoRA branch runs in every layer at every step);
- "sdxlab": `Sampler.generate` with its defaults (the LoRA fused into the weights, because the scale is fixed
  for the call; one seeded generator per image);
- "sdxlab, unfused": the same with `fuse_lora=False`, to show what fusing buys;
- "sdxlab + CUDA graphs" (`--cuda-graphs`, CUDA only): the UNet forward replayed from CUDA graphs.

On a GPU the model is a randomly initialised SDXL with the exact SDXL-base-1.0 architecture at 1024×1024
(`sdxlab.sdxl.random_weights`); without one, the tiny offline model at 128×128 on the CPU. Random weights: the
seconds are real, the pictures are noise. A first call per variant and batch size is a warm-up, not timed.

    .venv/bin/python bench/bench_sample.py                     # GPU if there is one, else CPU + tiny model
    .venv/bin/python bench/bench_sample.py --cuda-graphs       # add the CUDA-graph variant (GPU only)
    .venv/bin/python bench/bench_sample.py --repeats 5 --batches 1 2 4 8

Prints a table and appends one JSON line (device, date, versions, figures) to bench/results.jsonl.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
from diffusers.utils import logging as diffusers_logging

from sdxlab.labels import is_random_weights
from sdxlab.models import TINY_RESOLUTION, choose_placement, load_pipeline
from sdxlab.sample import Sampler
from sdxlab.sample.sampler import ADAPTER_NAME

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_FILE = BENCH_DIR / "results.jsonl"
PROMPT = "a photo of sks person on the moon, cinematic light"
NEGATIVE = "blurry, low quality"
GUIDANCE = 5.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cuda or cpu")
    parser.add_argument("--model", choices=["tiny", "random-sdxl"], help="default: random-sdxl on CUDA, tiny otherwise")
    parser.add_argument("--resolution", type=int, help="default: 1024 for random-sdxl, 128 for tiny")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument(
        "--repeats", type=int, help="timed calls in a row per variant and round (default: 3 on CPU, 2 on GPU; 2 rounds)"
    )
    parser.add_argument("--cuda-graphs", action="store_true", help="also time the CUDA-graph UNet (CUDA only)")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's own choice)")
    parser.add_argument(
        "--variants",
        type=lambda text: [v.strip() for v in text.split(",") if v.strip()],
        default=None,
        help="besides stock, only these: fused, unfused, graphs (comma-separated; default: all)",
    )
    parser.add_argument("--results", type=Path, default=RESULTS_FILE)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    diffusers_logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)
    placement = choose_placement(args.device)
    on_gpu = placement.device.type == "cuda"
    model = args.model or ("random-sdxl" if on_gpu else "tiny")
    resolution = args.resolution or (TINY_RESOLUTION if is_random_weights(model) else 1024)
    repeats = args.repeats or (2 if on_gpu else 3)
    print(
        f"Device: {device_name(placement.device)}; model: {model} (random weights) at {resolution}×{resolution}, "
        f"{args.steps} Euler steps, guidance {GUIDANCE}, LoRA rank 4 loaded; 2 rounds of {repeats} timed calls per row."
    )

    pipe = build_pipeline(model, placement)
    sampler = Sampler(pipe, model=model)
    with tempfile.TemporaryDirectory(prefix="sdxlab-bench-lora-") as folder:
        sampler.load_lora(make_random_lora(pipe, Path(folder)))
    figures = []
    for batch in args.batches:
        calls = {"stock StableDiffusionXLPipeline (LoRA loaded, unfused)": (None, False)}
        calls.update(
            {
                label: (fuse, graphs)
                for label, fuse, graphs in variants(args.cuda_graphs and on_gpu)
                if not args.variants or variant_id(fuse, graphs) in args.variants
            }
        )
        seconds = measure_interleaved(sampler, calls, batch, args.steps, resolution, repeats, on_gpu)
        stock = seconds[next(iter(calls))]
        figures += [row(label, batch, value, stock) for label, value in seconds.items()]
    print_table(figures)

    record = {
        "bench": "sample",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": device_name(placement.device),
        "versions": versions(),
        "model": model,
        "weights": "random (speed only; pictures are meaningless)",
        "resolution": resolution,
        "dtype": str(pipe.unet.dtype).removeprefix("torch."),
        "steps": args.steps,
        "guidance": GUIDANCE,
        "scheduler": "euler",
        "lora": "rank 4 on UNet attention (to_q, to_k, to_v, to_out.0)",
        "repeats": repeats,
        "figures": figures,
    }
    if hasattr(os, "getloadavg"):
        record["load_average_1min"] = round(os.getloadavg()[0], 2)
    with open(args.results, "a", encoding="utf-8") as results:
        results.write(json.dumps(record) + "\n")
    print(f"Appended to {args.results}.")
    return 0


def variant_id(fuse: bool, graphs: bool) -> str:
    return "graphs" if graphs else ("fused" if fuse else "unfused")


def variants(with_cuda_graphs: bool) -> list[tuple[str, bool, bool]]:
    found = [("sdxlab Sampler (LoRA fused)", True, False), ("sdxlab Sampler, LoRA unfused", False, False)]
    if with_cuda_graphs:
        found.append(("sdxlab Sampler + CUDA graphs (LoRA fused)", True, True))
    return found


def build_pipeline(model: str, placement):
    if model == "random-sdxl":
        from sdxlab.sdxl.random_weights import build_random_sdxl

        return build_random_sdxl(placement.device, placement.dtype)
    return load_pipeline("tiny", device=placement.device, dtype=placement.dtype)


def make_random_lora(pipe, folder: Path) -> Path:
    """A rank-4 LoRA on the pipeline's UNet attention with random non-zero weights, exported as the trainer does."""
    from peft import LoraConfig, get_peft_model_state_dict

    from sdxlab.train.export import export_lora

    config = LoraConfig(
        r=4, lora_alpha=4, init_lora_weights="gaussian", target_modules=["to_q", "to_k", "to_v", "to_out.0"]
    )
    pipe.unet.add_adapter(config, adapter_name="bench")
    generator = torch.Generator().manual_seed(0)
    for name, parameter in pipe.unet.named_parameters():
        if "lora_B" in name:
            parameter.data = (torch.randn(parameter.shape, generator=generator) * 0.01).to(parameter)
    state = get_peft_model_state_dict(pipe.unet, adapter_name="bench")
    pipe.unet.delete_adapters("bench")
    return export_lora(folder, "bench", state, unet_lora_config=config, unet_config=pipe.unet.config).diffusers


def stock_call(sampler: Sampler, batch: int, steps: int, resolution: int) -> None:
    """diffusers' usual way: LoRA loaded and active at scale 1, one pipeline call for the whole batch."""
    pipe = sampler.pipe
    sampler._unfuse()  # the stock path never fuses
    pipe.enable_lora()
    pipe.set_adapters([ADAPTER_NAME], adapter_weights=[1.0])
    sampler._use_scheduler("euler")
    generators = [torch.Generator("cpu").manual_seed(seed) for seed in range(batch)]
    pipe(
        prompt=[PROMPT] * batch,
        negative_prompt=[NEGATIVE] * batch,
        num_inference_steps=steps,
        guidance_scale=GUIDANCE,
        width=resolution,
        height=resolution,
        generator=generators,
    )


def sampler_call(sampler: Sampler, batch: int, steps: int, resolution: int) -> None:
    sampler.generate(
        [PROMPT],
        list(range(batch)),
        negative_prompt=NEGATIVE,
        steps=steps,
        guidance=GUIDANCE,
        width=resolution,
        height=resolution,
        lora_scale=1.0,
        scheduler="euler",
        batch_size=batch,
        progress=False,
    )


def measure_interleaved(
    sampler: Sampler, calls: dict, batch: int, steps: int, resolution: int, repeats: int, on_gpu: bool, rounds: int = 2
) -> dict[str, float]:
    """Median seconds per image of each variant, measured in `rounds` rounds that visit every variant in turn.

    `calls` maps a label to (fuse_lora, cuda_graphs); fuse_lora None means the stock pipeline call. In each
    round a variant gets one untimed warm-up call (it re-fuses the LoRA the stock call unfused, and captures
    CUDA graphs once), then `repeats` timed calls in a row; taking turns spreads a busy spell over all variants.
    """
    timings: dict[str, list[float]] = {label: [] for label in calls}
    failed: dict[str, str] = {}
    for _ in range(rounds):
        for label, (fuse, graphs) in calls.items():
            if label in failed:
                continue
            try:  # one failing variant must not lose the others' figures
                for repeat in range(repeats + 1):
                    if on_gpu:
                        torch.cuda.synchronize()
                    started = time.perf_counter()
                    run_variant(sampler, fuse, graphs, batch, steps, resolution)
                    if on_gpu:
                        torch.cuda.synchronize()
                    if repeat:
                        timings[label].append((time.perf_counter() - started) / batch)
            except Exception as error:
                traceback.print_exc()
                failed[label] = (
                    f"failed: {type(error).__name__}: {str(error).splitlines()[0][:160] if str(error) else ''}"
                )
                sampler.disable_cuda_graphs()
    return {
        label: (failed[label] if label in failed else statistics.median(values)) for label, values in timings.items()
    }


def run_variant(sampler: Sampler, fuse: bool | None, graphs: bool, batch: int, steps: int, resolution: int) -> None:
    if fuse is None:
        sampler.disable_cuda_graphs(forget=False)
        stock_call(sampler, batch, steps, resolution)
        return
    sampler.fuse_lora = fuse
    if graphs:
        sampler.enable_cuda_graphs()  # graphs are kept per shape: captured in the warm-up call, replayed after
    else:
        sampler.disable_cuda_graphs(forget=False)
    sampler_call(sampler, batch, steps, resolution)


def row(label: str, batch: int, seconds: float | str, stock: float | str) -> dict:
    """A table row; `seconds` is the error text when the variant failed."""
    if isinstance(seconds, str):
        return {
            "variant": label,
            "batch_size": batch,
            "seconds_per_image": None,
            "speedup_vs_stock": None,
            "note": seconds,
        }
    return {
        "variant": label,
        "batch_size": batch,
        "seconds_per_image": round(seconds, 4),
        "speedup_vs_stock": round(stock / seconds, 2) if not isinstance(stock, str) else None,
    }


def print_table(figures: list[dict]) -> None:
    print(f"\n{'variant':58} {'batch':>5} {'s/image':>9} {'× stock':>8}")
    for figure in figures:
        seconds, ratio = figure["seconds_per_image"], figure["speedup_vs_stock"]
        print(
            f"{figure['variant']:58} {figure['batch_size']:>5} {'—' if seconds is None else f'{seconds:.3f}':>9} "
            f"{'—' if ratio is None else f'{ratio:.2f}':>8} {figure.get('note', '')}".rstrip()
        )


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def versions() -> dict[str, str]:
    import diffusers
    import peft
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
    }


if __name__ == "__main__":
    sys.exit(main())
