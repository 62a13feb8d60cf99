"""Loading SDXL pipelines, choosing dtype and device, and the tiny offline SDXL used by the demo and tests.

Everything that reads weights goes through `load_pipeline`, so the tiny model exercises the same code as a
real checkpoint. Only safetensors files are loaded unless the caller passes `allow_pickle=True`: pickle-based
files (.ckpt, .bin, .pt, .pth) can run arbitrary code while they load.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from sdxlab import files
from sdxlab.labels import TINY_MODEL


class _PilFallbackNotice(logging.Filter):
    """Drop transformers' notice that it uses the PIL image processor because torchvision is absent.

    sdxlab never installs torchvision (its wheels pull another torch build) and the PIL processors are what it
    wants, so the notice would only clutter every executed notebook.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "requires torchvision (not installed); falling back" not in record.getMessage()


def hide_torchvision_notice() -> None:
    """Install (once per process) the filter that drops transformers' torchvision notice.

    Called by whatever imports diffusers' SDXL pipeline (whose import triggers the notice), not at import of
    this module, so importing sdxlab changes no logging configuration.
    """
    logger = logging.getLogger("transformers.utils.import_utils")
    if not any(isinstance(existing, _PilFallbackNotice) for existing in logger.filters):
        logger.addFilter(_PilFallbackNotice())


DEFAULT_MODEL = "stabilityai/stable-diffusion-xl-base-1.0"
PICKLE_SUFFIXES = {".ckpt", ".bin", ".pt", ".pth", ".pkl"}

# Bump when the tiny model's shape changes, so an old cache is never loaded by new code.
TINY_MODEL_VERSION = 3
# The tiny model's native resolution: what the demo profile trains and samples at.
TINY_RESOLUTION = 128


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message is one sentence that says what to do."""


@dataclass(frozen=True)
class Placement:
    """Where and in which precision a pipeline runs."""

    device: torch.device
    dtype: torch.dtype

    @property
    def vae_dtype(self) -> torch.dtype:
        # SDXL's original VAE overflows in fp16 and returns NaNs (black images); it is exact in fp32 and safe
        # in bf16, so only fp16 gets an fp32 VAE.
        return torch.float32 if self.dtype == torch.float16 else self.dtype


def choose_placement(device: str | torch.device | None = None, dtype: str | torch.dtype | None = None) -> Placement:
    """Pick a device (CUDA, then Apple MPS, then CPU) and a dtype (bf16 where supported, fp16 on older GPUs, fp32 on CPU)."""
    if device in (None, "auto"):
        if torch.cuda.is_available():
            device = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    device = torch.device(device)
    if isinstance(dtype, str) and dtype != "auto":
        dtype = {
            "bf16": torch.bfloat16,
            "bfloat16": torch.bfloat16,
            "fp16": torch.float16,
            "float16": torch.float16,
            "fp32": torch.float32,
            "float32": torch.float32,
        }[dtype]
    if dtype in (None, "auto"):
        if device.type == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        elif device.type == "mps":
            dtype = torch.float16
        else:
            dtype = torch.float32
    return Placement(device=device, dtype=dtype)


def cache_dir() -> Path:
    """Where sdxlab keeps things it builds once (the tiny model): $SDXLAB_CACHE, else ~/.cache/sdxlab."""
    base = os.environ.get("SDXLAB_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sdxlab"
    return Path(base)


def resolve_model(model: str | os.PathLike) -> str:
    """Turn a profile's model value into something `from_pretrained` understands: "tiny" becomes the cached tiny model's folder."""
    if str(model) == TINY_MODEL:
        return str(tiny_sdxl())
    return str(model)


def load_pipeline(
    model: str | os.PathLike = DEFAULT_MODEL,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    allow_pickle: bool = False,
    local_files_only: bool | None = None,
):
    """Load a `StableDiffusionXLPipeline` from a hub id, a local diffusers folder or a single .safetensors file.

    The pipeline is moved to the chosen device and dtype; with fp16 the VAE stays in fp32 so it cannot
    overflow into black images.
    """
    hide_torchvision_notice()
    from diffusers import StableDiffusionXLPipeline

    placement = choose_placement(device, dtype)
    source = resolve_model(model)
    path = Path(source).expanduser()
    if path.suffix.lower() in PICKLE_SUFFIXES and not allow_pickle:
        raise ModelLoadError(_pickle_refusal(path))
    if _looks_like_path(source) and not path.exists():
        raise ModelLoadError(
            f"Model path {path} does not exist; pass an existing diffusers folder or .safetensors file, "
            f"or a hub id such as {DEFAULT_MODEL}."
        )
    if path.is_dir():
        _check_diffusers_folder(path)
        _refuse_pickle_only_folder(path, allow_pickle)
        pipe = _from_pretrained(StableDiffusionXLPipeline, str(path), placement, allow_pickle, local_files_only=True)
    elif path.suffix.lower() in {".safetensors", *PICKLE_SUFFIXES}:
        pipe = _from_single_file(StableDiffusionXLPipeline, path, placement)
    else:
        pipe = _from_pretrained(StableDiffusionXLPipeline, source, placement, allow_pickle, local_files_only)
    return place_pipeline(pipe, placement)


def place_pipeline(pipe, placement: Placement):
    """Move a pipeline's parts to the device, keeping the VAE in a dtype that cannot overflow."""
    # dtype was set at load time (casting afterwards would skip diffusers' keep-in-fp32 rules)
    pipe.to(placement.device)
    if pipe.vae.dtype != placement.vae_dtype:
        pipe.vae.to(dtype=placement.vae_dtype)
    if placement.vae_dtype != placement.dtype:
        # The pipeline would otherwise upcast and downcast the VAE around every decode; it already is fp32.
        pipe.vae.config.force_upcast = False
    return pipe


