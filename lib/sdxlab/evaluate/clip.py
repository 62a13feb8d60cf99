"""CLIP for evaluation: load a CLIP model and embed images and texts into one space.

`load_clip("tiny")` builds (once, cached under `sdxlab.models.cache_dir()`) a tiny randomly-initialised
CLIPModel with the real CLIP tokenizer, so tests and the demo run the real code offline; its numbers are
meaningless. Any other value is a hub id (default `openai/clip-vit-large-patch14`) or a local folder, loaded
through transformers from safetensors weights.

Images are resized, centre-cropped and normalised here rather than by transformers' image processors: the
default one in transformers 5 needs torchvision, which this project never installs (it pulls another torch).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sdxlab import files
from sdxlab.labels import TINY_MODEL, is_random_weights
from sdxlab.models import ModelLoadError, cache_dir, choose_placement, write_clip_tokenizer

DEFAULT_CLIP_MODEL = "openai/clip-vit-large-patch14"  # the text encoder family SDXL itself was built on
TINY_CLIP = TINY_MODEL  # "tiny": the same name as the tiny SDXL (sdxlab.labels)
TINY_CLIP_VERSION = 1  # bump when the tiny CLIP's shape changes, so an old cache is never reused
# OpenAI's normalisation, also used by the LAION/open_clip checkpoints on the hub.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PICKLE_WEIGHTS = ("pytorch_model.bin", "model.ckpt", "pytorch_model.pt")


@dataclass
class ClipModel:
    """A loaded CLIP model with its tokenizer and image preprocessing; embeddings come back unit-length."""

    name: str
    model: torch.nn.Module
    tokenizer: object
    device: torch.device
    image_size: int
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD

    @property
    def meaningful(self) -> bool:
        """False for the tiny random-weight CLIP: its similarities prove plumbing, not meaning."""
        return not is_random_weights(self.name)

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Resize the shorter side to the model's input size (bicubic), centre-crop square, normalise."""
        size = self.image_size
        batch = []
        for image in images:
            image = image.convert("RGB")  # grayscale, palette and alpha images all become RGB
            scale = size / min(image.size)
            resized = image.resize(
                (max(size, round(image.width * scale)), max(size, round(image.height * scale))),
                Image.Resampling.BICUBIC,
            )
            left, top = (resized.width - size) // 2, (resized.height - size) // 2
            pixels = np.asarray(resized.crop((left, top, left + size, top + size)), dtype=np.float32) / 255.0
            batch.append((pixels - np.array(self.mean, dtype=np.float32)) / np.array(self.std, dtype=np.float32))
        return torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).contiguous()

    @torch.inference_mode()
    def embed_images(self, images: Sequence[Image.Image], batch_size: int = 16) -> np.ndarray:
        """Unit-length image embeddings, one row per image."""
        if not images:
            return np.zeros((0, self.dimension), dtype=np.float32)
        rows = []
        dtype = next(self.model.parameters()).dtype
        for start in range(0, len(images), batch_size):
            pixels = self.preprocess(images[start : start + batch_size]).to(self.device, dtype)
            rows.append(_features(self.model.get_image_features(pixel_values=pixels)))
        return _unit_rows(torch.cat(rows))

    @torch.inference_mode()
    def embed_texts(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Unit-length text embeddings, one row per text (texts longer than 77 tokens are cut, as CLIP does)."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        rows = []
        for start in range(0, len(texts), batch_size):
            tokens = self.tokenizer(
                list(texts[start : start + batch_size]),
                padding=True,
                truncation=True,
                max_length=77,
                return_tensors="pt",
            )
            tokens = {
                key: value.to(self.device) for key, value in tokens.items() if key in ("input_ids", "attention_mask")
            }
            rows.append(_features(self.model.get_text_features(**tokens)))
        return _unit_rows(torch.cat(rows))

    @property
    def dimension(self) -> int:
        return int(self.model.config.projection_dim)


def _features(output) -> torch.Tensor:
    # transformers 4 returns the projected features; transformers 5 returns an output whose pooler_output holds them.
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def _unit_rows(features: torch.Tensor) -> np.ndarray:
    features = features.float()
    return (features / features.norm(dim=-1, keepdim=True).clamp_min(1e-12)).cpu().numpy()


def load_clip(
    clip_model: str | os.PathLike = DEFAULT_CLIP_MODEL,
    device: str | torch.device | None = "auto",
    allow_pickle: bool = False,
    local_files_only: bool = False,
) -> ClipModel:
    """Load CLIP once per process: "tiny" (offline, random weights), a hub id or a local folder.

    `local_files_only=True` takes a hub id from the local hub cache only (never the network).
    """
    placement = choose_placement(device)
    return _load_clip(str(clip_model), str(placement.device), allow_pickle, local_files_only)


@lru_cache(maxsize=2)
def _load_clip(source: str, device: str, allow_pickle: bool, local_files_only: bool = False) -> ClipModel:
    from transformers import CLIPModel, CLIPTokenizer

    folder = tiny_clip() if source == TINY_CLIP else Path(source).expanduser()
    is_local = folder.is_dir()
    if not is_local and (source.startswith((".", "/", "~")) or source.count("/") > 1):
        raise ModelLoadError(
            f"CLIP model folder {folder} does not exist; pass an existing folder, a hub id such as "
            f"{DEFAULT_CLIP_MODEL}, or 'tiny' for the offline plumbing model."
        )
    if (
        is_local
        and not allow_pickle
        and not any(folder.glob("*.safetensors"))
        and any((folder / name).exists() for name in PICKLE_WEIGHTS)
    ):
        raise ModelLoadError(
            f"Refusing to load {folder}: it has only pickle-based weights, which can run arbitrary code "
            "when loaded; convert them to .safetensors or pass allow_pickle=True if you trust them."
        )
    location = str(folder) if is_local else source
    local_only = is_local or local_files_only
    torch_device = torch.device(device)
    # CLIP was trained in fp16; on a GPU that halves memory at no cost to the scores. CPUs stay in fp32.
    dtype = torch.float16 if torch_device.type == "cuda" else torch.float32
    try:
        model = CLIPModel.from_pretrained(
            location, dtype=dtype, use_safetensors=not allow_pickle, local_files_only=local_only
        )
        tokenizer = CLIPTokenizer.from_pretrained(location, local_files_only=local_only)
    except Exception as error:  # huggingface_hub and transformers raise many types for "cannot get it"
        raise ModelLoadError(
            f"Could not load CLIP model '{source}' ({type(error).__name__}): there is no network, the id is misspelt, "
            "or the folder is not a transformers CLIP folder; download it once (e.g. `hf download "
            f"{DEFAULT_CLIP_MODEL} --local-dir <folder>`) and pass that folder, or 'tiny' to test the plumbing offline."
        ) from error
    model.to(torch_device).eval()
    size, mean, std = _preprocessing(location, is_local, model, local_only)
    return ClipModel(
        name=source, model=model, tokenizer=tokenizer, device=torch_device, image_size=size, mean=mean, std=std
    )


def _preprocessing(location: str, is_local: bool, model, local_files_only: bool) -> tuple[int, tuple, tuple]:
    """Input size and normalisation from the checkpoint's preprocessor_config.json, else CLIP's defaults."""
    size = int(model.config.vision_config.image_size)
    config: dict = {}
    try:
        if is_local:
            path = Path(location) / "preprocessor_config.json"
            config = json.loads(path.read_text()) if path.is_file() else {}
        else:
            from huggingface_hub import hf_hub_download

            config = json.loads(
                Path(
                    hf_hub_download(location, "preprocessor_config.json", local_files_only=local_files_only)
                ).read_text()
            )
    except Exception:  # a missing or odd preprocessor config: CLIP's published defaults are right for CLIP
        config = {}
    mean = tuple(config.get("image_mean") or CLIP_MEAN)
    std = tuple(config.get("image_std") or CLIP_STD)
    return size, mean, std


# --- the tiny offline CLIP -------------------------------------------------------------------------------------


def tiny_clip(path: str | os.PathLike | None = None, seed: int = 0) -> Path:
    """Build (once) and return the folder of a tiny random-weight CLIPModel with the real CLIP tokenizer."""
    folder = Path(path) if path is not None else cache_dir() / f"tiny-clip-v{TINY_CLIP_VERSION}"
    if (folder / "config.json").exists() and any(folder.glob("*.safetensors")):
        return folder
    with files.atomic_folder(folder) as staging:
        build_tiny_clip(seed).save_pretrained(staging, safe_serialization=True)
        write_clip_tokenizer(staging, pad_token="<|endoftext|>")
        (staging / "preprocessor_config.json").write_text(
            json.dumps(
                {"image_mean": list(CLIP_MEAN), "image_std": list(CLIP_STD), "crop_size": 64, "size": 64}, indent=2
            )
        )
    return folder


def build_tiny_clip(seed: int = 0):
    """A CLIPModel with CLIP's real vocabulary and structure but tiny widths (about 1.6 M parameters)."""
    from transformers import CLIPConfig, CLIPModel

    vocab_size = 49408
    text = dict(
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=vocab_size,
        max_position_embeddings=77,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )
    vision = dict(
        hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2, image_size=64, patch_size=16
    )
    with torch.random.fork_rng(devices=[]):  # a fixed model without disturbing the caller's random state
        torch.manual_seed(seed)
        return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=32))
