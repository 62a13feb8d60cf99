"""Which proposers a search uses, by name: "vocabulary" (offline), "local_lm" (transformers), "endpoint"
(OpenAI-compatible). The one module that knows every proposer: `language_models` builds on `proposers` (the
interface and the offline proposer), and neither needs to know the other's classes to be built."""

from __future__ import annotations

from collections.abc import Sequence

from sdxlab.prompt_search.language_models import EndpointProposer, LocalLMProposer
from sdxlab.prompt_search.proposers import Proposer, ProposerError, VocabularyProposer

PROPOSERS = ("vocabulary", "local_lm", "endpoint")  # the names search_proposers allows


def make_proposers(
    names: Sequence[str],
    *,
    lm_model: str | None = None,
    lm_max_new_tokens: int = 96,
    lm_allow_pickle: bool = False,
    endpoint_url: str | None = None,
    endpoint_model: str | None = None,
    endpoint_api_key_env: str | None = None,
    endpoint_timeout_s: float = 60.0,
    endpoint_retries: int = 2,
    device: str = "auto",
) -> list[Proposer]:
    """Proposers by name: "vocabulary" (offline), "local_lm" (transformers) and "endpoint" (OpenAI-compatible)."""
    proposers: list[Proposer] = []
    for name in names:
        if name == "vocabulary":
            proposers.append(VocabularyProposer())
        elif name == "local_lm":
            if not lm_model:
                raise ProposerError(
                    "The local_lm proposer needs search_lm_model: a hub id (e.g. gpt2) or a local model folder."
                )
            proposers.append(
                LocalLMProposer(lm_model, device=device, max_new_tokens=lm_max_new_tokens, allow_pickle=lm_allow_pickle)
            )
        elif name == "endpoint":
            if not endpoint_url or not endpoint_model:
                raise ProposerError(
                    "The endpoint proposer needs search_endpoint_url (e.g. http://127.0.0.1:8000/v1) and search_endpoint_model."
                )
            proposers.append(
                EndpointProposer(
                    endpoint_url,
                    endpoint_model,
                    api_key_env=endpoint_api_key_env,
                    timeout_s=endpoint_timeout_s,
                    retries=endpoint_retries,
                )
            )
        else:
            raise ProposerError(f"Unknown proposer '{name}'; valid proposers: {', '.join(PROPOSERS)}.")
    if not proposers:
        raise ProposerError(f"No proposer chosen; pick at least one of {', '.join(PROPOSERS)}.")
    return proposers
