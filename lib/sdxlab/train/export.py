"""Exporting a trained LoRA: one file for diffusers, one for AUTOMATIC1111/ComfyUI, and the pivotal-tuning embeddings.

`export_lora` takes the peft state dicts of the trained adapters (`peft.get_peft_model_state_dict(model)`) and
writes, atomically, into the LoRA folder:

- `<name>.safetensors`: the diffusers/peft format, written by diffusers' own
  `StableDiffusionXLPipeline.save_lora_weights` (keys `unet.<module>.lora_A.weight` / `lora_B`, the adapter
  configuration under `lora_adapter_metadata`); `pipe.load_lora_weights(path)` reads it.
- `<name>_kohya.safetensors`: the key layout kohya's sd-scripts writes for SDXL, which AUTOMATIC1111 and ComfyUI
  load: `lora_unet_<module>` named after the original Stability (SGM) UNet
  (`lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q`), `lora_te1_<module>` / `lora_te2_<module>`
  for the two CLIP text encoders, each with `.lora_down.weight`, `.lora_up.weight` and `.alpha` (kohya's
  scale is alpha / rank; peft's scaling, rsLoRA and per-module patterns included, is carried exactly).
  diffusers' `load_lora_weights` reads this file too, with the same result as the diffusers file.
- `<name>_emb.safetensors` when pivotal tuning trained new tokens: `clip_l` and `clip_g`, one row per token
  (the layout of diffusers' advanced SDXL script); `load_embeddings` puts them back into a pipeline.

Every file carries the same safetensors metadata: kohya's `ss_*` keys (which the WebUIs show) and
`sdxlab_config` / `sdxlab_dataset_hash`, so a LoRA found later still says how it was made.
"""

from __future__ import annotations

import json
import math
import re
import tempfile
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sdxlab import files

# The value kohya's sd-scripts and the WebUIs use to recognise an SDXL LoRA.
SDXL_BASE_MODEL_VERSION = "sdxl_base_v1-0"
# Stability's model-spec architecture id for an SDXL LoRA (kohya's sd-scripts writes the same).
MODELSPEC_ARCHITECTURE = "stable-diffusion-xl-v1-base/lora"
EMBEDDING_KEYS = ("clip_l", "clip_g")  # text_encoder (CLIP ViT-L) rows, text_encoder_2 (OpenCLIP ViT-bigG) rows
KOHYA_PREFIXES = {"unet": "lora_unet", "text_encoder": "lora_te1", "text_encoder_2": "lora_te2"}
CLIP_TEXT_MODEL_PARTS = ("embeddings.", "encoder.", "final_layer_norm.")
PEFT_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<part>A|B)\.weight$")


@dataclass(frozen=True)
class ExportedFiles:
    """The files one export wrote."""

    diffusers: Path
    kohya: Path
    embeddings: Path | None = None


