"""The prompt playground: an ipywidgets panel to tweak a prompt and hit Generate again and again.

The panel holds one `Sampler`, so the pipeline stays loaded between clicks. While it generates, the Generate
button is disabled and a progress bar counts denoising steps; errors (an empty prompt, running out of GPU
memory, anything else) appear in the panel as one sentence instead of a traceback. Every generation goes
into a history strip; "load" on an entry puts its settings back into the controls.

Widgets need a live frontend (JupyterLab 4 + ipywidgets 8). Executed without one (papermill, nbmake), the
panel is not shown and `show_playground` prints a sentence saying so. Every control carries a stable CSS
class (`sdxlab-prompt`, `sdxlab-generate`, ...) for browser tests and custom styling.
"""

from __future__ import annotations

import html
import io
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ipywidgets as widgets

from sdxlab.sample import SCHEDULERS, GeneratedImage, Sampler, save_samples
from sdxlab.settings.generation import DEFAULTS

NO_FRONTEND_MESSAGE = (
    "Prompt playground: not shown, because this notebook is running without a live frontend (papermill, nbmake). "
    "Open the notebook in JupyterLab (`make lab`) and run it to get the interactive panel."
)
MAX_SEED = 2**31 - 1
# Portrait and landscape sizes with about the native pixel count, as (width, height) relative to a 1024 model.
SIZE_SHAPES = [(1024, 1024), (896, 1152), (1152, 896), (768, 1344), (1344, 768)]


@dataclass
class HistoryEntry:
    """One click's settings and pictures."""

    number: int
    settings: dict[str, Any]
    images: list[GeneratedImage]


def has_live_frontend() -> bool:
    """True when the code runs in a kernel driven by an interactive frontend (JupyterLab, Notebook, VS Code).

    Headless executors (nbclient, used by papermill and nbmake) send `allow_stdin=False` with every request,
    interactive frontends send True; outside a kernel there is no frontend at all.
    """
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    kernel = getattr(shell, "kernel", None)
    if kernel is None:
        return False
    return bool(getattr(kernel, "_allow_stdin", True))


def size_options(native: int) -> list[tuple[str, tuple[int, int]]]:
    """Sizes for a model whose native square side is `native` (multiples of 8, about the native pixel count)."""
    options = []
    for width, height in SIZE_SHAPES:
        size = (_multiple_of_8(width * native / 1024), _multiple_of_8(height * native / 1024))
        if size not in [value for _, value in options]:
            options.append((f"{size[0]}×{size[1]}", size))
    return options


