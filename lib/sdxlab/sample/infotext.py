"""Generation parameters stored inside each PNG, in the text format AUTOMATIC1111 writes ("infotext").

A PNG gets one `parameters` text chunk, written as AUTOMATIC1111 itself writes it for the same picture:

    a photo of sks person on the moon <lora:sdxlab_lora_kohya:0.8>
    Negative prompt: blurry
    Steps: 30, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 5.0, Seed: 7, Size: 1024x1024,
    Model hash: 31e35c80fc, Model: ..., Lora hashes: "sdxlab_lora_kohya: 0123456789ab", Lora: ..., Version: sdxlab ...

- `<lora:NAME:WEIGHT>` in the prompt: AUTOMATIC1111 and ComfyUI re-apply a LoRA only from this tag. NAME is the
  file A1111 would load: the kohya file next to an sdxlab diffusers LoRA, otherwise the loaded file's name.
- `Lora hashes`: A1111's short hash of that file (`lora_short_hash`), so A1111 finds the file under any name.
- `Model hash`: A1111's short hash of the checkpoint (`model_short_hash`), only when the base model is one
  file; A1111 loads only single-file checkpoints, so a diffusers folder or a hub id gets no hash and A1111
  keeps its current checkpoint (`Model` still names it).
- `Schedule type` always: A1111 1.9+ reads `DPM++ 2M` without one as Karras. sdxlab's non-Karras schedules
  space the model's timesteps evenly (diffusers' spacing from the model's scheduler config), which A1111 calls
  `Uniform`; `dpmpp_2m_karras` is `Karras`.

`read_parameters` returns sdxlab's parameter names, enough to re-create the image with `Sampler.recreate`: the
LoRA tag sdxlab appended is taken off the prompt again. Values holding a comma, a colon or a new line are
JSON-quoted, as AUTOMATIC1111 quotes them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from sdxlab.files import write_image

PNG_KEY = "parameters"  # the text chunk AUTOMATIC1111 writes and reads
NEGATIVE_PREFIX = "Negative prompt:"

# sdxlab scheduler name -> (AUTOMATIC1111 sampler, AUTOMATIC1111 schedule type)
A1111_SAMPLERS: dict[str, tuple[str, str]] = {
    "euler": ("Euler", "Uniform"),
    "euler_a": ("Euler a", "Uniform"),
    "dpmpp_2m": ("DPM++ 2M", "Uniform"),
    "dpmpp_2m_karras": ("DPM++ 2M", "Karras"),
}
# What A1111 1.9+ uses for "Schedule type: Automatic" (or none written by A1111 itself), per sampler.
A1111_AUTOMATIC_SCHEDULE = {"DPM++ 2M": "Karras"}
SDXLAB_VERSION_PREFIX = "sdxlab"  # the `Version` field of files sdxlab wrote
# The tag sdxlab appends to the prompt for A1111 and ComfyUI (the last thing in the prompt).
APPENDED_LORA_TAG = re.compile(r"\s*<lora:([^:<>]+):([-+]?[\d.]+(?:e[-+]?\d+)?)>\Z")

# One `Key: value` pair of the last line; the value is JSON-quoted or runs to the next comma (AUTOMATIC1111's own pattern).
FIELD = re.compile(r'\s*(\w[\w \-/+]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def format_parameters(params: dict[str, Any]) -> str:
    """The AUTOMATIC1111 infotext of one image's parameters (sdxlab's names, see `Sampler.generate`)."""
    sampler, schedule = A1111_SAMPLERS.get(params["scheduler"], (params["scheduler"], None))
    lora_name = (params.get("lora_name") or Path(params["lora_file"]).stem) if params.get("lora_file") else None
    lora_hashes = f"{_hash_label(lora_name)}: {params['lora_hash']}" if lora_name and params.get("lora_hash") else None
    fields: dict[str, Any] = {
        "Steps": params["steps"],
        "Sampler": sampler,
        "Schedule type": schedule,
        "CFG scale": params["guidance"],
        "Seed": params["seed"],
        "Size": f"{params['width']}x{params['height']}",
        "Model hash": params.get("model_hash") or None,
        "Model": params.get("model"),
        "Lora hashes": lora_hashes,
        "Lora": params.get("lora_file") or None,
        "Lora scale": params.get("lora_scale") if params.get("lora_file") else None,
        "Lora checkpoint": params.get("checkpoint") or None,
        # as AUTOMATIC1111 writes them: only for batches, so a picture can be re-made with the same float rounding
        "Batch size": params.get("batch_size") if (params.get("batch_size") or 1) > 1 else None,
        "Batch pos": params.get("batch_pos") if (params.get("batch_size") or 1) > 1 else None,
        "Version": f"sdxlab {_version()}",
    }
    last_line = ", ".join(f"{key}: {_quote(value)}" for key, value in fields.items() if value not in (None, ""))
    prompt = params["prompt"]
    if lora_name:  # as A1111 users write it; the weight is the LoRA scale the picture was drawn with
        prompt = f"{prompt} <lora:{lora_name}:{float(params.get('lora_scale', 1.0)):g}>"
    lines = [prompt]
    if params.get("negative_prompt"):
        lines.append(f"{NEGATIVE_PREFIX} {params['negative_prompt']}")
    lines.append(last_line)
    return "\n".join(lines)


def parse_parameters(text: str) -> dict[str, Any]:
    """Read an infotext back into sdxlab's parameter names.

    Fields sdxlab does not know (from other tools) are kept under their own names in `extra`. A sampler sdxlab
    cannot reproduce gives `scheduler = None` and keeps the original name in `sampler`.
    """
    lines = text.strip().split("\n")
    fields: dict[str, str] = {}
    if lines and len(FIELD.findall(lines[-1])) >= 3:  # AUTOMATIC1111's test for "this is the parameters line"
        fields = {key.strip(): _unquote(value.strip()) for key, value in FIELD.findall(lines.pop())}
    prompt_lines, negative_lines = [], []
    for line in lines:
        if line.strip().startswith(NEGATIVE_PREFIX) or negative_lines:
            negative_lines.append(line.strip()[len(NEGATIVE_PREFIX) :].strip() if not negative_lines else line)
        else:
            prompt_lines.append(line)
    prompt = "\n".join(prompt_lines).strip()
    lora_name = None
    tag = APPENDED_LORA_TAG.search(prompt) if fields.get("Version", "").startswith(SDXLAB_VERSION_PREFIX) else None
    if tag and fields.get("Lora"):  # the tag sdxlab appended for other tools; sdxlab's prompt is the text before it
        prompt, lora_name = prompt[: tag.start()], tag.group(1)
    params: dict[str, Any] = {"prompt": prompt, "negative_prompt": "\n".join(negative_lines).strip()}
    known = {
        "Steps",
        "Sampler",
        "Schedule type",
        "CFG scale",
        "Seed",
        "Size",
        "Model",
        "Lora",
        "Lora scale",
        "Lora checkpoint",
        "Batch size",
        "Batch pos",
        "Version",
    }
    if "Steps" in fields:
        params["steps"] = int(fields["Steps"])
    if "CFG scale" in fields:
        params["guidance"] = float(fields["CFG scale"])
    if "Seed" in fields:
        params["seed"] = int(fields["Seed"])
    if "Size" in fields:
        width, _, height = fields["Size"].partition("x")
        params["width"], params["height"] = int(width), int(height)
    if "Sampler" in fields:
        params["sampler"] = fields["Sampler"]
        params["scheduler"] = _scheduler_name(fields["Sampler"], fields.get("Schedule type"))
    params["model"] = fields.get("Model")
    params["model_hash"] = fields.get("Model hash")
    hashes = parse_lora_hashes(fields.get("Lora hashes", ""))
    params["lora_name"] = lora_name
    params["lora_hash"] = hashes.get(_hash_label(lora_name)) if lora_name else None
    params["lora_file"] = fields.get("Lora") or ""
    params["lora_scale"] = (
        float(fields["Lora scale"]) if "Lora scale" in fields else (1.0 if params["lora_file"] else 0.0)
    )
    params["checkpoint"] = fields.get("Lora checkpoint") or ""
    params["batch_size"] = int(fields.get("Batch size", 1))
    params["batch_pos"] = int(fields.get("Batch pos", 0))
    params["extra"] = {key: value for key, value in fields.items() if key not in known}
    return params


def parse_lora_hashes(text: str) -> dict[str, str]:
    """`Lora hashes: "a: 0123456789ab, b: ..."` as a dict, the way A1111's Lora extension reads it back."""
    pairs = [item.split(":", 1) for item in text.split(",") if ":" in item]
    return {name.strip(): value.strip() for name, value in pairs}


