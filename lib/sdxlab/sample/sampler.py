"""The Sampler: one loaded SDXL pipeline (base + optional LoRA + optional pivotal embeddings) that makes images.

Every image gets its own seeded CPU generator, so an image depends only on its own parameters: the same
(prompt, seed, ...) gives the same picture whether it was made alone or in a batch of eight, on any device
(batches differ only by float rounding in the UNet, far below one grey level). `GeneratedImage.params` holds
everything needed to make it again; `Sampler.recreate` does.

A LoRA scale that stays fixed for a whole `generate` call is fused into the weights (faster: no extra LoRA
matmuls per layer); the original weights are kept and put back exactly when the scale changes, so sweeping
scales never drifts and scale 0 is exactly the base model.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sdxlab.layout import RunLayout, resolve_path
from sdxlab.models import DEFAULT_MODEL, PICKLE_SUFFIXES, ModelLoadError, load_pipeline, resolve_model
from sdxlab.sample.checkpoints import unfinished_training_note
from sdxlab.sample.infotext import lora_short_hash, model_short_hash
from sdxlab.sample.prompts import fill_subject
from sdxlab.settings.common import CLASS_WORD, SUBJECT_TOKEN
from sdxlab.settings.generation import DEFAULTS, SCHEDULER_NAMES

ADAPTER_NAME = "subject"  # the peft adapter name the Sampler gives the LoRA it loads
SCHEDULERS = SCHEDULER_NAMES  # declared with the generation settings (sdxlab.settings.generation)
CHECKPOINT_FOLDER = re.compile(r"^step_\d+$")

ProgressCallback = Callable[[int, int], None]  # (denoising steps done, steps in total) over the whole call


@dataclass
class GeneratedImage:
    """One picture and the parameters that re-create it (sdxlab's names; the PNG stores them as infotext)."""

    image: Any  # PIL.Image.Image
    params: dict[str, Any]


@dataclass
class LoraState:
    """The LoRA loaded into the pipeline and, while fused, the original weights it replaced."""

    path: Path
    label: str  # what images record as lora_file: relative to the run folder when inside it
    checkpoint: str  # "final", or the training checkpoint's folder name ("step_000100")
    a1111_name: str = ""  # the name AUTOMATIC1111 and ComfyUI know it by (`<lora:NAME:w>`), see `a1111_lora_file`
    a1111_hash: str = ""  # A1111's short hash of that file (`Lora hashes`)
    fused_scale: float | None = None
    originals: dict[Any, torch.Tensor] = field(default_factory=dict)


def make_scheduler(name: str, config: dict[str, Any]):
    """A diffusers scheduler by sdxlab name, from the pipeline's own scheduler configuration."""
    from diffusers import DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler, EulerDiscreteScheduler

    if name == "euler":
        return EulerDiscreteScheduler.from_config(config)
    if name == "euler_a":
        return EulerAncestralDiscreteScheduler.from_config(config)
    if name in ("dpmpp_2m", "dpmpp_2m_karras"):
        return DPMSolverMultistepScheduler.from_config(
            config, algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=name.endswith("karras")
        )
    raise ValueError(f"Unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}.")


class Sampler:
    """A pipeline kept loaded between calls, with the subject's token, class word and pivotal tokens."""

    def __init__(
        self,
        pipe,
        subject_token: str = SUBJECT_TOKEN,
        class_word: str = CLASS_WORD,
        tokens: Sequence[str] | None = None,
        *,
        model: str | None = None,
        fuse_lora: bool = True,
        notes: Sequence[str] = (),
    ):
        self.pipe = pipe
        self.subject_token = subject_token
        self.class_word = class_word
        self.tokens = list(tokens or [])
        self.model = model or str(getattr(pipe, "name_or_path", "") or pipe.config.get("_name_or_path", "") or "")
        self.fuse_lora = fuse_lora
        self.notes = list(notes)
        self.lora: LoraState | None = None
        self.run_root: Path | None = None
        self._schedulers: dict[str, Any] = {}
        self._graphed_unet = None
        pipe.set_progress_bar_config(disable=True)  # the Sampler shows its own progress, per image

    # --- loading ---------------------------------------------------------------------------------------------

    @classmethod
    def from_run(
        cls,
        layout: RunLayout,
        model: str | None = None,
        device: str = "auto",
        lora_file: str | os.PathLike | None = None,
        allow_pickle: bool = False,
        fuse_lora: bool = True,
    ) -> Sampler:
        """The base model plus the run's LoRA and embeddings, as `lora/train_config.json` describes them.

        `model` overrides the training config's base model, `lora_file` its LoRA (the kohya file, a training
        checkpoint's file or any SDXL LoRA). Without a trained LoRA the base model is loaded alone and
        `sampler.notes` says so.
        """
        config = _read_train_config(layout)
        notes: list[str] = []
        trained_model = config.get("model")
        if model is None:
            model = trained_model or DEFAULT_MODEL
        elif trained_model and _same_model(model, trained_model) is False:
            notes.append(
                f"The LoRA was trained on '{trained_model}' but the base model is '{model}'; "
                "a LoRA only fits the model it was trained on."
            )
        lora_path = _lora_path(layout, config, lora_file)
        if lora_file is None and (unfinished := unfinished_training_note(layout)):
            notes.append(unfinished)
        pipe = load_pipeline(model, device=device, allow_pickle=allow_pickle)
        sampler = cls(
            pipe,
            subject_token=config.get("subject_token", SUBJECT_TOKEN),
            class_word=config.get("class_word", CLASS_WORD),
            model=str(model),
            fuse_lora=fuse_lora,
            notes=notes,
        )
        sampler.run_root = layout.root
        if lora_path is None:
            reason = (
                "the train stage has not run for this run yet" if not config else "train_config.json names no LoRA file"
            )
            sampler.notes.append(
                f"No trained LoRA in {layout.lora} ({reason}): sampling the base model '{model}' "
                "without a LoRA, so the pictures do not show the subject."
            )
            return sampler
        sampler.load_lora(lora_path, allow_pickle=allow_pickle)
        embeddings = config.get("embeddings_file")
        if embeddings and config.get("tokens"):
            sampler.load_embeddings(_in_lora_folder(layout, embeddings), config["tokens"])
        return sampler

    def load_lora(self, path: str | os.PathLike, allow_pickle: bool = False) -> None:
        """Load a LoRA file (diffusers, peft or kohya layout) in place of the current one.

        Only `.safetensors` files are loaded unless `allow_pickle=True`: pickle-based files can run code.
        """
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix in PICKLE_SUFFIXES and not allow_pickle:
            raise ModelLoadError(
                f"Refusing to load the LoRA {path}: pickle-based files ({suffix}) can run arbitrary code "
                "when loaded; use its .safetensors version, or pass allow_pickle=True if you trust it."
            )
        if suffix != ".safetensors" and suffix not in PICKLE_SUFFIXES:
            raise ModelLoadError(f"LoRA file {path} is not a .safetensors file; pass the LoRA's .safetensors file.")
        if not path.is_file():
            raise ModelLoadError(
                f"LoRA file {path} does not exist; check the path (train the LoRA with 02_train first)."
            )
        self.unload_lora()
        with _quiet_diffusers():
            try:
                self.pipe.load_lora_weights(str(path), adapter_name=ADAPTER_NAME)
            except (ValueError, KeyError, RuntimeError) as error:
                raise ModelLoadError(
                    f"Could not load the LoRA {path} ({type(error).__name__}: {_first_line(error)}); "
                    "is it an SDXL LoRA for this base model?"
                ) from error
        shared = a1111_lora_file(path)
        self.lora = LoraState(
            path=path,
            label=self._label(path),
            checkpoint=_checkpoint_name(path),
            a1111_name=shared.stem,
            a1111_hash=lora_short_hash(shared),
        )

    def unload_lora(self) -> None:
        """Take the LoRA out of the pipeline (the base model stays loaded)."""
        if self.lora is None:
            return
        self._unfuse()
        self.pipe.delete_adapters(ADAPTER_NAME)
        self.lora = None

    def load_embeddings(self, path: str | os.PathLike, tokens: Sequence[str]) -> None:
        """Add pivotal-tuning token embeddings (`clip_l`, `clip_g`) so the subject's tokens mean the subject."""
        from sdxlab.train.export import load_embeddings

        load_embeddings(self.pipe, path, list(tokens))
        self.tokens = list(tokens)

    def describe(self) -> str:
        """A few lines saying what is loaded (for the notebook)."""
        lora = f"LoRA {self.lora.label} ({self.lora.checkpoint})" if self.lora else "no LoRA"
        tokens = f", subject tokens {''.join(self.tokens)}" if self.tokens else ""
        lines = [
            f"Sampler: model '{self.model}', {lora}, subject '{self.subject_token}' ({self.class_word}){tokens}, "
            f"native size {self.native_size[0]}x{self.native_size[1]}, {self.pipe.device}, {self.pipe.unet.dtype}."
        ]
        return "\n".join(lines + self.notes)

    @property
    def native_size(self) -> tuple[int, int]:
        side = self.pipe.default_sample_size * self.pipe.vae_scale_factor
        return side, side

    # --- generating ------------------------------------------------------------------------------------------

    def fill(self, prompt: str) -> str:
        """`prompt` with the subject filled in (see `fill_subject`)."""
        return fill_subject(prompt, self.subject_token, self.class_word, self.tokens)

    def generate(self, prompts: Sequence[str], seeds: Sequence[int], **options: Any) -> list[GeneratedImage]:
        """One image for every (prompt, seed) pair, prompt-major: [p0 s0, p0 s1, ..., p1 s0, ...].

        `options` are `generate_pairs`' (negative_prompt, steps, guidance, width, height, lora_scale, scheduler,
        batch_size, callback, progress; the library's defaults, `GenerationSettings()`, for the rest).
        """
        if isinstance(prompts, str) or isinstance(seeds, int):
            raise TypeError("generate takes a list of prompts and a list of seeds (wrap a single one in [ ]).")
        return self.generate_pairs([(prompt, int(seed)) for prompt in prompts for seed in seeds], **options)

    def generate_pairs(
        self,
        pairs: Sequence[tuple[str, int]],
        *,
        negative_prompt: str = DEFAULTS.negative_prompt,
        steps: int = DEFAULTS.steps,
        guidance: float = DEFAULTS.guidance,
        width: int | None = None,
        height: int | None = None,
        lora_scale: float = DEFAULTS.lora_scale,
        scheduler: str = DEFAULTS.scheduler,
        batch_size: int = DEFAULTS.batch_size,
        callback: ProgressCallback | None = None,
        progress: bool = True,
    ) -> list[GeneratedImage]:
        """One image per (prompt, seed) pair in the order given.

        `batch_size` images go through the UNet together; each keeps its own seed, so the pictures do not
        depend on it. `{subject}` and the subject token in prompts are filled in. `lora_scale` is ignored
        (recorded as 0) when no LoRA is loaded.
        """
        from tqdm.auto import tqdm

        width, height = self._checked_size(width, height)
        if steps < 1:
            raise ValueError(f"steps must be at least 1 (got {steps}).")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1 (got {batch_size}).")
        lora_scale = float(lora_scale) if self.lora else 0.0
        self._use_scheduler(scheduler)
        self._apply_lora_scale(lora_scale)
        filled = [(self.fill(prompt), seed) for prompt, seed in pairs]
        total_steps, done_steps = len(filled) * steps, 0
        results: list[GeneratedImage] = []
        bar = tqdm(total=len(filled), desc="images", unit="img", disable=not progress or len(filled) <= 1, leave=False)
        for start in range(0, len(filled), batch_size):
            chunk = filled[start : start + batch_size]
            output = self.pipe(
                prompt=[prompt for prompt, _ in chunk],
                negative_prompt=[negative_prompt] * len(chunk),
                generator=[torch.Generator("cpu").manual_seed(seed) for _, seed in chunk],
                num_inference_steps=steps,
                guidance_scale=guidance,
                width=width,
                height=height,
                callback_on_step_end=_step_counter(callback, done_steps, len(chunk), total_steps),
            )
            done_steps += len(chunk) * steps
            for position, (image, (prompt, seed)) in enumerate(zip(output.images, chunk, strict=True)):
                params = self._params(
                    prompt, negative_prompt, seed, steps, guidance, width, height, scheduler, lora_scale
                )
                params.update(batch_size=len(chunk), batch_pos=position)
                results.append(GeneratedImage(image=image, params=params))
            bar.update(len(chunk))
        bar.close()
        return results

    def recreate(self, params: dict[str, Any]) -> GeneratedImage:
        """Make an image again, bit for bit, from its stored parameters (e.g. `read_parameters(png)`).

        The Sampler must hold the same model and LoRA the image was made with; a mismatch is an error, not a
        silently different picture. Batch size changes float rounding in the UNet (never more than one grey
        level), so the image is re-made in a batch of the size it was made in, at its position.
        """
        mine = self.lora.label if self.lora else ""
        if (params.get("lora_file") or "") != mine:
            raise ValueError(
                f"This image was made with LoRA '{params.get('lora_file') or 'none'}' but the sampler holds "
                f"'{mine or 'none'}'; load that LoRA first (Sampler.load_lora)."
            )
        if params.get("scheduler") is None:
            raise ValueError(
                f"The image's sampler {params.get('sampler')!r} is not one sdxlab can reproduce "
                f"({', '.join(SCHEDULERS)})."
            )
        batch_size, position = int(params.get("batch_size") or 1), int(params.get("batch_pos") or 0)
        pairs = [(params["prompt"], int(params["seed"]))] * batch_size  # same-size batch: same rounding
        return self.generate_pairs(
            pairs,
            negative_prompt=params.get("negative_prompt", ""),
            steps=int(params["steps"]),
            guidance=float(params["guidance"]),
            width=int(params["width"]),
            height=int(params["height"]),
            lora_scale=float(params.get("lora_scale", 0.0)),
            scheduler=params["scheduler"],
            batch_size=batch_size,
            progress=False,
        )[position]

    def _params(
        self, prompt, negative_prompt, seed, steps, guidance, width, height, scheduler, lora_scale
    ) -> dict[str, Any]:
        return {
            "prompt": prompt,
            "negative_prompt": negative_prompt,
            "seed": seed,
            "steps": steps,
            "guidance": float(guidance),
            "width": width,
            "height": height,
            "scheduler": scheduler,
            "lora_scale": lora_scale,
            "lora_file": self.lora.label if self.lora else "",
            "checkpoint": self.lora.checkpoint if self.lora else "",
            "model": self.model,
            # for AUTOMATIC1111 and ComfyUI (see sdxlab.sample.infotext)
            "lora_name": self.lora.a1111_name if self.lora else None,
            "lora_hash": self.lora.a1111_hash if self.lora else None,
            "model_hash": self.model_hash,
        }

    @property
    def model_hash(self) -> str | None:
        """A1111's short hash of the base model when it is one checkpoint file (computed once), else None."""
        if not hasattr(self, "_model_hash"):
            path = Path(resolve_model(self.model)).expanduser() if self.model else None
            single_file = (
                path is not None and path.is_file() and path.suffix.lower() in {".safetensors", *PICKLE_SUFFIXES}
            )
            self._model_hash = model_short_hash(path) if single_file else None
        return self._model_hash

    def _checked_size(self, width: int | None, height: int | None) -> tuple[int, int]:
        native_width, native_height = self.native_size
        width, height = int(width or native_width), int(height or native_height)
        if width % 8 or height % 8 or width < 8 or height < 8:
            raise ValueError(
                f"Image size {width}x{height} must be positive multiples of 8 (the VAE works in 8-pixel cells)."
            )
        return width, height

    def _use_scheduler(self, name: str) -> None:
        if name not in self._schedulers:
            self._schedulers[name] = make_scheduler(name, self._base_scheduler_config())
        self.pipe.scheduler = self._schedulers[name]

    def _base_scheduler_config(self) -> dict[str, Any]:
        if not hasattr(self, "_scheduler_config"):
            self._scheduler_config = dict(self.pipe.scheduler.config)
        return self._scheduler_config

    # --- LoRA scale and fusion -------------------------------------------------------------------------------

    def _apply_lora_scale(self, scale: float) -> None:
        """Set the LoRA's strength for the next call: disabled at 0 (exactly the base model), fused or scaled otherwise."""
        self._set_lora_scale(scale)
        state = (id(self.lora), scale, self.lora.fused_scale) if self.lora else None
        if self._graphed_unet is not None and state != getattr(self, "_graphed_lora_state", None):
            self._graphed_unet.reset()  # graphs baked in the old LoRA switch and scale
        self._graphed_lora_state = state

    def _set_lora_scale(self, scale: float) -> None:
        if self.lora is None:
            return
        if scale == 0.0:
            self._unfuse()
            self.pipe.disable_lora()
            return
        if self.fuse_lora and self._fusable():
            if self.lora.fused_scale != scale:
                self._unfuse()
                self._fuse(scale)
            return
        self._unfuse()
        self.pipe.enable_lora()
        self.pipe.set_adapters([ADAPTER_NAME], adapter_weights=[scale])

    def _lora_layers(self) -> Iterator[Any]:
        from peft.tuners.lora import LoraLayer

        for name in ("unet", "text_encoder", "text_encoder_2"):
            component = getattr(self.pipe, name, None)
            if component is None:
                continue
            for module in component.modules():
                if isinstance(module, LoraLayer) and ADAPTER_NAME in module.lora_A:
                    yield module

    def _fusable(self) -> bool:
        # DoRA and other variants are not a plain weight delta; they run unfused.
        return not any(layer.use_dora.get(ADAPTER_NAME, False) for layer in self._lora_layers())

    @torch.no_grad()
    def _fuse(self, scale: float) -> None:
        """Add scale × (B·A) into each base weight, keeping the originals, and switch the LoRA branch off."""
        self.pipe.enable_lora()
        self.pipe.set_adapters([ADAPTER_NAME], adapter_weights=[scale])  # get_delta_weight includes the scaling
        layers = list(self._lora_layers())
        keep_on = _originals_device([layer.get_base_layer().weight for layer in layers])
        for layer in layers:
            weight = layer.get_base_layer().weight
            self.lora.originals[layer] = weight.detach().to(keep_on, copy=True)
            weight.add_(layer.get_delta_weight(ADAPTER_NAME).to(weight.dtype))
        self.pipe.disable_lora()
        self.lora.fused_scale = scale

    @torch.no_grad()
    def _unfuse(self) -> None:
        """Put the original weights back exactly (no subtraction, so fusing again and again never drifts)."""
        if self.lora is None or self.lora.fused_scale is None:
            return
        for layer, original in self.lora.originals.items():
            layer.get_base_layer().weight.copy_(original)
        self.lora.originals.clear()
        self.lora.fused_scale = None
        self.pipe.enable_lora()

    # --- CUDA graphs -----------------------------------------------------------------------------------------

    def enable_cuda_graphs(self) -> None:
        """Replay the UNet forward from CUDA graphs (one per input shape): removes per-kernel CPU overhead.

        Experimental and off by default: only on CUDA, not yet measured on a GPU by sdxlab's tests.
        """
        from sdxlab.sample.cuda_graphs import GraphedUNet

        if self.pipe.device.type != "cuda":
            raise RuntimeError(f"CUDA graphs need the pipeline on a CUDA GPU; this one is on {self.pipe.device}.")
        if self._graphed_unet is None:
            self._graphed_unet = GraphedUNet(self.pipe.unet)
        self._graphed_unet.install()

    def disable_cuda_graphs(self, forget: bool = True) -> None:
        """Back to the UNet's own forward; `forget=False` keeps the captured graphs for a later `enable_cuda_graphs`."""
        if self._graphed_unet is not None:
            self._graphed_unet.uninstall(forget=forget)

    def _label(self, path: Path) -> str:
        if self.run_root is not None:
            with contextlib.suppress(ValueError):
                return path.resolve().relative_to(self.run_root.resolve()).as_posix()
        return str(path)


def _originals_device(weights: list[torch.Tensor]) -> torch.device:
    """Where to keep the weights a fused LoRA replaced: on the GPU when it has room to spare (restoring them is then
    a fast device copy; ~1.9 GB for SDXL's attention in bf16), otherwise in CPU memory."""
    device = weights[0].device if weights else torch.device("cpu")
    if device.type != "cuda":
        return device
    needed = sum(weight.numel() * weight.element_size() for weight in weights)
    free, _ = torch.cuda.mem_get_info(device)
    return device if free > 2 * needed + 4 * 1024**3 else torch.device("cpu")


def _step_counter(callback: ProgressCallback | None, steps_before: int, images: int, total_steps: int):
    """A diffusers step-end callback that reports denoising steps done over a whole `generate` call."""

    def on_step_end(pipe, step, timestep, tensors):
        if callback is not None:
            callback(steps_before + (step + 1) * images, total_steps)
        return tensors

    return on_step_end


# --- reading the training stage's files ----------------------------------------------------------------------


def _read_train_config(layout: RunLayout) -> dict[str, Any]:
    path = layout.lora / "train_config.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ModelLoadError(f"{path} is not valid JSON ({error}); re-run 02_train or fix the file.") from error


def _in_lora_folder(layout: RunLayout, name: str | os.PathLike) -> Path:
    path = Path(name)
    if path.is_absolute():
        return path
    for candidate in (layout.lora / path, layout.root / path, layout.lora / path.name):
        if candidate.exists():
            return candidate
    return layout.lora / path


def _lora_path(layout: RunLayout, config: dict[str, Any], lora_file: str | os.PathLike | None) -> Path | None:
    if lora_file:
        path = Path(lora_file).expanduser()
        if path.is_absolute():
            return path
        in_run = _in_lora_folder(layout, path)
        return in_run if in_run.exists() else resolve_path(path)
    if config.get("lora_file"):
        return _in_lora_folder(layout, config["lora_file"])
    return None


def a1111_lora_file(path: Path) -> Path:
    """The file AUTOMATIC1111 would load for this LoRA: the kohya-layout file (`<name>_kohya.safetensors`) that
    02_train writes next to its diffusers file (same weights, keys A1111 maps), otherwise the file itself."""
    kohya = path.with_name(f"{path.stem}_kohya.safetensors")
    return kohya if not path.stem.endswith("_kohya") and kohya.is_file() else path


def _checkpoint_name(path: Path) -> str:
    """Which training checkpoint a LoRA file is: its checkpoint folder's name, else "final"."""
    for folder in (path.parent, path.parent.parent):
        if CHECKPOINT_FOLDER.match(folder.name):
            return folder.name
    return "final"


def _same_model(first: str, second: str) -> bool:
    try:
        return Path(resolve_model(first)).expanduser().resolve() == Path(
            resolve_model(second)
        ).expanduser().resolve() or str(first) == str(second)
    except Exception:  # an unbuildable name: compare as written
        return str(first) == str(second)


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:200] if lines else "no details"


@contextlib.contextmanager
def _quiet_diffusers():
    """diffusers warns about every text encoder a UNet-only LoRA leaves alone; those warnings mean nothing here."""
    logger = logging.getLogger("diffusers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