def export_lora(
    out_dir: str | Path,
    name: str,
    unet_lora: Mapping[str, torch.Tensor],
    text_encoder_lora: Mapping[str, torch.Tensor] | None = None,
    text_encoder_2_lora: Mapping[str, torch.Tensor] | None = None,
    embeddings: Mapping[str, torch.Tensor] | None = None,
    metadata: Mapping[str, str] | None = None,
    *,
    unet_lora_config: Any = None,
    text_encoder_lora_config: Any = None,
    text_encoder_2_lora_config: Any = None,
    unet_config: Mapping[str, Any] | None = None,
) -> ExportedFiles:
    """Write the diffusers, kohya and (if given) embeddings files of a trained LoRA into `out_dir`.

    The `*_lora` dicts are peft state dicts (`get_peft_model_state_dict(model)`). The `*_lora_config`
    arguments are the adapters' `peft.LoraConfig` (or its `to_dict()`): they carry lora_alpha and any rank or
    alpha patterns; without them the LoRA is exported with alpha = rank (scale 1), which is what diffusers
    assumes for a file without adapter metadata. `unet_config` (`pipe.unet.config`) places the UNet modules
    in kohya's SGM layout; it defaults to SDXL-base-1.0's, which every SDXL fine-tune shares, so pass it for
    any other UNet (the tiny test model, for one).

    Everything is converted and checked before the first byte is written, and the files are written as one
    group (`sdxlab.files.write_together`): all of this export's files are in place, or none of them. Every
    file carries the same `sdxlab_export_id` metadata, so a reader can tell which files belong together.
    """
    out_dir = Path(out_dir)
    if not name or Path(name).name != name:
        raise ValueError(f"LoRA name {name!r} must be a plain file name without folders; pick another lora_name.")
    components = {
        "unet": dict(unet_lora or {}),
        "text_encoder": dict(text_encoder_lora or {}),
        "text_encoder_2": dict(text_encoder_2_lora or {}),
    }
    configs = {
        "unet": _config_dict(unet_lora_config),
        "text_encoder": _config_dict(text_encoder_lora_config),
        "text_encoder_2": _config_dict(text_encoder_2_lora_config),
    }
    components = {part: _checked_peft_state_dict(part, tensors) for part, tensors in components.items() if tensors}
    if "unet" not in components:
        raise ValueError("export_lora needs the UNet's LoRA weights (unet_lora is empty); nothing was written.")
    unet_config = dict(unet_config) if unet_config is not None else _sdxl_unet_config()

    kohya_tensors, kohya_alphas = to_kohya(components, configs, unet_config)
    file_metadata = _file_metadata(name, components, configs, kohya_alphas, metadata)
    embedding_tensors = _checked_embeddings(embeddings) if embeddings else None
    diffusers_tensors, diffusers_metadata = _diffusers_file_contents(out_dir, components, configs)

    file_metadata["sdxlab_export_id"] = uuid.uuid4().hex  # the same in every file of this export

    def writer(tensors, file_meta):
        return lambda path: save_file(tensors, str(path), metadata=file_meta)

    diffusers_path, kohya_path = out_dir / f"{name}.safetensors", out_dir / f"{name}_kohya.safetensors"
    writers = {
        diffusers_path: writer(diffusers_tensors, {**diffusers_metadata, **file_metadata}),
        kohya_path: writer(kohya_tensors, file_metadata),
    }
    embeddings_path = None
    if embedding_tensors is not None:
        embeddings_path = out_dir / f"{name}_emb.safetensors"
        writers[embeddings_path] = writer(embedding_tensors, file_metadata)
    # one export, one group: a failure part-way leaves the previous export's files as they were
    files.write_together(writers)
    return ExportedFiles(diffusers=diffusers_path, kohya=kohya_path, embeddings=embeddings_path)


def save_file(tensors, path: str, metadata: Mapping[str, str] | None = None) -> None:
    """safetensors' writer, looked up at call time (tests replace it to simulate a full disk)."""
    import safetensors.torch

    safetensors.torch.save_file(tensors, path, metadata=dict(metadata) if metadata is not None else None)


def export_training(
    folder: str | Path, pipe, name: str, text_encoders: bool, new_tokens, metadata: Mapping[str, str]
) -> ExportedFiles:
    """Export the LoRA a training pipeline carries now (with its peft configurations) into `folder`."""
    from sdxlab.train.lora import adapter_state

    parts = adapter_state(pipe, text_encoders, new_tokens)
    text_configs = [
        encoder.peft_config["default"] if text_encoders else None
        for encoder in (pipe.text_encoder, pipe.text_encoder_2)
    ]
    return export_lora(
        folder,
        name,
        parts["unet"],
        parts["text_encoder"],
        parts["text_encoder_2"],
        parts["embeddings"],
        metadata,
        unet_lora_config=pipe.unet.peft_config["default"],
        text_encoder_lora_config=text_configs[0],
        text_encoder_2_lora_config=text_configs[1],
        unet_config=pipe.unet.config,
    )