def _from_pretrained(cls, source: str, placement: Placement, allow_pickle: bool, local_files_only: bool | None):
    kwargs: dict[str, Any] = {"dtype": placement.dtype, "use_safetensors": not allow_pickle}
    if local_files_only is not None:
        kwargs["local_files_only"] = local_files_only
    try:
        return cls.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as error:
        raise ModelLoadError(_unreachable_message(source, error)) from error
    except Exception as error:  # huggingface_hub raises its own HTTP and repository errors
        if type(error).__module__.startswith(("huggingface_hub", "requests", "httpx", "urllib3")):
            raise ModelLoadError(_unreachable_message(source, error)) from error
        raise


def _from_single_file(cls, path: Path, placement: Placement):
    try:
        return cls.from_single_file(str(path), dtype=placement.dtype, config=_single_file_config())
    except Exception as error:
        raise ModelLoadError(
            f"Could not load the single-file checkpoint {path} ({type(error).__name__}: {_first_line(error)}); "
            "single files need the SDXL base configuration, so pass a diffusers folder if this keeps failing."
        ) from error


def _single_file_config() -> str | None:
    """A local SDXL configuration folder for single-file loading, so it never needs the hub for configs.

    Built whole in a staging folder and renamed into place, and reused only if every file is there: an
    interrupted first use (or a half folder an older version left) is rebuilt, never reused.
    """
    folder = cache_dir() / "sdxl-base-config"
    if not all((folder / relative).is_file() for relative in SDXL_CONFIG_FILES):
        with files.atomic_folder(folder) as staging:
            write_sdxl_config(staging, load_architecture())
    return str(folder)


def _looks_like_path(source: str) -> bool:
    """Hub ids are `owner/name`; anything with a file suffix, a leading ./~ or more than one slash is a path."""
    return (
        source.startswith((".", "/", "~", "\\"))
        or source.count("/") > 1
        or Path(source).suffix.lower() in {".safetensors", *PICKLE_SUFFIXES}
    )


def _unreachable_message(source: str, error: BaseException) -> str:
    return (
        f"Could not load model '{source}' from the Hugging Face hub ({type(error).__name__}): there is no network, "
        "the id is misspelt, or the model is gated and its licence not accepted; download it once "
        "(e.g. `hf download <id> --local-dir <folder>`) and pass that folder or a .safetensors file as `model`."
    )


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else "no details"


def _pickle_refusal(path: Path) -> str:
    return (
        f"Refusing to load {path}: pickle-based weight files can run arbitrary code when loaded; "
        "use a .safetensors version of it, or pass allow_pickle=True if you trust where it came from."
    )


SDXL_COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler")


def _check_diffusers_folder(folder: Path) -> None:
    """Fail with a teaching message before diffusers fails with a KeyError deep inside."""
    index_file = folder / "model_index.json"
    try:
        index = json.loads(index_file.read_text())
    except (OSError, ValueError):
        index = {}
    missing = [name for name in SDXL_COMPONENTS if not (folder / name).is_dir()]
    if "_class_name" not in index or missing:
        what = f"missing {', '.join(missing)}" if missing else "model_index.json is missing or unreadable"
        raise ModelLoadError(
            f"Folder {folder} is not a complete diffusers SDXL folder ({what}); it needs model_index.json and the "
            f"{', '.join(SDXL_COMPONENTS)} folders, as `save_pretrained` or `hf download` write them."
        )


WEIGHT_COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2")


