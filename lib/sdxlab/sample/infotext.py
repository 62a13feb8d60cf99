"""Generation parameters stored inside each PNG, in the text format AUTOMATIC1111 writes ("infotext").

A PNG gets one `parameters` text chunk:

    a photo of sks person on the moon
    Negative prompt: blurry
    Steps: 30, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 5.0, Seed: 7, Size: 1024x1024, Model: ...

AUTOMATIC1111, Forge, ComfyUI's loaders and image browsers read it back; so does `read_parameters`, which
returns sdxlab's parameter names, enough to re-create the image with `Sampler.recreate`. Values holding a
comma, a colon or a new line are JSON-quoted, as AUTOMATIC1111 quotes them.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from sdxlab.files import write_image

PNG_KEY = "parameters"  # the text chunk AUTOMATIC1111 writes and reads
NEGATIVE_PREFIX = "Negative prompt:"

# sdxlab scheduler name -> (AUTOMATIC1111 sampler, AUTOMATIC1111 schedule type or None)
A1111_SAMPLERS: dict[str, tuple[str, str | None]] = {
    "euler": ("Euler", None),
    "euler_a": ("Euler a", None),
    "dpmpp_2m": ("DPM++ 2M", None),
    "dpmpp_2m_karras": ("DPM++ 2M", "Karras"),
}

# One `Key: value` pair of the last line; the value is JSON-quoted or runs to the next comma (AUTOMATIC1111's own pattern).
FIELD = re.compile(r'\s*(\w[\w \-/+]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def format_parameters(params: dict[str, Any]) -> str:
    """The AUTOMATIC1111 infotext of one image's parameters (sdxlab's names, see `Sampler.generate`)."""
    sampler, schedule = A1111_SAMPLERS.get(params["scheduler"], (params["scheduler"], None))
    fields: dict[str, Any] = {
        "Steps": params["steps"],
        "Sampler": sampler,
        "Schedule type": schedule,
        "CFG scale": params["guidance"],
        "Seed": params["seed"],
        "Size": f"{params['width']}x{params['height']}",
        "Model": params.get("model"),
        "Lora": params.get("lora_file") or None,
        "Lora scale": params.get("lora_scale") if params.get("lora_file") else None,
        "Lora checkpoint": params.get("checkpoint") or None,
        # as AUTOMATIC1111 writes them: only for batches, so a picture can be re-made with the same float rounding
        "Batch size": params.get("batch_size") if (params.get("batch_size") or 1) > 1 else None,
        "Batch pos": params.get("batch_pos") if (params.get("batch_size") or 1) > 1 else None,
        "Version": f"sdxlab {_version()}",
    }
    last_line = ", ".join(f"{key}: {_quote(value)}" for key, value in fields.items() if value not in (None, ""))
    lines = [params["prompt"]]
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
            negative_lines.append(line.strip()[len(NEGATIVE_PREFIX):].strip() if not negative_lines else line)
        else:
            prompt_lines.append(line)
    params: dict[str, Any] = {"prompt": "\n".join(prompt_lines).strip(), "negative_prompt": "\n".join(negative_lines).strip()}
    known = {"Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size", "Model", "Lora", "Lora scale",
             "Lora checkpoint", "Batch size", "Batch pos", "Version"}
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
    params["lora_file"] = fields.get("Lora") or ""
    params["lora_scale"] = float(fields["Lora scale"]) if "Lora scale" in fields else (1.0 if params["lora_file"] else 0.0)
    params["checkpoint"] = fields.get("Lora checkpoint") or ""
    params["batch_size"] = int(fields.get("Batch size", 1))
    params["batch_pos"] = int(fields.get("Batch pos", 0))
    params["extra"] = {key: value for key, value in fields.items() if key not in known}
    return params


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
        raise ValueError(f"{png_path} has no '{PNG_KEY}' text chunk, so its generation parameters are unknown; "
                         "it was not written by sdxlab or AUTOMATIC1111 (or an editor stripped the metadata).")
    return parse_parameters(text)


def _scheduler_name(sampler: str, schedule: str | None) -> str | None:
    if sampler.endswith(" Karras"):  # AUTOMATIC1111 before 1.9 wrote "DPM++ 2M Karras" as one name
        sampler, schedule = sampler[: -len(" Karras")], "Karras"
    for name, (a1111_sampler, a1111_schedule) in A1111_SAMPLERS.items():
        if sampler == a1111_sampler and (schedule in (None, "Automatic") and a1111_schedule is None or schedule == a1111_schedule):
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
