"""The sample stage (03_sample): batch generation with the trained LoRA, parameters stored in every PNG, grids.

- `sampler`: `Sampler` (a loaded pipeline: base model, LoRA, pivotal embeddings) and `GeneratedImage`.
- `prompts`: `fill_subject`, `{subject}` and the subject token in prompts.
- `infotext`: the AUTOMATIC1111 `parameters` text chunk, written into and read back from PNGs.
- `outputs`: `save_samples` (PNGs + samples.csv), `save_grid`.
- `plots`: the labelled grids (`prompt_seed_grid`, `lora_scale_grid`, `checkpoint_grid`).
- `checkpoints`: the same prompts with the LoRA of each training checkpoint (likeness over training).
- `cuda_graphs`: an optional UNet replayed from CUDA graphs (GPU only, off by default).
- `playground`: the interactive prompt panel (ipywidgets; imported by 03 only when shown).
"""

from sdxlab.sample.checkpoints import checkpoint_loras, generate_per_checkpoint, why_no_checkpoint_samples
from sdxlab.sample.infotext import format_parameters, parse_parameters, read_parameters, write_png
from sdxlab.sample.outputs import CSV_COLUMNS, SAMPLES_CSV, read_samples, save_grid, save_samples
from sdxlab.sample.plots import checkpoint_grid, lora_scale_grid, prompt_seed_grid
from sdxlab.sample.prompts import fill_subject
from sdxlab.sample.sampler import SCHEDULERS, GeneratedImage, Sampler, make_scheduler

__all__ = [
    "CSV_COLUMNS",
    "SAMPLES_CSV",
    "SCHEDULERS",
    "GeneratedImage",
    "Sampler",
    "checkpoint_grid",
    "checkpoint_loras",
    "fill_subject",
    "format_parameters",
    "generate_per_checkpoint",
    "lora_scale_grid",
    "make_scheduler",
    "parse_parameters",
    "prompt_seed_grid",
    "read_parameters",
    "read_samples",
    "save_grid",
    "save_samples",
    "why_no_checkpoint_samples",
    "write_png",
]