def _refuse_pickle_only_folder(folder: Path, allow_pickle: bool) -> None:
    """Name the real cause when a component holds only pickle weights (diffusers would blame the network)."""
    if allow_pickle:
        return
    pickle_only = [
        name
        for name in WEIGHT_COMPONENTS
        if (component := folder / name).is_dir()
        and not any(component.glob("*.safetensors"))
        and any(p.suffix.lower() in PICKLE_SUFFIXES for p in component.iterdir())
    ]
    if pickle_only:
        raise ModelLoadError(
            f"Refusing to load {folder}: its {', '.join(pickle_only)} weights are pickle files only (no .safetensors), "
            "and pickle files can run arbitrary code when loaded; convert them to .safetensors, or pass "
            "allow_pickle=True if you trust where the model came from."
        )


# --- SDXL architecture -------------------------------------------------------------------------------------

ARCHITECTURE_FILE = Path(__file__).with_name("sdxl_base_1_0_architecture.json")


def load_architecture() -> dict[str, Any]:
    """SDXL-base-1.0's exact component configurations (kept in the package: benchmarks build random models from it)."""
    return json.loads(ARCHITECTURE_FILE.read_text())


SDXL_CONFIG_JSON = {
    "model_index": "model_index.json",
    "unet": "unet/config.json",
    "vae": "vae/config.json",
    "text_encoder": "text_encoder/config.json",
    "text_encoder_2": "text_encoder_2/config.json",
    "scheduler": "scheduler/scheduler_config.json",
}
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")
# every file of the configuration folder `write_sdxl_config` writes (what "complete" means for it)
SDXL_CONFIG_FILES = (
    *SDXL_CONFIG_JSON.values(),
    *(f"{tokenizer}/{name}" for tokenizer in ("tokenizer", "tokenizer_2") for name in TOKENIZER_FILES),
)


def write_sdxl_config(folder: Path, architecture: dict[str, Any]) -> None:
    """Write model_index.json and every component's config, as a diffusers folder without weights."""
    for name, relative in SDXL_CONFIG_JSON.items():
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        config = dict(architecture[name])
        if name.startswith("text_encoder"):
            config.setdefault("model_type", "clip_text_model")
        target.write_text(json.dumps(config, indent=2))
    write_clip_tokenizer(folder / "tokenizer", pad_token="<|endoftext|>")
    write_clip_tokenizer(folder / "tokenizer_2", pad_token="!")


# --- the tiny offline SDXL -----------------------------------------------------------------------------------


def tiny_sdxl(path: str | os.PathLike | None = None, *, seed: int = 0) -> Path:
    """Build (once) and return the folder of the tiny offline SDXL pipeline with SDXL's real structure.

    Two CLIP text encoders whose penultimate hidden states are concatenated for cross-attention, the pooled
    projection of the second one plus six time ids in `text_time` conditioning, an AutoencoderKL (three levels:
    4x downsampling) and the real CLIP BPE tokenizer. The VAE and UNet carry the weights pretrained by
    `data/make_tiny_base.py` on openly licensed pictures without people (`sdxlab.tiny_base`, shipped as
    `sdxlab/data/tiny_base.safetensors`); the text encoders are random. It makes toy pictures, never good ones.
    """
    from sdxlab import tiny_base

    if not tiny_base.BASE_FILE.exists():
        raise ModelLoadError(
            f"The tiny model's pretrained weights {tiny_base.BASE_FILE} are missing; reinstall sdxlab, "
            "or rebuild them with `.venv/bin/python data/make_tiny_base.py`."
        )
    # the weights' hash in the name: rebuilt weights never meet a stale cache
    name = f"tiny-sdxl-v{TINY_MODEL_VERSION}-{tiny_base.base_file_digest()[:10]}"
    folder = Path(path) if path is not None else cache_dir() / name
    if (folder / "model_index.json").exists():
        return folder
    pipe = build_tiny_pipeline(seed=seed)
    tiny_base.load_base(pipe.vae, pipe.unet)
    with files.atomic_folder(folder) as staging:
        pipe.save_pretrained(staging, safe_serialization=True)
    return folder


