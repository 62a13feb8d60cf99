"""Prompt search: let the machine do the prompt engineering, scored on meaning and likeness.

- `objective`: what a picture is worth: named terms (meaning, calibrated likeness, face found, copy) and weights.
- `vocabulary`, `proposers`, `language_models`: where new prompts come from (offline vocabulary, local LM,
  OpenAI-compatible endpoint), behind one interface; `choose.make_proposers` builds them by name.
- `evaluation`: prompt + seed -> cached picture -> scores.
- `search`: the loop (rounds, top-k, fixed seeds, budgets, resume from candidates.csv).
- `heldout`: the check on seeds the search never saw: paired t-interval, permutation test, Holm.
- `report`: best_prompts.json, heldout.csv, prompts ready to paste.
- `plots`: the leaderboard, the likeness x meaning front (plot and pictures), the held-out grid.
"""

from sdxlab.prompt_search.choose import make_proposers
from sdxlab.prompt_search.evaluation import ImageCache, ImageEvaluator, SamplerGenerator
from sdxlab.prompt_search.heldout import heldout_check, heldout_seeds, paired_uplift
from sdxlab.prompt_search.objective import Intent, Objective, build_objective
from sdxlab.prompt_search.proposers import (
    ProposalContext,
    ProposerError,
    ScoredPrompt,
    VocabularyProposer,
)
from sdxlab.prompt_search.search import SearchSettings, run_search

__all__ = [
    "ImageCache",
    "ImageEvaluator",
    "Intent",
    "Objective",
    "ProposalContext",
    "ProposerError",
    "SamplerGenerator",
    "ScoredPrompt",
    "SearchSettings",
    "VocabularyProposer",
    "build_objective",
    "heldout_check",
    "heldout_seeds",
    "make_proposers",
    "paired_uplift",
    "run_search",
]
