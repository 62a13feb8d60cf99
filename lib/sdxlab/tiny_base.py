"""Pretraining the tiny offline SDXL's base weights, so the demo's pictures are pictures and a LoRA can learn a face.

The tiny model keeps SDXL's structure and classes (`AutoencoderKL`, `UNet2DConditionModel` with `text_time`
conditioning and both CLIP encoders' hidden states concatenated, the real CLIP tokenizer); this module trains
two of its parts once, on openly licensed pictures that ship with scikit-image (none shows a person; see
`data/README.md` for every source and licence) plus procedurally drawn scenes:

- the VAE as an autoencoder (L1 + MSE reconstruction, a tiny KL term), 4x downsampling to 4 channels (SDXL:
  8x): with the demo's face-and-hair crops, dlib still finds the face in 12 of the 16 sample crops after the
  round trip (1 of 16 with head-and-shoulders crops, where the face is 45 px);
- the UNet as a denoiser of those pictures' 32x32 latents (v-prediction on SDXL's noise schedule, min-SNR 5),
  conditioned on short captions through the two (random, frozen) text encoders. Velocity rather than SDXL's
  epsilon target: at high noise a small, briefly trained UNet's noise errors are multiplied ~15-fold in the
  picture it implies, and the epsilon version drew only texture where the velocity one draws a head.

`data/make_tiny_base.py` runs it and writes ONE safetensors file, `lib/sdxlab/data/tiny_base.safetensors`,
that `sdxlab.models.tiny_sdxl` loads. The text encoders stay random: only the VAE and UNet are stored.
Training checkpoints to a folder so an interrupted run resumes.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sdxlab import files
from sdxlab.train.step import min_snr_weights

BASE_FILE = Path(__file__).with_name("data") / "tiny_base.safetensors"

# The shapes of the pretrained parts (sdxlab.models.build_tiny_pipeline builds them; changing one needs a new
# BASE_FILE and a bumped TINY_MODEL_VERSION).
LATENT_CHANNELS = 4  # SDXL's
VAE_BLOCKS = (32, 64, 64)  # three levels: 128 px pictures become 32x32x4 latents, sharp enough for dlib to find a face
UNET_SHAPE = dict(
    block_out_channels=(32, 64, 128),
    layers_per_block=1,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),  # attention at 16x16 and 8x8
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=(2, 4, 8),
    transformer_layers_per_block=(1, 1, 1),
    norm_num_groups=16,
)

# scikit-image's bundled pictures used for pretraining (none shows a person: the astronaut, the sample
# subject, and the cameraman are left out). Licences from each function's docstring; see data/README.md.
SKIMAGE_PICTURES = {
    "coffee": "CC0 (Rachel Michetti)",
    "chelsea": "CC0 (Stefan van der Walt)",
    "rocket": "public domain (SpaceX)",
    "hubble_deep_field": "public domain (NASA)",
    "brick": "CC0 (CC0Textures)",
    "grass": "CC0 (CC0Textures)",
    "gravel": "CC0 (CC0Textures)",
    "retina": "CC0 (Häggström, Mikael)",
    "immunohistochemistry": "no known copyright restrictions",
    "coins": "no known copyright restrictions",
    "clock": "public domain (Stefan van der Walt)",
    "horse": "CC0 (Andreas Preuss)",
    "cell": "CC0",
}

CAPTIONS = {
    "coffee": "a photo of a cup of coffee",
    "chelsea": "a photo of a cat",
    "rocket": "a photo of a rocket launch",
    "hubble_deep_field": "a photo of galaxies in the night sky",
    "brick": "a photo of a brick wall",
    "grass": "a photo of grass",
    "gravel": "a photo of gravel",
    "retina": "a photo of a retina",
    "immunohistochemistry": "a microscope photo of tissue",
    "coins": "a photo of old coins",
    "clock": "a photo of a wall clock",
    "horse": "a silhouette of a horse",
    "cell": "a microscope photo of a cell",
    "scene": "a drawing of shapes",
}


def pretraining_pictures() -> dict[str, np.ndarray]:
    """The bundled scikit-image pictures as float32 RGB arrays in [0, 1] (grayscale ones repeated to RGB)."""
    import skimage.data

    pictures = {}
    for name in SKIMAGE_PICTURES:
        array = np.asarray(getattr(skimage.data, name)(), dtype=np.float32)
        if array.max() > 1.5:
            array = array / 255.0
        if array.ndim == 2:
            array = np.repeat(array[..., None], 3, axis=2)
        pictures[name] = np.ascontiguousarray(array[..., :3])
    return pictures


def procedural_scene(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random drawn scene: a colour gradient with filled ellipses and rectangles, lightly blurred, in [0, 1]."""
    from PIL import Image, ImageDraw, ImageFilter

    top, bottom = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
    ramp = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
    background = (top * (1 - ramp) + bottom * ramp) * np.ones((size, size, 3), np.float32)
    image = Image.fromarray((background * 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(2, 9)):
        x0, y0 = rng.uniform(-0.2, 1.0, 2) * size
        w, h = rng.uniform(0.05, 0.6, 2) * size
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x0 + w, y0 + h], fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 1.5))))
    return np.asarray(image, dtype=np.float32) / 255.0


