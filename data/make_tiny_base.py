"""Pretrain the tiny offline SDXL's VAE and UNet and write lib/sdxlab/data/tiny_base.safetensors.

Run once by a maintainer (the file is committed; users never run this):

    nice -n 10 .venv/bin/python data/make_tiny_base.py            # resumes from --work if interrupted

Trains on scikit-image's bundled pictures without people and procedurally drawn scenes (sources and licences
in data/README.md; the sample subject, the astronaut, is never seen). See `sdxlab.tiny_base`. Bump
`TINY_MODEL_VERSION` in `sdxlab/models.py` when the shapes in `sdxlab.tiny_base` change.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from sdxlab import models, tiny_base
from sdxlab.train.conditioning import encode_prompts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--work", type=Path, default=Path("/tmp/sdxlab-tiny-base"), help="checkpoint folder (resumable)"
    )
    parser.add_argument("--vae-steps", type=int, default=1500)
    parser.add_argument("--unet-steps", type=int, default=4000)
    parser.add_argument("--unet-batch", type=int, default=8)
    parser.add_argument("--latents", type=int, default=1024, help="pretraining crops encoded once for the UNet")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=tiny_base.BASE_FILE)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    began = time.time()

    def report(progress: tiny_base.Progress) -> None:
        print(
            f"{progress.stage} {progress.step}/{progress.steps} loss {progress.loss:.4f} ({time.time() - began:.0f} s)",
            flush=True,
        )

    pipe = models.build_tiny_pipeline(seed=0, vae_scaling_factor=1.0)
    tiny_base.train_vae(pipe.vae, args.vae_steps, args.work, crop=48, batch=12, lr=2e-3, report=report)
    pipe.vae.requires_grad_(False)
    scaling = tiny_base.latent_scaling_factor(pipe.vae)
    pipe.vae.register_to_config(scaling_factor=scaling)
    print(f"VAE latent scaling factor {scaling:.4f}", flush=True)

    latents, names = tiny_base.latent_pool(pipe.vae, args.latents)
    captions = sorted(set(names))
    embeds, pooled = encode_prompts(
        [pipe.tokenizer, pipe.tokenizer_2],
        [pipe.text_encoder, pipe.text_encoder_2],
        [tiny_base.CAPTIONS[name] for name in captions],
    )
    caption_embeds = {name: (embeds[i], pooled[i]) for i, name in enumerate(captions)}
    tiny_base.train_unet(
        pipe.unet,
        latents,
        names,
        caption_embeds,
        dict(pipe.scheduler.config),
        args.unet_steps,
        args.work,
        batch=args.unet_batch,
        report=report,
    )
    info = {
        "vae_scaling_factor": scaling,
        "vae_steps": args.vae_steps,
        "unet_steps": args.unet_steps,
        "latents": args.latents,
        "unet_batch": args.unet_batch,
        "pictures": tiny_base.SKIMAGE_PICTURES,
        "procedural_scenes": True,
        "tiny_model_version": models.TINY_MODEL_VERSION,
    }
    tiny_base.save_base(args.output, pipe.vae, pipe.unet, info)
    print(f"wrote {args.output} ({args.output.stat().st_size / 1e6:.1f} MB) in {time.time() - began:.0f} s")


if __name__ == "__main__":
    main()