def training_metadata(config: Mapping[str, Any], dataset_hash: str, comment: str = "") -> dict[str, str]:
    """The metadata a trainer passes to `export_lora`: its configuration, the dataset hash and a comment."""
    metadata = {
        "sdxlab_config": json.dumps(dict(config), sort_keys=True, default=str),
        "sdxlab_dataset_hash": str(dataset_hash),
        "ss_training_comment": comment,
    }
    # the kohya keys the WebUIs show, from the notebook's parameter names (train_steps) or TrainConfig's (steps)
    for kohya_key, names in (
        ("ss_max_train_steps", ("train_steps", "steps")),
        ("ss_learning_rate", ("train_learning_rate", "learning_rate")),
        ("ss_batch_size_per_device", ("train_batch_size_used", "train_batch_size", "batch_size")),
        ("ss_resolution", ("resolution",)),
        ("ss_seed", ("seed",)),
    ):
        value = next((config[name] for name in names if config.get(name) is not None), None)
        if value is not None:
            metadata[kohya_key] = str(value)
    return metadata


# --- reading back ------------------------------------------------------------------------------------------


def lora_pair_count(path: str | Path) -> int:
    """How many (down, up) weight pairs a LoRA file holds, in any of the diffusers, peft or kohya layouts."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        keys = list(handle.keys())
    down_suffixes = (".lora_A.weight", ".lora_down.weight", ".lora.down.weight", ".lora_linear_layer.down.weight")
    return sum(key.endswith(down_suffixes) for key in keys)


def read_metadata(path: str | Path) -> dict[str, str]:
    """The safetensors metadata of a file (empty if it has none)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})


def load_embeddings(pipe, path: str | Path, tokens: list[str]) -> None:
    """Put pivotal-tuning embeddings (`clip_l`, `clip_g`) into both tokenizers and text encoders of `pipe`.

    New tokens are added with diffusers' own `load_textual_inversion`; if the pipeline already knows all of
    them (the embeddings were loaded before), their rows are overwritten instead, so calling this twice is safe.
    """
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"Embeddings file {path} does not exist; train with pivotal tuning or set the embeddings file to None."
        )
    tensors = load_file(str(path))
    missing = [key for key in EMBEDDING_KEYS if key not in tensors]
    if missing:
        raise ValueError(
            f"Embeddings file {path} has no {', '.join(missing)} tensor; it was not written by sdxlab's trainer."
        )
    for key, tokenizer, text_encoder in (
        ("clip_l", pipe.tokenizer, pipe.text_encoder),
        ("clip_g", pipe.tokenizer_2, pipe.text_encoder_2),
    ):
        rows = tensors[key]
        if rows.shape[0] != len(tokens):
            raise ValueError(
                f"Embeddings file {path} holds {rows.shape[0]} rows for {key} but {len(tokens)} tokens were given ({tokens})."
            )
        known = [token in tokenizer.get_vocab() for token in tokens]
        if all(known):
            weight = text_encoder.get_input_embeddings().weight
            with torch.no_grad():
                for token, row in zip(tokens, rows, strict=True):
                    weight[tokenizer.convert_tokens_to_ids(token)] = row.to(weight.device, weight.dtype)
        elif any(known):
            raise ValueError(
                f"Some of the tokens {tokens} are already in the tokenizer and some are not; load {path} into a fresh pipeline."
            )
        else:
            pipe.load_textual_inversion(rows, token=list(tokens), tokenizer=tokenizer, text_encoder=text_encoder)


def cost_line(seconds: float, gpu_price_per_hour: float | None) -> str:
    """One sentence with the wall time and, given a price per GPU hour, what the run cost."""
    minutes, remainder = divmod(round(seconds), 60)
    duration = f"{minutes} min {remainder} s" if minutes else f"{remainder} s"
    if gpu_price_per_hour is None:
        return f"Training took {duration} (set gpu_price_per_hour to see what it cost)."
    cost = seconds / 3600 * gpu_price_per_hour
    return f"Training took {duration}; at ${gpu_price_per_hour:.2f} per GPU hour that is ${cost:.2f}."


# --- the kohya layout --------------------------------------------------------------------------------------