class Playground:
    """The panel. `display(playground)` shows it; `playground.generate()` is what the Generate button runs."""

    def __init__(
        self,
        sampler: Sampler,
        *,
        prompt: str = "",
        negative_prompt: str = DEFAULTS.negative_prompt,
        seed: int = 0,
        steps: int = DEFAULTS.steps,
        guidance: float = DEFAULTS.guidance,
        lora_scale: float = DEFAULTS.lora_scale,
        size: tuple[int, int] | None = None,
        images: int = 1,
        scheduler: str = DEFAULTS.scheduler,
        batch_size: int = DEFAULTS.batch_size,
        save_to: str | os.PathLike | None = None,
        max_history: int = 12,
        note: str = "",
    ):
        self.sampler = sampler
        self.batch_size = batch_size
        self.save_to = Path(save_to) if save_to else None
        self.max_history = max_history
        self.history: list[HistoryEntry] = []
        self.last_seed: int | None = None
        self.busy = False
        self._generations = 0
        self.note = note  # shown under the title, e.g. that a random-weight model only makes noise
        self._build(prompt, negative_prompt, seed, steps, guidance, lora_scale, size, images, scheduler)

    # --- the controls ----------------------------------------------------------------------------------------

    def _build(self, prompt, negative_prompt, seed, steps, guidance, lora_scale, size, images, scheduler) -> None:
        full = widgets.Layout(width="100%")
        self.prompt = _tag(
            widgets.Textarea(
                value=prompt,
                placeholder="a photo of {subject} as an astronaut, cinematic light",
                description="prompt",
                rows=2,
                layout=full,
            ),
            "prompt",
        )
        self.negative_prompt = _tag(
            widgets.Textarea(
                value=negative_prompt, placeholder="blurry, low quality", description="negative", rows=1, layout=full
            ),
            "negative",
        )
        self.seed = _tag(
            widgets.BoundedIntText(
                value=seed, min=0, max=MAX_SEED, description="seed", layout=widgets.Layout(width="220px")
            ),
            "seed",
        )
        self.seed_mode = _tag(
            widgets.ToggleButtons(options=["fixed", "random"], value="fixed", style={"button_width": "80px"}),
            "seed-mode",
        )
        self.reuse_seed_button = _tag(
            widgets.Button(
                description="reuse last seed",
                icon="recycle",
                disabled=True,
                tooltip="put the last generation's first seed back and fix it",
            ),
            "reuse-seed",
        )
        self.steps = _tag(widgets.IntSlider(value=steps, min=1, max=100, description="steps"), "steps")
        self.guidance = _tag(
            widgets.FloatSlider(value=guidance, min=0.0, max=15.0, step=0.5, description="guidance"), "guidance"
        )
        self.lora_scale = _tag(
            widgets.FloatSlider(
                value=lora_scale if self.sampler.lora else 0.0,
                min=0.0,
                max=1.5,
                step=0.05,
                description="LoRA scale",
                disabled=self.sampler.lora is None,
            ),
            "lora-scale",
        )
        native = self.sampler.native_size[0]
        options = size_options(native)
        size = tuple(size) if size else (native, native)
        if size not in [value for _, value in options]:
            options.insert(0, (f"{size[0]}×{size[1]}", size))
        self.size = _tag(widgets.Dropdown(options=options, value=size, description="size"), "size")
        self.image_count = _tag(
            widgets.BoundedIntText(
                value=images, min=1, max=8, description="images", layout=widgets.Layout(width="160px")
            ),
            "count",
        )
        self.scheduler = _tag(
            widgets.Dropdown(options=list(SCHEDULERS), value=scheduler, description="scheduler"), "scheduler"
        )
        self.generate_button = _tag(
            widgets.Button(description="Generate", button_style="primary", icon="play"), "generate"
        )
        self.progress = _tag(widgets.IntProgress(value=0, min=0, max=1, layout=widgets.Layout(width="50%")), "progress")
        self.status = _tag(widgets.HTML(value=self._note(self._ready_text())), "status")
        self.output = _tag(widgets.HBox(layout=widgets.Layout(flex_flow="row wrap")), "output")
        self.history_strip = _tag(widgets.HBox(layout=widgets.Layout(flex_flow="row wrap")), "history")

        self.generate_button.on_click(lambda _button: self.generate())
        self.reuse_seed_button.on_click(lambda _button: self.reuse_last_seed())
        self.panel = _tag(
            widgets.VBox(
                [
                    widgets.HTML(
                        "<b>Prompt playground</b> · <code>{subject}</code> stands for you"
                        + (f" · <i>{html.escape(self.note)}</i>" if self.note else "")
                    ),
                    self.prompt,
                    self.negative_prompt,
                    widgets.HBox([self.seed, self.seed_mode, self.reuse_seed_button]),
                    widgets.HBox([self.steps, self.guidance]),
                    widgets.HBox([self.lora_scale, self.size]),
                    widgets.HBox([self.image_count, self.scheduler]),
                    widgets.HBox([self.generate_button, self.progress]),
                    self.status,
                    self.output,
                    widgets.HTML("<b>History</b> (load puts a generation's settings back)"),
                    self.history_strip,
                ]
            ),
            "playground",
        )

    def _repr_mimebundle_(self, **kwargs):
        bundle = self.panel._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = NO_FRONTEND_MESSAGE  # what a notebook viewer without the live kernel shows
        return bundle

    # --- actions ---------------------------------------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        """The controls' current values (seeds not yet drawn)."""
        width, height = self.size.value
        return {
            "prompt": self.prompt.value,
            "negative_prompt": self.negative_prompt.value,
            "seed": self.seed.value,
            "seed_mode": self.seed_mode.value,
            "steps": self.steps.value,
            "guidance": self.guidance.value,
            "lora_scale": self.lora_scale.value,
            "width": width,
            "height": height,
            "images": self.image_count.value,
            "scheduler": self.scheduler.value,
        }

    def seeds_for(self, settings: dict[str, Any]) -> list[int]:
        """Fixed: seed, seed+1, ...; random: fresh seeds for every image."""
        if settings["seed_mode"] == "random":
            return [random.randint(0, MAX_SEED) for _ in range(settings["images"])]
        return [(settings["seed"] + offset) % (MAX_SEED + 1) for offset in range(settings["images"])]

    def generate(self) -> list[GeneratedImage] | None:
        """Generate with the current settings; show the pictures, add them to the history. None if nothing ran."""
        if self.busy:
            return None
        settings = self.settings()
        if not settings["prompt"].strip():
            self._error("Type a prompt first (for example: a photo of {subject} in the snow).")
            return None
        seeds = self.seeds_for(settings)
        self._set_busy(True, len(seeds) * settings["steps"])
        try:
            images = self.sampler.generate(
                [settings["prompt"]],
                seeds,
                negative_prompt=settings["negative_prompt"],
                steps=settings["steps"],
                guidance=settings["guidance"],
                width=settings["width"],
                height=settings["height"],
                lora_scale=settings["lora_scale"],
                scheduler=settings["scheduler"],
                batch_size=min(self.batch_size, len(seeds)),
                callback=self._on_progress,
                progress=False,
            )
        except Exception as error:  # shown in the panel: a click must never leave a traceback behind
            self._error(_error_sentence(error))
            return None
        finally:
            self._set_busy(False)
        self.last_seed = seeds[0]
        self.reuse_seed_button.disabled = False
        self._generations += 1
        entry = HistoryEntry(
            number=self._generations, settings={**settings, "seed": seeds[0], "seed_mode": "fixed"}, images=images
        )
        self._show(images)
        self._add_history(entry)
        saved = self._save(entry)
        self._note_status(
            f"Done: {len(images)} image(s), seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}. {saved}"
        )
        return images

    def reuse_last_seed(self) -> None:
        """Put the last generation's first seed into the seed box and switch to fixed seeds."""
        if self.last_seed is not None:
            self.seed.value = self.last_seed
            self.seed_mode.value = "fixed"

    def load(self, entry: HistoryEntry) -> None:
        """Put a history entry's settings back into the controls."""
        values = entry.settings
        self.prompt.value, self.negative_prompt.value = values["prompt"], values["negative_prompt"]
        self.seed.value, self.seed_mode.value = values["seed"], "fixed"
        self.steps.value, self.guidance.value = values["steps"], values["guidance"]
        if not self.lora_scale.disabled:
            self.lora_scale.value = values["lora_scale"]
        size = (values["width"], values["height"])
        if size not in [value for _, value in self.size.options]:
            self.size.options = [*self.size.options, (f"{size[0]}×{size[1]}", size)]
        self.size.value = size
        self.image_count.value, self.scheduler.value = values["images"], values["scheduler"]
        self._note_status(f"Loaded the settings of generation #{entry.number}.")

    # --- showing ---------------------------------------------------------------------------------------------

    def _set_busy(self, busy: bool, total_steps: int = 1) -> None:
        self.busy = busy
        self.generate_button.disabled = busy
        self.generate_button.description = "Generating…" if busy else "Generate"
        if busy:
            self.progress.max, self.progress.value = max(total_steps, 1), 0
            self.progress.bar_style = "info"
            self._note_status(f"Generating ({total_steps} denoising steps)…")
        else:
            self.progress.bar_style = ""

    def _on_progress(self, done: int, total: int) -> None:
        self.progress.max, self.progress.value = max(total, 1), min(done, total)

    def _show(self, images: Sequence[GeneratedImage]) -> None:
        self.output.children = [self._picture(item, width=256) for item in images]

    def _picture(self, item: GeneratedImage, width: int) -> widgets.Widget:
        image = _tag(
            widgets.Image(value=_png_bytes(item.image), format="png", layout=widgets.Layout(width=f"{width}px")),
            "image",
        )
        caption = widgets.HTML(f"<small>seed {item.params['seed']}</small>")
        return widgets.VBox([image, caption])

    def _add_history(self, entry: HistoryEntry) -> None:
        self.history.append(entry)
        self.history = self.history[-self.max_history :]
        self.history_strip.children = [self._history_card(item) for item in reversed(self.history)]

    def _history_card(self, entry: HistoryEntry) -> widgets.Widget:
        thumbnail = widgets.Image(
            value=_png_bytes(entry.images[0].image, side=96), format="png", layout=widgets.Layout(width="96px")
        )
        button = widgets.Button(
            description=f"load #{entry.number}", tooltip=entry.settings["prompt"], layout=widgets.Layout(width="96px")
        )
        button.on_click(lambda _button: self.load(entry))
        return _tag(widgets.VBox([thumbnail, button]), "history-entry")

    def _save(self, entry: HistoryEntry) -> str:
        if self.save_to is None:
            return ""
        try:
            save_samples(entry.images, self.save_to, name=f"playground{entry.number:03d}")
        except OSError as error:
            return f"Could not save to {self.save_to} ({error.strerror or error})."
        return f"Saved to …/{'/'.join(self.save_to.parts[-2:])}."

    def _ready_text(self) -> str:
        lora = "with the LoRA" if self.sampler.lora else "base model only (no LoRA loaded)"
        return f"Ready: {lora}. Type a prompt and press Generate."

    def _note(self, text: str) -> str:
        return f"<span class='sdxlab-note'>{html.escape(text)}</span>"

    def _note_status(self, text: str) -> None:
        self.status.value = self._note(text)

    def _error(self, text: str) -> None:
        self.status.value = f"<span class='sdxlab-error' style='color:#b00020'>{html.escape(text)}</span>"


def show_playground(sampler: Sampler, **options: Any) -> Playground:
    """Build the playground and display it, or print why it is not shown when there is no live frontend."""
    from IPython.display import display

    playground = Playground(sampler, **options)
    if has_live_frontend():
        display(playground)
    else:
        print(NO_FRONTEND_MESSAGE)
    return playground


def _error_sentence(error: BaseException) -> str:
    import torch

    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if isinstance(error, torch.OutOfMemoryError) or "out of memory" in text.lower():
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return "Out of GPU memory: generate fewer images at once or pick a smaller size, then press Generate again."
    return f"Generation failed ({type(error).__name__}: {text[:300]})."


def _tag(widget: widgets.Widget, name: str) -> widgets.Widget:
    widget.add_class(f"sdxlab-{name}")
    return widget


def _png_bytes(image, side: int | None = None) -> bytes:
    if side is not None:
        image = image.copy()
        image.thumbnail((side, side))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _multiple_of_8(value: float) -> int:
    return max(8, int(round(value / 8)) * 8)