def build_tiny_pipeline(seed: int = 0, *, vae_scaling_factor: float | None = None):
    """The tiny pipeline in memory with random weights (fp32); `tiny_sdxl` loads the pretrained VAE and UNet into it."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from sdxlab import tiny_base

    architecture = load_architecture()
    torch.manual_seed(seed)
    text_width_1, text_width_2, time_embed = 32, 64, 16
    vae_blocks = tiny_base.VAE_BLOCKS
    unet = UNet2DConditionModel(
        sample_size=TINY_RESOLUTION // 2 ** (len(vae_blocks) - 1),
        in_channels=tiny_base.LATENT_CHANNELS,
        out_channels=tiny_base.LATENT_CHANNELS,
        **tiny_base.UNET_SHAPE,
        use_linear_projection=True,
        cross_attention_dim=text_width_1 + text_width_2,  # both encoders' hidden states, concatenated
        addition_embed_type="text_time",
        addition_time_embed_dim=time_embed,
        projection_class_embeddings_input_dim=text_width_2 + 6 * time_embed,  # pooled text + 6 time ids
    )
    if vae_scaling_factor is None:
        vae_scaling_factor = tiny_base.stored_scaling_factor()
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=vae_blocks,  # three levels: 4x downsampling, so a 128 px face survives the round trip
        down_block_types=("DownEncoderBlock2D",) * len(vae_blocks),
        up_block_types=("UpDecoderBlock2D",) * len(vae_blocks),
        layers_per_block=1,
        latent_channels=tiny_base.LATENT_CHANNELS,
        norm_num_groups=8,
        sample_size=TINY_RESOLUTION,
        scaling_factor=vae_scaling_factor,  # measured on the pretraining pictures, as SDXL's 0.13025 was
        mid_block_add_attention=False,
        force_upcast=True,
    )
    common = dict(
        vocab_size=49408,
        max_position_embeddings=77,
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
        layer_norm_eps=1e-5,
        num_attention_heads=4,
        num_hidden_layers=3,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=text_width_1,
            intermediate_size=64,
            projection_dim=text_width_1,
            hidden_act="quick_gelu",
            **common,
        )
    )
    text_encoder_2 = CLIPTextModelWithProjection(
        CLIPTextConfig(
            hidden_size=text_width_2, intermediate_size=128, projection_dim=text_width_2, hidden_act="gelu", **common
        )
    )
    # v-prediction (SDXL's noise schedule otherwise): at high noise the UNet predicts the picture itself, so a
    # small model trained briefly still lays out a face from pure noise; with epsilon prediction its tiny errors
    # there grow 200-fold in the picture and the demo drew texture (measured 2026-12-01). The trainer and the
    # samplers take the prediction type from this config, as they do for SDXL v-prediction fine-tunes.
    scheduler = EulerDiscreteScheduler.from_config(architecture["scheduler"], prediction_type="v_prediction")
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=clip_tokenizer(pad_token="<|endoftext|>"),
        tokenizer_2=clip_tokenizer(pad_token="!"),
        unet=unet,
        scheduler=scheduler,
        force_zeros_for_empty_prompt=True,
    )


# --- the real CLIP tokenizer, offline --------------------------------------------------------------------------


def clip_tokenizer(pad_token: str = "<|endoftext|>"):
    """A new CLIPTokenizer with CLIP's real vocabulary, built offline (SDXL's second tokenizer pads with "!").

    A fresh object on every call: pivotal tuning adds tokens to a pipeline's tokenizers, so they must not be shared.
    """
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory(prefix="sdxlab-clip-tokenizer-") as folder:
        write_clip_tokenizer(Path(folder), pad_token=pad_token)
        return CLIPTokenizer.from_pretrained(folder)


def clip_vocab_file() -> Path:
    """The CLIP BPE merges file that ships inside the open_clip_torch package (located without importing open_clip)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "The CLIP vocabulary comes from the open_clip_torch package, which is not installed; "
            "run `make demo` (or `pip install --no-deps open_clip_torch`) to install it."
        )
    return Path(next(iter(spec.submodule_search_locations))) / "bpe_simple_vocab_16e6.txt.gz"


@lru_cache(maxsize=1)
def clip_vocabulary() -> tuple[dict[str, int], tuple[str, ...]]:
    """CLIP's 49,408-token vocabulary and its BPE merges, rebuilt exactly as OpenAI's tokenizer builds them."""
    with gzip.open(clip_vocab_file(), "rt", encoding="utf-8") as vocab_file:
        lines = vocab_file.read().split("\n")
    merges = tuple(lines[1 : 49152 - 256 - 2 + 1])
    byte_chars = list(_bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {token: index for index, token in enumerate(tokens)}, merges


def write_clip_tokenizer(folder: Path, pad_token: str) -> None:
    """Write vocab.json, merges.txt and the tokenizer config of SDXL's CLIP tokenizer (77 tokens)."""
    vocab, merges = clip_vocabulary()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": pad_token,
        "do_lower_case": True,
        "clean_up_tokenization_spaces": True,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (folder / "special_tokens_map.json").write_text(
        json.dumps({k: config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")}, indent=2)
    )


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable unicode characters."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes), strict=True))