def lora_short_hash(path: str | os.PathLike) -> str:
    """AUTOMATIC1111's hash of a LoRA file, its first 12 hex digits (what `Lora hashes` holds).

    As A1111's Lora extension computes it (`extensions-builtin/Lora/network.py`, `modules/hashes.py`): for a
    .safetensors file the `sshs_model_hash` metadata when the file carries it, else the sha256 of the bytes
    after the safetensors header (kohya's "addnet" hash, unchanged by metadata edits); for other files the
    sha256 of the whole file.
    """
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        return _sha256(path)[:12]
    with open(path, "rb") as handle:
        header_size = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(header_size) or b"{}")
        stored = (header.get("__metadata__") or {}).get("sshs_model_hash")
        if stored:
            return str(stored)[:12]
        digest = hashlib.sha256()
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:12]


def model_short_hash(path: str | os.PathLike) -> str:
    """AUTOMATIC1111's short hash of a single-file checkpoint: the first 10 hex digits of the file's sha256."""
    return _sha256(Path(path))[:10]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _hash_label(name: str) -> str:
    """A LoRA's name as A1111 writes it in `Lora hashes` (':' and ',' removed, they separate the entries)."""
    return name.replace(":", "").replace(",", "")


def write_png(target: str | os.PathLike, image, params: dict[str, Any]) -> Path:
    """Save `image` as a PNG carrying its parameters (atomically)."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(PNG_KEY, format_parameters(params))  # PIL switches to an iTXt chunk for non-Latin-1 text
    return write_image(target, image, pnginfo=info)


def read_parameters(png_path: str | os.PathLike) -> dict[str, Any]:
    """The generation parameters stored in a PNG (written by sdxlab or by AUTOMATIC1111)."""
    from PIL import Image

    with Image.open(png_path) as image:
        text = (getattr(image, "text", None) or image.info).get(PNG_KEY)
    if text is None:
        raise ValueError(
            f"{png_path} has no '{PNG_KEY}' text chunk, so its generation parameters are unknown; "
            "it was not written by sdxlab or AUTOMATIC1111 (or an editor stripped the metadata)."
        )
    return parse_parameters(text)


def _scheduler_name(sampler: str, schedule: str | None) -> str | None:
    """sdxlab's scheduler for an A1111 sampler and schedule type (None when sdxlab cannot reproduce it).

    No schedule type: a file from before A1111 1.9 (and from sdxlab before it wrote one), where "DPM++ 2M" meant
    the plain schedule. "Automatic": A1111 1.9+'s default for that sampler (Karras for DPM++ 2M).
    """
    if sampler.endswith(" Karras"):  # AUTOMATIC1111 before 1.9 wrote "DPM++ 2M Karras" as one name
        sampler, schedule = sampler[: -len(" Karras")], "Karras"
    if schedule == "Automatic":
        schedule = A1111_AUTOMATIC_SCHEDULE.get(sampler, "Uniform")
    for name, (a1111_sampler, a1111_schedule) in A1111_SAMPLERS.items():
        if sampler == a1111_sampler and (schedule or "Uniform") == a1111_schedule:
            return name
    return None


def _quote(value: Any) -> str:
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if any(char in text for char in ',:\n"') else text


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text
    return text


def _version() -> str:
    from sdxlab import __version__

    return __version__
