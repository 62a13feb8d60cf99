"""Proposers: where new prompts come from. All of them answer one question through one interface:
"given the intent and the best prompts so far with their scores, what should we try next?"

- `VocabularyProposer` works offline with no model: it mutates and crosses the best prompts so far with a
  vocabulary of prompt parts (setting, style, medium, lighting, framing, mood, detail).
- `LocalLMProposer` and `EndpointProposer` (in `language_models.py`) ask a language model for revisions.

Whatever a proposer returns goes through `clean_proposal` in the search loop (length limit, subject token
kept, malformed text skipped), so a proposer may return garbage without breaking anything.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol

from sdxlab.prompt_search.objective import TOTAL, Intent, subject_prompt
from sdxlab.prompt_search.vocabulary import (
    PROMPT_PARTS,
    Part,
    category_of,
    has_subject,
    join_parts,
    normalise,
    prompt_key,
    split_parts,
)

CLIP_TOKEN_LIMIT = 75  # CLIP reads 77 tokens, two of which are the start and end markers


@dataclass(frozen=True)
class ScoredPrompt:
    """A prompt tried by the search: its scores are means over the fixed search seeds."""

    prompt: str
    scores: Mapping[str, float]
    round: int = 0
    proposer: str = ""
    recipe: Any = None  # sdxlab.prompt_search.recipe.Recipe when the search also searches the recipe

    @property
    def total(self) -> float:
        return float(self.scores[TOTAL])

    @property
    def key(self) -> tuple:
        """What makes a candidate: its prompt and its recipe (the same prompt with another guidance is another)."""
        return (self.prompt, self.recipe)


@dataclass
class ProposalContext:
    """Everything a proposer may look at: what is wanted, what was tried, and a seeded random source."""

    intent: Intent
    history: list[ScoredPrompt]  # every prompt tried for this intent
    round_index: int
    rng: random.Random
    top_k: int = 4
    score_names: list[str] = field(default_factory=list)
    weights: dict[str, float] = field(default_factory=dict)  # each term's weight in the total (empty: unknown)
    feedback: list[str] = field(default_factory=list)  # sentences about the best prompt's pictures (weakest part)

    def best(self, count: int | None = None) -> list[ScoredPrompt]:
        """The best prompts so far, best first (ties broken by the earlier round)."""
        ranked = sorted(self.history, key=lambda item: (-item.total, item.round))
        return ranked[: count or self.top_k]

    def tried(self) -> set[str]:
        return {prompt_key(item.prompt) for item in self.history}


class Proposer(Protocol):
    name: str

    def propose(self, context: ProposalContext, count: int) -> list[str]:
        """Up to `count` new prompt texts (raw; the loop cleans them). May return fewer, never raises for bad luck."""
        ...


class ProposerError(RuntimeError):
    """A proposer cannot work at all (model not found, bad endpoint settings): the message says what to do."""


# --- cleaning ----------------------------------------------------------------------------------------------

NUMBERING = re.compile(r"^\s*(?:[-*•>]+|\(?\d{1,2}[.):\]]|prompt\s*\d*\s*[:.-]|total\s*[\d.]+[^:]*:)\s*", re.IGNORECASE)
THINKING = re.compile(r"<think>.*?(</think>|$)", re.DOTALL | re.IGNORECASE)


def proposal_lines(text: str) -> list[str]:
    """Split a language model's answer into candidate lines (reasoning blocks and code fences removed)."""
    text = THINKING.sub("", text or "")
    return [line for line in text.replace("```", "\n").splitlines() if line.strip()]


def clean_proposal(text: str, intent: Intent, *, token_limit: int = CLIP_TOKEN_LIMIT) -> str | None:
    """A usable prompt made from a proposer's text, or None when the text is malformed.

    Numbering, bullets and quotes are stripped; the subject token is kept (put back in front when a model
    dropped it); the prompt is cut at part boundaries to CLIP's 77-token window (the text encoders ignore
    the rest anyway); A1111 weight syntax "(part:1.2)" is removed, because the sampler (diffusers) reads it as
    literal text, not as a weight.
    """
    text = "".join(character for character in str(text) if character.isprintable() and character != "\ufffd")
    text = NUMBERING.sub("", text.strip())
    text = text.strip().strip("\"'`“”‘’").strip()
    if not text or text.endswith(":"):
        return None  # empty, or a heading such as "Here are five prompts:"
    visible = [character for character in text if not character.isspace()]
    letters = sum(character.isalpha() for character in visible)
    if letters < 0.6 * len(visible) or len(re.findall(r"[A-Za-z]{2,}", text)) < 3:
        return None  # symbols, numbers or a word or two: not a prompt
    if text.count("(") != text.count(")"):
        text = text.replace("(", "").replace(")", "")
    parts = [Part(part.text) for part in split_parts(text)]
    text = subject_prompt(join_parts(parts), intent.subject_token, intent.class_word)
    text = fit_token_limit(text, token_limit)
    return text if text and has_subject(text, intent.subject_token) else None