class CropSampler:
    """Random square crops of the pretraining pictures at random zoom, mirrored at random, as (B, 3, S, S) in [-1, 1]."""

    def __init__(self, size: int, seed: int = 0, scene_fraction: float = 0.2):
        self.size = size
        self.rng = np.random.default_rng(seed)
        self.pictures = pretraining_pictures()
        self.names = list(self.pictures)
        self.scene_fraction = scene_fraction

    def one(self) -> tuple[np.ndarray, str]:
        from PIL import Image

        if self.rng.random() < self.scene_fraction:
            return procedural_scene(self.rng, self.size), "scene"
        name = self.names[self.rng.integers(len(self.names))]
        picture = self.pictures[name]
        height, width = picture.shape[:2]
        side = int(self.rng.uniform(0.25, 1.0) * min(height, width))
        side = max(side, self.size)
        top, left = self.rng.integers(0, height - side + 1), self.rng.integers(0, width - side + 1)
        crop = Image.fromarray((picture[top : top + side, left : left + side] * 255).astype(np.uint8))
        crop = np.asarray(crop.resize((self.size, self.size), Image.BICUBIC), dtype=np.float32) / 255.0
        if self.rng.random() < 0.5:
            crop = crop[:, ::-1]
        return crop, name

    def batch(self, count: int) -> tuple[torch.Tensor, list[str]]:
        crops, names = zip(*(self.one() for _ in range(count)), strict=True)
        pixels = torch.from_numpy(np.stack([np.ascontiguousarray(c) for c in crops])).permute(0, 3, 1, 2)
        return pixels * 2 - 1, list(names)


@dataclass
class Progress:
    """Where a pretraining stage stands, for printing."""

    stage: str
    step: int
    steps: int
    loss: float
    seconds: float


def _optimizer_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()


def _checkpoint(folder: Path, name: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None:
    target = folder / f"{name}.pt"
    with files.atomic_path(target) as temporary:
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step}, temporary)


