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

from sdxlab.lazy import lazy_exports

# name -> module it lives in; imported on first use (sdxlab.lazy says why)
_EXPORTS = {
    "CSV_COLUMNS": "outputs",
    "GeneratedImage": "sampler",
    "SAMPLES_CSV": "outputs",
    "SCHEDULERS": "sampler",
    "Sampler": "sampler",
    "checkpoint_grid": "plots",
    "checkpoint_loras": "checkpoints",
    "fill_subject": "prompts",
    "format_parameters": "infotext",
    "generate_per_checkpoint": "checkpoints",
    "lora_scale_grid": "plots",
    "make_scheduler": "sampler",
    "parse_parameters": "infotext",
    "prompt_seed_grid": "plots",
    "read_parameters": "infotext",
    "read_samples": "outputs",
    "save_grid": "outputs",
    "save_samples": "outputs",
    "why_no_checkpoint_samples": "checkpoints",
    "write_png": "infotext",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
