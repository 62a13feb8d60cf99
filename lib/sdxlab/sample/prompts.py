"""Prompts with the subject filled in: `{subject}` or the subject token itself stand for the trained person."""

from __future__ import annotations

import re
from collections.abc import Sequence

SUBJECT_PLACEHOLDER = "{subject}"


def subject_identifier(subject_token: str, tokens: Sequence[str] | None = None) -> str:
    """What stands for the subject in a prompt: the pivotal-tuning tokens when the run trained embeddings, else the token.

    The tokens are joined without spaces, as diffusers' advanced SDXL script writes them ("<s0><s1>").
    """
    return "".join(tokens) if tokens else (subject_token or "")


def fill_subject(prompt: str, subject_token: str, class_word: str = "", tokens: Sequence[str] | None = None) -> str:
    """Put the subject into a prompt.

    - `{subject}` becomes the DreamBooth identifier phrase, token plus class word: "a photo of {subject}" ->
      "a photo of sks person" (a class word already written right after it is not doubled).
    - The subject token written as a word ("sks") stays, or becomes the pivotal-tuning tokens when the run
      trained embeddings (`tokens`, e.g. ["<s0>", "<s1>"]), since the bare token means nothing to that model.

    Prompts without either are returned unchanged (useful for base-model comparisons). Filling is idempotent:
    a filled prompt filled again stays the same, so stored prompts re-create their images.
    """
    identifier = subject_identifier(subject_token, tokens)
    filled = prompt
    if tokens and subject_token and subject_token != identifier:
        # whole word only: "sks" but not "asks"; never inside an already inserted "<s0>" style token
        filled = re.sub(rf"(?<![\w<]){re.escape(subject_token)}(?![\w>])", lambda _: identifier, filled)
    if SUBJECT_PLACEHOLDER in filled:
        phrase = " ".join(part for part in (identifier, class_word) if part)
        following_class = rf"(?:\s+{re.escape(class_word)}\b)?" if class_word else ""
        filled = re.sub(re.escape(SUBJECT_PLACEHOLDER) + following_class, lambda _: phrase, filled)
    return filled