def to_kohya(
    components: Mapping[str, Mapping[str, torch.Tensor]],
    configs: Mapping[str, dict | None],
    unet_config: Mapping[str, Any],
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Rename peft LoRA weights to kohya keys and add each module's `.alpha`; returns (tensors, alpha by kohya module).

    kohya applies `lora_up @ lora_down * alpha / rank`. Within one model every module gets the same alpha
    (the model's usual one) and a module whose peft scaling differs (alpha or rank patterns, rsLoRA) has its
    `lora_up` multiplied by the difference instead: the product is exact, and diffusers' reader of kohya files,
    which cannot tell attention modules' alphas apart, then gives the same pictures as the WebUIs.
    """
    from diffusers.utils.state_dict_utils import convert_state_dict_to_kohya

    prefixed: dict[str, torch.Tensor] = {}
    alphas: dict[str, float] = {}  # by the prefixed module path, before diffusers renames it
    for part, tensors in components.items():
        wanted = {}
        for key, tensor in tensors.items():
            module, kind = PEFT_KEY.match(key).group("module", "part")
            if kind == "A":
                wanted[module] = lora_scale(module, tensor.shape[0], configs.get(part)) * tensor.shape[0]
        shared_alpha = Counter(wanted.values()).most_common(1)[0][0]
        for key, tensor in tensors.items():
            module, kind = PEFT_KEY.match(key).group("module", "part")
            kohya_module = sgm_module_name(module, unet_config) if part == "unet" else module
            if kind == "B" and wanted[module] != shared_alpha:
                tensor = tensor * (wanted[module] / shared_alpha)
            prefixed[f"{part}.{kohya_module}.lora_{kind}.weight"] = tensor
            alphas[f"{part}.{kohya_module}"] = shared_alpha
    # diffusers' converter does the renaming (lora_A -> lora_down, dots -> underscores, lora_te1/lora_te2/lora_unet
    # prefixes) but writes alpha = rank for every module; the alphas are set below.
    converted = convert_state_dict_to_kohya(prefixed)
    kohya_alphas = {}
    for prefixed_module, alpha in alphas.items():
        part, module = prefixed_module.split(".", 1)
        kohya_module = f"{KOHYA_PREFIXES[part]}_{module.replace('.', '_')}"
        if f"{kohya_module}.lora_down.weight" not in converted:
            raise RuntimeError(f"kohya conversion lost module {prefixed_module}; this is a bug in sdxlab's export.")
        converted[f"{kohya_module}.alpha"] = torch.tensor(float(alpha))
        kohya_alphas[kohya_module] = float(alpha)
    return converted, kohya_alphas


def lora_scale(module: str, rank: int, config: Mapping[str, Any] | None) -> float:
    """peft's scaling for one module: lora_alpha / r (or / sqrt(r) with rsLoRA), honouring rank and alpha patterns."""
    if not config:
        return 1.0  # diffusers loads a LoRA without adapter metadata with lora_alpha = r
    from peft.utils.other import get_pattern_key

    alpha_pattern = config.get("alpha_pattern") or {}
    alpha = alpha_pattern.get(get_pattern_key(alpha_pattern.keys(), module), config.get("lora_alpha", rank))
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


def sgm_module_name(module: str, unet_config: Mapping[str, Any]) -> str:
    """The name of a diffusers UNet module in the original Stability (SGM) UNet, as kohya names SDXL LoRAs.

    `down_blocks.1.attentions.0.proj_in` -> `input_blocks.4.1.proj_in` for SDXL: input and output blocks are
    numbered flat, one per (resnet, attention) layer, with the downsampler taking its own input block.
    """
    per_down = unet_config["layers_per_block"]
    if not isinstance(per_down, int):
        raise ValueError("kohya export needs a UNet with the same layers_per_block in every block, as SDXL has.")
    per_up = per_down + 1  # up blocks have one more resnet than down blocks
    up_block_has_attention = ["CrossAttn" in kind for kind in unet_config["up_block_types"]]
    rules = [
        (r"conv_in", lambda m: "input_blocks.0.0"),
        (r"time_embedding\.linear_(\d)", lambda m: f"time_embed.{2 * int(m[1]) - 2}"),
        (r"add_embedding\.linear_(\d)", lambda m: f"label_emb.0.{2 * int(m[1]) - 2}"),
        (
            r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)",
            lambda m: f"input_blocks.{1 + int(m[1]) * (per_down + 1) + int(m[2])}.0.{_sgm_resnet_part(m[3])}",
        ),
        (
            r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.+)",
            lambda m: f"input_blocks.{1 + int(m[1]) * (per_down + 1) + int(m[2])}.1.{m[3]}",
        ),
        (
            r"down_blocks\.(\d+)\.downsamplers\.0\.conv",
            lambda m: f"input_blocks.{(int(m[1]) + 1) * (per_down + 1)}.0.op",
        ),
        (r"mid_block\.resnets\.(\d+)\.(.+)", lambda m: f"middle_block.{2 * int(m[1])}.{_sgm_resnet_part(m[2])}"),
        (r"mid_block\.attentions\.0\.(.+)", lambda m: f"middle_block.1.{m[1]}"),
        (
            r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)",
            lambda m: f"output_blocks.{int(m[1]) * per_up + int(m[2])}.0.{_sgm_resnet_part(m[3])}",
        ),
        (
            r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.+)",
            lambda m: f"output_blocks.{int(m[1]) * per_up + int(m[2])}.1.{m[3]}",
        ),
        (
            r"up_blocks\.(\d+)\.upsamplers\.0\.conv",
            lambda m: (
                f"output_blocks.{int(m[1]) * per_up + per_up - 1}.{2 if up_block_has_attention[int(m[1])] else 1}.conv"
            ),
        ),
        (r"conv_norm_out", lambda m: "out.0"),
        (r"conv_out", lambda m: "out.2"),
    ]
    for pattern, rename in rules:
        match = re.fullmatch(pattern, module)
        if match:
            return rename(match)
    raise ValueError(
        f"UNet module {module!r} has no place in kohya's SDXL layout; train LoRA on attention, "
        "feed-forward, projection or ResNet layers only."
    )