def fit_token_limit(prompt: str, token_limit: int = CLIP_TOKEN_LIMIT) -> str:
    """Drop trailing parts (then trailing words) until the prompt fits CLIP's window."""
    parts = split_parts(prompt)
    while len(parts) > 1 and clip_token_count(join_parts(parts)) > token_limit:
        parts.pop()
    text = join_parts(parts)
    words = text.split()
    while len(words) > 1 and clip_token_count(" ".join(words)) > token_limit:
        words.pop()
    return " ".join(words)


@lru_cache(maxsize=1)
def _clip_tokenizer():
    """SDXL's CLIP tokenizer, for counting prompt length; one private copy for the whole process."""
    from sdxlab.models import clip_tokenizer

    tokenizer = clip_tokenizer(pad_token="!")
    tokenizer.model_max_length = 1_000_000  # counting long texts is the point; no "longer than 77" warnings
    return tokenizer


@lru_cache(maxsize=4096)
def clip_token_count(text: str) -> int:
    """How many CLIP tokens a prompt takes, without the start and end markers."""
    return len(_clip_tokenizer()(text, add_special_tokens=False, truncation=False)["input_ids"])


# --- the offline vocabulary proposer -------------------------------------------------------------------------

# No "reweight" mutation: diffusers reads "(part:1.2)" as literal text and the sampler has no prompt-weight
# support (compel would have to be wired into the sampler and recorded in every PNG), so a weight would only
# add brackets and digits to the prompt.
MUTATIONS = {"add": 0.4, "swap": 0.3, "drop": 0.18, "reorder": 0.12}


