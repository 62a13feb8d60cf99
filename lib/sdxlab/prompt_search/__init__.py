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

from sdxlab.lazy import lazy_exports

# name -> module it lives in; imported on first use (sdxlab.lazy says why)
_EXPORTS = {
    "ImageCache": "evaluation",
    "ImageEvaluator": "evaluation",
    "Intent": "objective",
    "Objective": "objective",
    "ProposalContext": "proposers",
    "ProposerError": "proposers",
    "SamplerGenerator": "evaluation",
    "ScoredPrompt": "proposers",
    "SearchSettings": "search",
    "VocabularyProposer": "proposers",
    "build_objective": "objective",
    "heldout_check": "heldout",
    "heldout_seeds": "heldout",
    "make_proposers": "choose",
    "paired_uplift": "heldout",
    "run_search": "search",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
