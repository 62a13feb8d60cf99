"""sdxlab: fine-tune SDXL on your selfies, generate, measure likeness and alignment, and search prompts.

Notebooks in `notebooks/` drive; this package does the work, one module per stage (see README.md).
"""

__version__ = "0.1.0"