class VocabularyProposer:
    """Evolves the best prompts so far with a vocabulary of prompt parts; needs no model and no network.

    Each new prompt is either a fresh one (the person's own words plus 2-4 random parts of different kinds:
    `bench/bench_prompt_search.py` shows that one-part edits alone climb too slowly at small budgets), a
    crossover of two good prompts (for every kind of part, take one parent's choice) or a mutation of one: add a part, drop one, swap one for another of its kind, or move one. The person's own words (the intent) are never dropped, and the part naming the
    subject never moves, so every candidate still asks for the same thing.
    """

    name = "vocabulary"

    def __init__(
        self,
        vocabulary: Mapping[str, Sequence[str]] | None = None,
        crossover_rate: float = 0.3,
        explore_rate: float = 0.25,
    ) -> None:
        self.vocabulary = {category: tuple(words) for category, words in (vocabulary or PROMPT_PARTS).items()}
        self.crossover_rate = crossover_rate
        self.explore_rate = explore_rate  # share of fresh prompts: your own words plus 2-4 random parts

    def propose(self, context: ProposalContext, count: int) -> list[str]:
        parents = context.best() or [ScoredPrompt(context.intent.start_prompt, {TOTAL: 0.0})]
        seen = context.tried()
        proposals: list[str] = []
        for _attempt in range(max(count, 1) * 30):
            if len(proposals) >= count:
                break
            child = self._child(parents, context)
            text = join_parts(child)
            key = prompt_key(text)
            if key not in seen and has_subject(text, context.intent.subject_token):
                seen.add(key)
                proposals.append(text)
        return proposals

    # Parents are picked with probability falling with their rank: the best is tried most, the rest still get a turn.
    def _pick(self, parents: list[ScoredPrompt], rng: random.Random) -> list[Part]:
        chosen = rng.choices(parents, weights=[1.0 / (rank + 1) for rank in range(len(parents))])[0]
        return split_parts(chosen.prompt)

    def _child(self, parents: list[ScoredPrompt], context: ProposalContext) -> list[Part]:
        rng = context.rng
        if rng.random() < self.explore_rate:  # a fresh start: one-part edits alone climb too slowly (bench)
            child = split_parts(context.intent.start_prompt)
            for category in rng.sample(list(self.vocabulary), min(len(self.vocabulary), rng.randint(2, 4))):
                part = self._new_part(child, rng, category)
                if part is not None:
                    child.append(part)
            return child
        if len(parents) >= 2 and rng.random() < self.crossover_rate:
            first, second = rng.sample(range(len(parents)), 2)
            child = self.crossover(split_parts(parents[first].prompt), split_parts(parents[second].prompt), context)
            return self.mutate(child, context) if rng.random() < 0.5 else child
        child = self._pick(parents, rng)
        for _ in range(rng.choice((1, 1, 2))):
            child = self.mutate(child, context)
        return child

    def _protected(self, context: ProposalContext) -> set[str]:
        intent = context.intent
        own_words = split_parts(subject_prompt(intent.text, intent.subject_token, intent.class_word))
        return {part.key for part in own_words + split_parts(intent.start_prompt)}

    def mutate(self, parts: list[Part], context: ProposalContext) -> list[Part]:
        """One random edit: add, drop, swap or reorder a part."""
        rng, parts = context.rng, list(parts)
        anchor = next((i for i, part in enumerate(parts) if has_subject(part.text, context.intent.subject_token)), 0)
        protected = self._protected(context)
        droppable = [i for i, part in enumerate(parts) if i != anchor and part.key not in protected]
        movable = [i for i in range(len(parts)) if i != anchor]
        kinds = dict(MUTATIONS)
        if not droppable:
            kinds.pop("drop"), kinds.pop("swap")
        if len(movable) < 2:
            kinds.pop("reorder")
        kind = rng.choices(list(kinds), weights=list(kinds.values()))[0]
        if kind == "add":
            part = self._new_part(parts, rng)
            if part is not None:
                parts.insert(rng.randint(anchor + 1, len(parts)), part)
        elif kind == "drop":
            del parts[rng.choice(droppable)]
        elif kind == "swap":
            index = rng.choice(droppable)
            category = category_of(parts[index], self.vocabulary)
            replacement = self._new_part(parts, rng, category)
            if replacement is not None:
                parts[index] = replacement
        else:
            source, target = rng.sample(movable, 2)
            parts.insert(target, parts.pop(source))
        return parts

    def crossover(self, first: list[Part], second: list[Part], context: ProposalContext) -> list[Part]:
        """The first parent's own words, then for each kind of part one parent's choice (or none)."""
        rng = context.rng
        protected = self._protected(context)
        child = [
            part for part in first if part.key in protected or has_subject(part.text, context.intent.subject_token)
        ]
        present = {part.key for part in child}
        for category in self.vocabulary:
            options = [part for part in first + second if category_of(part, self.vocabulary) == category]
            if options and rng.random() < (1.0 if len(options) > 1 else 0.6):
                choice = rng.choice(options)
                if choice.key not in present:
                    child.append(choice)
                    present.add(choice.key)
        # words a language model or the person added that the vocabulary does not know
        for part in first + second:
            if part.key not in present and category_of(part, self.vocabulary) is None and rng.random() < 0.5:
                child.append(part)
                present.add(part.key)
        return child

    def _new_part(self, parts: list[Part], rng: random.Random, category: str | None = None) -> Part | None:
        present = {part.key for part in parts}
        used = {category_of(part, self.vocabulary) for part in parts}
        if category is None:
            # favour kinds of part the prompt does not have yet: one lighting word is useful, five are noise
            categories = list(self.vocabulary)
            category = rng.choices(categories, weights=[0.25 if name in used else 1.0 for name in categories])[0]
        words = [word for word in self.vocabulary.get(category, ()) if normalise(word) not in present]
        if not words:
            words = [word for group in self.vocabulary.values() for word in group if normalise(word) not in present]
        return Part(rng.choice(words)) if words else None


# --- what language models are asked ---------------------------------------------------------------------------


TERM_ADVICE = {
    "clip_t": "make the picture show more clearly what the person asked for: name each part of the request "
    "plainly and drop words that pull elsewhere",
    "likeness": "keep the person's face visible, large enough and recognisable (framing, light on the face); "
    "styles that repaint the face lose likeness",
    "face_found": "make sure a face is clearly visible in the picture",
    "copy": "move away from a plain selfie like the training photos: change setting, pose and framing",
}