SGM_RESNET_PARTS = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}


def _sgm_resnet_part(part: str) -> str:
    if part not in SGM_RESNET_PARTS:
        raise ValueError(f"ResNet layer {part!r} has no place in kohya's SDXL layout.")
    return SGM_RESNET_PARTS[part]


# --- the diffusers file ------------------------------------------------------------------------------------


def _diffusers_file_contents(
    out_dir: Path, components: Mapping[str, Mapping[str, torch.Tensor]], configs: Mapping[str, dict | None]
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata diffusers' own `save_lora_weights` writes, so the file is exactly its format.

    diffusers writes straight to the target name; it writes into a scratch folder here and the caller
    writes the result atomically with sdxlab's metadata added.
    """
    from diffusers import StableDiffusionXLPipeline
    from safetensors import safe_open
    from safetensors.torch import load_file

    arguments: dict[str, Any] = {}
    for part in ("unet", "text_encoder", "text_encoder_2"):
        if part in components:
            arguments[f"{part}_lora_layers"] = components[part]
            arguments[f"{part}_lora_adapter_metadata"] = configs.get(part)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export-", suffix=files.PARTIAL_MARK, dir=out_dir) as scratch:
        StableDiffusionXLPipeline.save_lora_weights(scratch, weight_name="lora.safetensors", **arguments)
        written = Path(scratch) / "lora.safetensors"
        with safe_open(str(written), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
        return load_file(str(written)), metadata


# --- checks and metadata -----------------------------------------------------------------------------------


def _checked_peft_state_dict(part: str, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Refuse what the formats cannot hold (DoRA, embeddings, adapter-named keys) and weights that are not finite."""
    checked = {}
    for key, tensor in tensors.items():
        if not PEFT_KEY.match(key):
            raise ValueError(
                f"{part} LoRA key {key!r} is not a plain peft LoRA weight (<module>.lora_A.weight); "
                "pass get_peft_model_state_dict(model) of a LoRA without DoRA."
            )
        if not torch.isfinite(tensor).all():
            raise ValueError(
                f"{part} LoRA weight {key} contains NaN or inf; nothing was exported, "
                "export the last good checkpoint instead."
            )
        checked[_canonical_key(part, key)] = tensor.detach().to("cpu").contiguous()
    for key in checked:
        module, kind = PEFT_KEY.match(key).group("module", "part")
        partner = f"{module}.lora_{'B' if kind == 'A' else 'A'}.weight"
        if partner not in checked:
            raise ValueError(f"{part} LoRA weight {key} has no {partner}; the state dict is incomplete.")
    return checked


def _canonical_key(part: str, key: str) -> str:
    """Text-encoder keys as `text_model.encoder...`, the CLIP layout every loader knows.

    transformers 5 dropped the `text_model` level from `CLIPTextModel` (not from `CLIPTextModelWithProjection`),
    so peft names its modules `encoder.layers...`; AUTOMATIC1111, ComfyUI and transformers 4 look for
    `text_model.encoder.layers...`, and diffusers with transformers 5 reads both.
    """
    if part != "unet" and key.startswith(CLIP_TEXT_MODEL_PARTS):
        return "text_model." + key
    return key


def _checked_embeddings(embeddings: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if set(embeddings) != set(EMBEDDING_KEYS):
        raise ValueError(f"Embeddings must have exactly the keys {EMBEDDING_KEYS}, got {sorted(embeddings)}.")
    rows = {key: tensor.detach().to("cpu").contiguous() for key, tensor in embeddings.items()}
    if any(tensor.ndim != 2 for tensor in rows.values()) or rows["clip_l"].shape[0] != rows["clip_g"].shape[0]:
        raise ValueError("Embeddings clip_l and clip_g must be 2-D with one row per new token, the same count in both.")
    if not all(torch.isfinite(tensor).all() for tensor in rows.values()):
        raise ValueError(
            "Embeddings contain NaN or inf; nothing was exported, export the last good checkpoint instead."
        )
    return rows


def _config_dict(config: Any) -> dict | None:
    if config is None:
        return None
    as_dict = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    # JSON-friendly, as diffusers stores it: sets become sorted lists, enums their values.
    return json.loads(
        json.dumps(as_dict, default=lambda value: sorted(value) if isinstance(value, set) else str(value))
    )


def _file_metadata(
    name: str,
    components: Mapping[str, Mapping[str, torch.Tensor]],
    configs: Mapping[str, dict | None],
    kohya_alphas: Mapping[str, float],
    extra: Mapping[str, str] | None,
) -> dict[str, str]:
    unet_ranks = Counter(tensor.shape[0] for key, tensor in components["unet"].items() if key.endswith("lora_A.weight"))
    unet_alphas = Counter(alpha for module, alpha in kohya_alphas.items() if module.startswith("lora_unet_"))
    metadata = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(unet_ranks.most_common(1)[0][0]),
        "ss_network_alpha": _number(unet_alphas.most_common(1)[0][0]),
        "ss_base_model_version": SDXL_BASE_MODEL_VERSION,
        "ss_v2": "False",
        "ss_output_name": name,
        "ss_training_comment": "",
        "ss_text_encoder_trained": str(any(part in components for part in ("text_encoder", "text_encoder_2"))),
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": MODELSPEC_ARCHITECTURE,
        "modelspec.implementation": "https://github.com/Stability-AI/generative-models",
        "modelspec.title": name,
    }
    for key, value in (extra or {}).items():
        if not isinstance(value, str):
            raise TypeError(
                f"safetensors metadata values must be strings; metadata[{key!r}] is a {type(value).__name__} "
                "(json.dumps or str it first, or build it with training_metadata)."
            )
        metadata[key] = value
    return metadata


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _sdxl_unet_config() -> dict[str, Any]:
    from sdxlab.models import load_architecture

    return load_architecture()["unet"]


def training_exporter(pipe, config, dataset_hash: str, batch_size: int, new_tokens):
    """`export_training` into a folder, with this training's settings and metadata (checkpoints and final files)."""
    import functools

    from sdxlab.train.publish import config_json

    metadata = training_metadata(config_json(config, dataset_hash, batch_size), dataset_hash)
    metadata["ss_learning_rate"] = str(config.learning_rate)  # as given, not as train_config.json rounds it
    return functools.partial(
        export_training,
        pipe=pipe,
        name=config.lora_name,
        text_encoders=config.text_encoder,
        new_tokens=new_tokens,
        metadata=metadata,
    )