def _resume(folder: Path, name: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    target = folder / f"{name}.pt"
    if not target.exists():
        return 0
    state = torch.load(target, weights_only=True)  # our own checkpoint; tensors and plain types only
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return int(state["step"])


def train_vae(
    vae,
    steps: int,
    work_dir: Path,
    *,
    crop: int = 64,
    batch: int = 16,
    lr: float = 1e-3,
    kl_weight: float = 1e-6,
    seed: int = 0,
    report: Callable[[Progress], None] = print,
    every: int = 50,
) -> None:
    """Train the VAE as an autoencoder on random crops (fully convolutional, so small crops suffice)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    start = _resume(work_dir, "vae", vae, optimizer)
    sampler = CropSampler(crop, seed=seed + start)
    generator = torch.Generator().manual_seed(seed + start)
    vae.train()
    began, running = time.time(), 0.0
    for step in range(start, steps):
        for group in optimizer.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        pixels, _ = sampler.batch(batch)
        posterior = vae.encode(pixels).latent_dist
        latents = posterior.sample(generator)
        decoded = vae.decode(latents).sample
        loss = F.l1_loss(decoded, pixels) + F.mse_loss(decoded, pixels) + kl_weight * posterior.kl().mean()
        _optimizer_step(vae, optimizer, loss)
        running = loss.item() if step == start else 0.95 * running + 0.05 * loss.item()
        if (step + 1) % every == 0 or step + 1 == steps:
            _checkpoint(work_dir, "vae", vae, optimizer, step + 1)
            report(Progress("vae", step + 1, steps, running, time.time() - began))
    vae.eval()


@torch.no_grad()
def latent_scaling_factor(vae, samples: int = 64, size: int = 128, seed: int = 1) -> float:
    """1 / the standard deviation of the VAE's latents on pretraining crops (SDXL's scaling_factor, measured)."""
    pixels, _ = CropSampler(size, seed=seed).batch(samples)
    latents = torch.cat([vae.encode(chunk).latent_dist.mean for chunk in pixels.split(16)])
    return float(1.0 / latents.std())


def save_base(target: Path, vae, unet, info: dict) -> Path:
    """Write the VAE and UNet weights into one safetensors file, with the build information in its metadata."""
    tensors = {f"vae.{k}": v.detach().contiguous() for k, v in vae.state_dict().items()}
    tensors |= {f"unet.{k}": v.detach().contiguous() for k, v in unet.state_dict().items()}
    tensors = {k: v.to(torch.float16) if v.is_floating_point() else v for k, v in tensors.items()}
    return files.write_safetensors(target, tensors, metadata={"sdxlab": json.dumps(info)})


@lru_cache(maxsize=4)
def _digest(path: str, size: int, mtime: float) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def base_file_digest(source: Path = BASE_FILE) -> str:
    """SHA-256 of the stored base weights (what the tiny model's cache folder is named after)."""
    stat = source.stat()
    return _digest(str(source), stat.st_size, stat.st_mtime)


def stored_scaling_factor(source: Path = BASE_FILE) -> float:
    """The VAE latent scaling factor recorded in the stored base weights (1.0 before they exist)."""
    from safetensors import safe_open

    if not source.exists():
        return 1.0
    with safe_open(str(source), framework="pt") as stored:
        return float(json.loads((stored.metadata() or {}).get("sdxlab", "{}")).get("vae_scaling_factor", 1.0))


def load_base(vae, unet, source: Path = BASE_FILE) -> dict:
    """Load the stored VAE and UNet weights into freshly built models; returns the build information."""
    from safetensors import safe_open

    with safe_open(str(source), framework="pt") as stored:
        info = json.loads((stored.metadata() or {}).get("sdxlab", "{}"))
        names = list(stored.keys())  # noqa: SIM118 (safe_open is not iterable)
        for prefix, module in (("vae.", vae), ("unet.", unet)):
            state = {k.removeprefix(prefix): stored.get_tensor(k).float() for k in names if k.startswith(prefix)}
            module.load_state_dict(state, strict=True)
    return info


@torch.no_grad()
def latent_pool(
    vae, count: int, size: int = 128, seed: int = 2, whole_fraction: float = 0.3
) -> tuple[torch.Tensor, list[str]]:
    """`count` pretraining crops at the model's resolution through the VAE: (scaled latents, picture names).

    A share of whole pictures (squashed to a square) and large crops, so the UNet learns compositions, not only
    textures: it has to know where in the frame things are, which is what a LoRA later needs to place a face.
    """
    from PIL import Image

    sampler = CropSampler(size, seed=seed)
    crops, names = [], []
    for _ in range(count):
        if sampler.rng.random() < whole_fraction:
            name = sampler.names[sampler.rng.integers(len(sampler.names))]
            picture = Image.fromarray((sampler.pictures[name] * 255).astype(np.uint8)).resize(
                (size, size), Image.BICUBIC
            )
            crop = np.asarray(picture, dtype=np.float32) / 255.0
        else:
            crop, name = sampler.one()
        crops.append(np.ascontiguousarray(crop))
        names.append(name)
    pixels = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2) * 2 - 1
    latents = torch.cat([vae.encode(chunk).latent_dist.mean for chunk in pixels.split(32)])
    return latents * vae.config.scaling_factor, names