def weakest_term(context: ProposalContext) -> tuple[str, float, float] | None:
    """The term in which the best prompt so far lags most behind the best value any prompt reached, weighted
    by the term's weight in the total (OPT2I: ask the model to fix the weakest part). (name, value, best)."""
    best = context.best(1)
    if not best:
        return None
    leader, gaps = best[0], []
    for name in context.score_names:
        weight = context.weights.get(name, 1.0) if context.weights else 1.0
        if not weight or name not in leader.scores:
            continue
        values = [float(item.scores[name]) for item in context.history if name in item.scores]
        reachable = max(values) if weight > 0 else min(values)
        gaps.append(
            (abs(weight) * abs(reachable - float(leader.scores[name])), name, float(leader.scores[name]), reachable)
        )
    if not gaps:
        return None
    gap, name, value, reachable = max(gaps)
    if gap <= 0:  # the leader is best at everything so far: meaning is what a prompt can change most
        name = "clip_t" if "clip_t" in leader.scores else name
        value = reachable = float(leader.scores[name])
    return name, value, reachable


def describe_scores(item: ScoredPrompt, score_names: Sequence[str]) -> str:
    named = ", ".join(f"{name} {item.scores[name]:.3f}" for name in score_names if name in item.scores)
    return f"total {item.total:.3f}" + (f", {named}" if named else "")


def revision_messages(context: ProposalContext, count: int) -> list[dict[str, str]]:
    """The chat request, OPT2I-style: what the intent asks for, the best and the worst prompts so far with
    every sub-score, what each score means, and the instruction to fix the best prompt's weakest part."""
    from sdxlab.prompt_search.objective import TERM_MEANINGS, formula_text

    intent, phrase = context.intent, context.intent.subject_phrase
    best = context.best()
    worst = [item for item in sorted(context.history, key=lambda item: (item.total, item.round)) if item not in best][
        : max(1, context.top_k // 2)
    ]
    listing = lambda items: "\n".join(  # noqa: E731
        f"{rank}. [{describe_scores(item, context.score_names)}] {item.prompt}"
        for rank, item in enumerate(items, start=1)
    )
    system = (
        "You write prompts for Stable Diffusion XL. A fine-tuned model knows one person as "
        f'"{phrase}"; every prompt must contain "{phrase}" exactly. Prompts are comma-separated phrases, '
        "under 60 words. Do not use weights or brackets."
    )
    meanings = "; ".join(
        f"{name}: {TERM_MEANINGS.get(name, 'another score')}" for name in [*context.score_names, TOTAL]
    )
    formula = f" ({formula_text(context.weights)})" if context.weights else ""
    weakest = weakest_term(context)
    fix = ""
    if weakest is not None:
        name, value, reachable = weakest
        reached = f", while another prompt reached {reachable:.3f}" if abs(reachable - value) > 1e-9 else ""
        fix = (
            f"The weakest part of the best prompt is {name} ({value:.3f}{reached}). Fix it: "
            f"{TERM_ADVICE.get(name, 'raise ' + name)}, while keeping what already works.\n"
        )
    user = (
        f"What the person asks for: {intent.alignment_text}\n"
        f"Each prompt below was rendered on fixed seeds and scored; a higher total{formula} is better. "
        f"The scores: {meanings}.\n\n"
        f"Best prompts so far:\n{listing(best)}\n\n"
        + (f"Worst prompts so far (avoid what they do):\n{listing(worst)}\n\n" if worst else "")
        + fix
        + "".join(f"{line}\n" for line in context.feedback)
        + f"Write {count} new prompts that should score a higher total than all of these, different from them. "
        "Answer with the prompts only, one per line, no numbering, no explanations."
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def completion_prompt(context: ProposalContext) -> str:
    """For plain language models without a chat template: a scored list in rising order, to be continued
    with a line that scores higher than any before it (the model writes the prompt after the colon)."""
    ranked = list(reversed(context.best()))
    lines = [
        f"Stable Diffusion prompts for: {context.intent.alignment_text}. "
        f'Every prompt contains "{context.intent.subject_phrase}". Scores: higher is better.'
    ]
    lines += [f"{describe_scores(item, context.score_names)}: {item.prompt}" for item in ranked]
    best = ranked[-1] if ranked else None
    target = (
        {name: min(1.0, best.scores[name] + 0.05) for name in [TOTAL, *context.score_names]} if best else {TOTAL: 1.0}
    )
    target_scores = ScoredPrompt("", target)
    lines.append(f"{describe_scores(target_scores, context.score_names)}:")
    return "\n".join(lines)


# --- choosing proposers by name -------------------------------------------------------------------------------