def train_unet(
    unet,
    latents: torch.Tensor,
    names: list[str],
    caption_embeds: dict[str, tuple[torch.Tensor, torch.Tensor]],
    scheduler_config: dict,
    steps: int,
    work_dir: Path,
    *,
    batch: int = 16,
    lr: float = 5e-4,
    resolution: int = 128,
    empty_fraction: float = 0.1,
    seed: int = 0,
    report: Callable[[Progress], None] = print,
    every: int = 50,
) -> None:
    """Train the UNet to denoise pretraining latents (the scheduler's prediction type, SDXL's noise schedule, min-SNR 5).

    `caption_embeds` maps a picture name to its caption's (prompt_embeds [77, D], pooled [P]); a share of the
    steps see the all-zero "empty prompt" embedding instead, which classifier-free guidance uses as its negative.
    """
    from diffusers import DDPMScheduler

    work_dir.mkdir(parents=True, exist_ok=True)
    noise_scheduler = DDPMScheduler.from_config(scheduler_config)
    prediction_type = noise_scheduler.config.prediction_type
    optimizer = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=1e-4)
    start = _resume(work_dir, "unet", unet, optimizer)
    generator = torch.Generator().manual_seed(seed + start)
    time_ids = torch.tensor([[resolution, resolution, 0, 0, resolution, resolution]], dtype=torch.float32)
    unet.train()
    began, running = time.time(), 0.0
    for step in range(start, steps):
        for group in optimizer.param_groups:
            warm = min(1.0, (step + 1) / 100)
            group["lr"] = lr * warm * 0.5 * (1 + math.cos(math.pi * step / steps))
        index = torch.randint(len(latents), (batch,), generator=generator)
        x0 = latents[index]
        flip = torch.rand(batch, generator=generator) < 0.5
        x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
        embeds = torch.stack([caption_embeds[names[i]][0] for i in index])
        pooled = torch.stack([caption_embeds[names[i]][1] for i in index])
        empty = (torch.rand(batch, generator=generator) < empty_fraction)[:, None]
        embeds = torch.where(empty[:, :, None], torch.zeros_like(embeds), embeds)
        pooled = torch.where(empty, torch.zeros_like(pooled), pooled)
        noise = torch.randn(x0.shape, generator=generator)
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (batch,), generator=generator)
        noisy = noise_scheduler.add_noise(x0, noise, timesteps)
        prediction = unet(
            noisy,
            timesteps,
            encoder_hidden_states=embeds,
            added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids.expand(batch, -1)},
        ).sample
        velocity = prediction_type == "v_prediction"
        target = noise_scheduler.get_velocity(x0, noise, timesteps) if velocity else noise
        weight = min_snr_weights(noise_scheduler, timesteps, 5.0, prediction_type)  # the trainer's own weighting
        loss = (weight * ((prediction - target) ** 2).mean(dim=(1, 2, 3))).mean()
        _optimizer_step(unet, optimizer, loss)
        running = loss.item() if step == start else 0.98 * running + 0.02 * loss.item()
        if (step + 1) % every == 0 or step + 1 == steps:
            _checkpoint(work_dir, "unet", unet, optimizer, step + 1)
            report(Progress("unet", step + 1, steps, running, time.time() - began))
    unet.eval()
