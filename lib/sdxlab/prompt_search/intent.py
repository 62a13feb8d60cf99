"""Decomposed intent: split what the person asked for into parts, and grade every part on every picture.

One global CLIP score is too coarse to tell "an astronaut, but not on Mars" from "on Mars, but no astronaut"
(OPT2I's finding). Here the intent is split into parts - who, where, doing what, style or medium, lighting,
framing, mood - and each part is scored separately: CLIP's own two-way choice between the part ("a picture on
Mars") and a neutral phrase ("a picture"), so a part the picture lacks scores below 0.5. The parts are combined
with a soft minimum, so one missing part costs more than all parts a little weaker.

- `split_intent(text)`: the deterministic splitter for the common shapes ("a photo of {subject} as an
  astronaut on Mars, cinematic", "a portrait of {subject} painted by Vermeer", "a candid photo of {subject}
  laughing in a cafe, 35mm film"); `split_with_language_model(text, ask)` lets a language model split it
  (any callable prompt -> reply; `endpoint_asker(proposer)` makes one from the search's endpoint proposer),
  falling back to the rules when the reply is unusable.
- `IntentPartsScorer` (registered as "intent_parts"): `columns(images, texts)` gives `intent_parts` (the
  combination) and one `part_<role>` column per role (NaN when the intent has no such part).
- `combine_parts(scores)`: the soft minimum; `weakest_part(rows)`: the role the pictures show least, with a
  sentence for the proposers' feedback.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from sdxlab.settings.common import CLASS_WORD, SUBJECT_TOKEN

ROLES = ("who", "where", "doing", "style", "lighting", "framing", "mood")
SUBJECT = "{subject}"
DEFAULT_TEMPERATURE = 0.1  # of the soft minimum; parts are probabilities in [0, 1]

# Per role: how CLIP reads a part ("{}" = the part's phrase) and the neutral phrase it is weighed against (the
# same text without the part). "who" is weighed against "a picture", so a picture without a person scores low.
TEMPLATES = {
    "who": ("{}", "a picture"),
    "where": ("a picture {}", "a picture"),
    "doing": ("a person {}", "a person"),
    "style": ("a picture, {}", "a picture"),
    "lighting": ("a picture, {}", "a picture"),
    "framing": ("a picture, {}", "a picture"),
    "mood": ("a person, {}", "a person"),
}

LIGHTING_WORDS = (
    "light",
    "lighting",
    "lit",
    "backlit",
    "golden hour",
    "blue hour",
    "sunset",
    "sunrise",
    "dawn",
    "dusk",
    "neon",
    "candlelight",
    "moonlight",
    "chiaroscuro",
    "rim light",
    "softbox",
    "shadows",
    "overcast",
    "low key",
    "high key",
    "low-key",
    "high-key",
)
FRAMING_WORDS = (
    "portrait",
    "close-up",
    "closeup",
    "close up",
    "headshot",
    "full body",
    "full-body",
    "full-length",
    "half-body",
    "half body",
    "wide shot",
    "wide-angle",
    "wide angle",
    "medium shot",
    "long shot",
    "from above",
    "from below",
    "low angle",
    "high angle",
    "aerial",
    "profile",
    "bust",
    "selfie",
    "centered",
    "rule of thirds",
    "symmetrical",
    "bird's-eye",
    "over the shoulder",
)
STYLE_WORDS = (
    "photo",
    "photograph",
    "photography",
    "picture",
    "snapshot",
    "cinematic",
    "film",
    "35mm",
    "50mm",
    "85mm",
    "kodak",
    "polaroid",
    "analog",
    "painting",
    "painted",
    "oil",
    "watercolor",
    "watercolour",
    "acrylic",
    "illustration",
    "drawing",
    "drawn",
    "sketch",
    "charcoal",
    "anime",
    "manga",
    "cartoon",
    "comic",
    "pixar",
    "disney",
    "3d",
    "render",
    "cgi",
    "digital art",
    "concept art",
    "style",
    "art",
    "artwork",
    "vintage",
    "retro",
    "realistic",
    "photorealistic",
    "hyperrealistic",
    "detailed",
    "8k",
    "4k",
    "hdr",
    "bokeh",
    "sharp focus",
    "award-winning",
    "masterpiece",
    "editorial",
    "fashion",
    "baroque",
    "renaissance",
    "impressionist",
    "cubist",
    "surreal",
    "noir",
    "black and white",
    "monochrome",
    "sepia",
    "pastel",
    "vibrant",
    "candid",
    "studio",
    "magazine",
    "poster",
    "mosaic",
    "pixel art",
    "low poly",
    "claymation",
    "statue",
    "sculpture",
    "engraving",
    "woodcut",
    "ukiyo-e",
)
PLACE_PREPOSITIONS = (
    "in",
    "on",
    "at",
    "under",
    "inside",
    "near",
    "beside",
    "by the",
    "across",
    "through",
    "over",
    "above",
    "below",
    "among",
    "amid",
    "underwater",
    "outside",
    "behind",
    "in front of",
    "on top of",
    "against",
    "along",
    "around",
    "into",
    "onto",
    "within",
)
STYLE_LEADS = (
    "in the style of",
    "painted by",
    "drawn by",
    "photographed by",
    "shot by",
    "by",
    "as painted by",
    "in style of",
    "shot on",
    "shot with",
)
CLOTHES = (
    "dress",
    "suit",
    "armor",
    "armour",
    "costume",
    "uniform",
    "coat",
    "jacket",
    "hat",
    "helmet",
    "robe",
    "gown",
    "shirt",
    "sweater",
    "hoodie",
    "tuxedo",
    "kimono",
    "spacesuit",
    "glasses",
    "sunglasses",
    "scarf",
    "cape",
    "outfit",
    "clothes",
    "jeans",
)


@dataclass(frozen=True)
class IntentPart:
    """One part of an intent: its role, its words, and the two texts CLIP weighs against each other."""

    role: str
    phrase: str

    @property
    def query(self) -> str:
        return TEMPLATES[self.role][0].format(self.phrase)

    @property
    def neutral(self) -> str:
        return TEMPLATES[self.role][1]


@dataclass
class IntentParts:
    """The parts of one intent (at most one per role, in `ROLES` order), how they were found, and notes."""

    text: str
    parts: list[IntentPart]
    source: str = "rules"  # "rules" or "language model"
    notes: list[str] = field(default_factory=list)

    def by_role(self) -> dict[str, IntentPart]:
        return {part.role: part for part in self.parts}

    def roles(self) -> list[str]:
        return [part.role for part in self.parts]


# --- the deterministic splitter --------------------------------------------------------------------------------


def _word(word: str) -> str:
    return rf"(?<![\w-]){re.escape(word)}(?![\w-])"


def _contains(text: str, words: Iterable[str]) -> bool:
    return any(re.search(_word(word), text, flags=re.I) for word in words)


def _starts(text: str, leads: Iterable[str]) -> str | None:
    for lead in sorted(leads, key=len, reverse=True):
        if re.match(rf"{re.escape(lead)}\b", text, flags=re.I):
            return lead
    return None


def _modifier_role(segment: str, mood_words: Mapping[str, tuple]) -> str:
    """The role of a comma-separated modifier ("cinematic" -> style, "golden hour" -> lighting, ...)."""
    words = re.findall(r"[a-z]+", segment.lower())
    if words and all(word in mood_words or word in ("and", "very", "slightly") for word in words):
        return "mood"
    if _starts(segment, STYLE_LEADS):
        return "style"
    if _contains(segment, LIGHTING_WORDS):
        return "lighting"
    if _contains(segment, FRAMING_WORDS):
        return "framing"
    if _contains(segment, STYLE_WORDS):
        return "style"
    if _starts(segment, PLACE_PREPOSITIONS):
        return "who" if _contains(segment, CLOTHES) else "where"
    if words and words[0].endswith("ing"):
        return "doing"
    return "style"  # an unknown trailing tag is most often a look ("octane", "trending on artstation")


def _split_tail(tail: str) -> list[tuple[str, str]]:
    """What follows the subject ("as an astronaut on Mars") as (role, phrase) pieces, split at prepositions."""
    leads = sorted(
        set(PLACE_PREPOSITIONS) | set(STYLE_LEADS) | {"as", "dressed as", "wearing", "with", "holding"},
        key=len,
        reverse=True,
    )
    pattern = re.compile(r"\s+(?=(?:" + "|".join(re.escape(lead) for lead in leads) + r")\s)")
    pieces, current = [], ""
    for chunk in pattern.split(" " + tail.strip()):
        chunk = chunk.strip()
        if not chunk:
            continue
        # "painted by Vermeer": "by" continues a style lead that a verb began
        if current and (
            re.match(r"by\s", chunk, flags=re.I)
            and re.search(r"(painted|drawn|photographed|shot)$", current, flags=re.I)
            or re.match(r"of\s", chunk, flags=re.I)
        ):
            current += " " + chunk
            continue
        if current:
            pieces.append(current)
        current = chunk
    if current:
        pieces.append(current)
    out = []
    for piece in pieces:
        if _starts(piece, STYLE_LEADS) or re.match(r"(painted|drawn|photographed|shot) by\b", piece, flags=re.I):
            out.append(("style", piece))
        elif _starts(piece, ("as", "dressed as", "wearing", "with", "holding")):
            out.append(("who", piece))
        elif _contains(piece, LIGHTING_WORDS):
            out.append(("lighting", piece))
        elif _starts(piece, PLACE_PREPOSITIONS):
            out.append(("who" if _contains(piece, CLOTHES) else "where", piece))
        elif re.match(r"[a-z]+ing\b", piece, flags=re.I):
            out.append(("doing", piece))
        else:
            out.append(("who", piece))
    return out


def split_intent(
    text: str, subject_token: str | Sequence[str] = SUBJECT_TOKEN, class_word: str = CLASS_WORD
) -> IntentParts:
    """Split an intent into parts by rules (no model): who, where, doing, style, lighting, framing, mood.

    The person may be written `{subject}`, `sks person` or `sks`; in the parts they become the class word.
    """
    from sdxlab.evaluate.expression import MOOD_WORDS, mood_words

    tokens = [subject_token] if isinstance(subject_token, str) else list(subject_token)
    work = " ".join(text.split())
    work = re.sub(r"\(([^():]+):\s*[-+]?\d*\.?\d+\)", r"\1", work)  # "(word:1.2)" -> "word"
    work = work.replace(SUBJECT, "\0")
    for token in sorted((t for t in tokens if t), key=len, reverse=True):
        work = re.sub(rf"(?<!\w){re.escape(token)}(?:\s+{re.escape(class_word)})?(?!\w)", "\0", work, flags=re.I)
    segments = [segment.strip(" .") for segment in re.split(r"[,;|]|\s+-\s+", work) if segment.strip(" .")]
    pieces: dict[str, list[str]] = {role: [] for role in ROLES}
    notes = []
    main_index = next((i for i, segment in enumerate(segments) if "\0" in segment), 0)
    for index, segment in enumerate(segments):
        if index != main_index and re.match(r"(not|no|never|without)\b", segment, flags=re.I):
            notes.append(f"'{segment}' is not graded: CLIP cannot read a negation; say it in the negative prompt.")
            continue
        if index != main_index:
            segment = segment.replace("\0", class_word)
            kind = _modifier_role(segment, MOOD_WORDS)
            for role, phrase in _split_tail(segment) if kind in ("doing", "where", "who") else [(kind, segment)]:
                pieces[role].append(phrase)
            continue
        head, _, tail = segment.partition("\0") if "\0" in segment else ("", "", segment)
        head = re.sub(r"\b(of|showing|depicting|featuring)\s*$", "", head, flags=re.I).strip()
        # "a close-up oil painting": the framing words are framing, the rest (less mood words) is style
        framing = [word for word in FRAMING_WORDS if re.search(_word(word), head, flags=re.I)]
        rest = head
        for word in framing + [word for word in MOOD_WORDS if re.search(_word(word), head, flags=re.I)]:
            rest = re.sub(_word(word), " ", rest, flags=re.I)
        rest = re.sub(r"^\s*(an?|the)\s+", "", " ".join(rest.split()), flags=re.I).strip()
        if framing:
            pieces["framing"].append(" ".join(dict.fromkeys(framing)))
        if rest and rest.lower() not in ("a", "an", "the"):
            pieces["style"].append(rest)
        tail = tail.replace("\0", class_word).strip()
        tail_pieces = _split_tail(tail) if tail else []
        if "\0" not in segment and tail_pieces and tail_pieces[0][0] == "who":  # no subject: "astronaut on the moon"
            tail_pieces[0] = ("who", "as " + re.sub(r"^(an?|the)\s+", "", tail_pieces[0][1], flags=re.I))
        for role, phrase in tail_pieces:
            pieces[role].append(phrase)
    # mood words anywhere become the mood part; a "doing" that is only a mood word ("laughing") moves there
    moods = mood_words(work)
    if moods:
        pieces["mood"] = [", ".join(dict.fromkeys(moods))]
        for role in ("doing", "style", "who"):
            pieces[role] = [
                p
                for p in pieces[role]
                if not all(w in MOOD_WORDS or w == "and" for w in re.findall(r"[a-z]+", p.lower()))
            ]
    who = " ".join(["a", class_word] + pieces["who"]) if class_word else " ".join(pieces["who"])
    parts = [IntentPart("who", re.sub(r"^a ([aeiou])", r"an \1", who, flags=re.I))]
    for role in ROLES[1:]:
        if pieces[role]:
            parts.append(IntentPart(role, ", ".join(dict.fromkeys(p.strip() for p in pieces[role]))))
    return IntentParts(text=text, parts=parts, source="rules", notes=notes)


# --- the language-model hook -----------------------------------------------------------------------------------

SPLIT_INSTRUCTION = (
    "Split this image request into its parts. Answer with one JSON object whose keys are among "
    "who, where, doing, style, lighting, framing, mood and whose values are short phrases copied from the request "
    "(leave out keys the request does not mention; write the person as '{class_word}').\nRequest: {text}\nJSON:"
)


def split_with_language_model(
    text: str,
    ask: Callable[[str], str | None],
    subject_token: str | Sequence[str] = SUBJECT_TOKEN,
    class_word: str = CLASS_WORD,
) -> IntentParts:
    """Let a language model split the intent (`ask(prompt) -> reply`); the rules answer when its reply is unusable.

    `ask` is any callable: e.g. `lambda p: endpoint.chat({"messages": [{"role": "user", "content": p}]})` for the
    search's `EndpointProposer`. A reply is used when it holds a JSON object with a known role; unknown keys
    are dropped, and "who" is always present.
    """
    from sdxlab.evaluate.scorers import intent_text

    readable = intent_text(text, subject_token, class_word)
    fallback = split_intent(text, subject_token, class_word)
    try:
        reply = ask(SPLIT_INSTRUCTION.format(text=readable, class_word=class_word)) or ""
    except Exception as error:  # a proposer's transport fails in many ways; the rules still answer
        fallback.notes.append(
            f"The language model could not split the intent ({type(error).__name__}); the rules split it."
        )
        return fallback
    match = re.search(r"\{.*\}", reply, flags=re.S)
    try:
        answer = json.loads(match.group(0)) if match else None
    except json.JSONDecodeError:
        answer = None
    if not isinstance(answer, dict):
        fallback.notes.append("The language model's split was not a JSON object; the rules split the intent.")
        return fallback
    phrases = {
        str(key).strip().lower(): " ".join(str(value).split())
        for key, value in answer.items()
        if isinstance(value, str | int | float) and str(value).strip()
    }
    known = {role: phrase for role, phrase in phrases.items() if role in ROLES}
    if not known:
        fallback.notes.append("The language model's split named no known part; the rules split the intent.")
        return fallback
    known.setdefault("who", f"a {class_word}")
    parts = [IntentPart(role, known[role]) for role in ROLES if role in known]
    return IntentParts(text=text, parts=parts, source="language model")


def endpoint_asker(proposer, max_tokens: int = 200) -> Callable[[str], str | None]:
    """`ask` for `split_with_language_model` from the search's `EndpointProposer` (any object with `chat(body)` and
    `model`): one user message, temperature 0, so the same intent splits the same way on every run."""

    def ask(prompt: str) -> str | None:
        return proposer.chat(
            {
                "model": proposer.model,
                "messages": [{"role": "user", "content": prompt}],
                "temperature": 0,
                "max_tokens": max_tokens,
            }
        )

    return ask


# --- combining and feedback ------------------------------------------------------------------------------------


def combine_parts(scores: Mapping[str, float] | Sequence[float], temperature: float = DEFAULT_TEMPERATURE) -> float:
    """Soft minimum of part scores: -t * log(mean(exp(-s / t))); NaN parts (not asked for) are left out.

    t -> 0 is the minimum, large t the mean. With t = 0.1 one part at 0.4 among parts at 0.95 gives 0.54, below
    four parts at 0.78 (0.78), although the plain mean (0.81) would prefer the picture that misses a part.
    """
    values = np.array([float(v) for v in (scores.values() if isinstance(scores, Mapping) else scores)], dtype=float)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return math.nan
    if temperature <= 0:
        return float(values.min())
    low = values.min()  # shifted for numerical safety
    return float(low - temperature * math.log(np.mean(np.exp(-(values - low) / temperature))))


def part_columns(roles: Iterable[str] = ROLES) -> list[str]:
    return [f"part_{role}" for role in roles]


@dataclass(frozen=True)
class WeakestPart:
    role: str
    phrase: str
    score: float

    def feedback(self) -> str:
        """One sentence for the proposers: which part of the intent the pictures show least."""
        return (
            f"The pictures show the {self.role} part ('{self.phrase}') least (score {self.score:.2f}); "
            f"make it clearer or more prominent in the prompt."
        )


def weakest_part(rows: Sequence[Mapping[str, float]], parts: IntentParts | None = None) -> WeakestPart | None:
    """The role whose `part_<role>` score, averaged over the rows (a candidate's seeds), is lowest; None if no parts."""
    means = {}
    for role in ROLES:
        values = [
            float(row[f"part_{role}"])
            for row in rows
            if f"part_{role}" in row and not math.isnan(float(row[f"part_{role}"]))
        ]
        if values:
            means[role] = float(np.mean(values))
    if not means:
        return None
    role = min(means, key=means.get)
    phrase = parts.by_role()[role].phrase if parts is not None and role in parts.by_role() else role
    return WeakestPart(role, phrase, means[role])


# --- the scorer ------------------------------------------------------------------------------------------------


class IntentPartsScorer:
    """Every part of the intent graded on every picture by CLIP; the score is their soft minimum.

    `columns(images, texts)` -> one dict per image: `intent_parts` (the combination), `part_<role>` for all
    seven roles (P(part over its neutral phrase) by CLIP's own logit scale; NaN where the intent has no such
    part) and `weakest_part` (the role with the lowest score). `score` returns `intent_parts` only.
    """

    name = "intent_parts"

    def __init__(
        self,
        clip_model: str = "openai/clip-vit-large-patch14",
        device: str = "auto",
        subject_token: str | Sequence[str] = SUBJECT_TOKEN,
        class_word: str = CLASS_WORD,
        clip=None,
        temperature: float = DEFAULT_TEMPERATURE,
        splitter: Callable[[str], IntentParts] | None = None,
    ):
        from sdxlab.evaluate.clip import load_clip

        self.clip = clip or load_clip(clip_model, device)
        self.subject_token = subject_token
        self.class_word = class_word
        self.temperature = temperature
        self.splitter = splitter or (lambda text: split_intent(text, subject_token, class_word))
        self._parts: dict[str, IntentParts] = {}
        self._texts: dict[str, np.ndarray] = {}

    @property
    def meaningful(self) -> bool:
        return self.clip.meaningful

    def parts(self, text: str) -> IntentParts:
        if text not in self._parts:
            self._parts[text] = self.splitter(text)
        return self._parts[text]

    def _embed(self, texts: Iterable[str]) -> None:
        missing = sorted(set(texts) - set(self._texts))
        if missing:
            self._texts.update(zip(missing, self.clip.embed_texts(missing), strict=True))

    def _logit_scale(self) -> float:
        scale = getattr(self.clip.model, "logit_scale", None)
        return float(scale.detach().exp()) if scale is not None else 100.0

    def part_scores(self, image_embeddings: np.ndarray, parts: IntentParts) -> np.ndarray:
        """(images, parts) P(part | {part, neutral}) from image embeddings already computed."""
        self._embed([part.query for part in parts.parts] + [part.neutral for part in parts.parts])
        queries = np.stack([self._texts[part.query] for part in parts.parts])
        neutrals = np.stack([self._texts[part.neutral] for part in parts.parts])
        margin = (image_embeddings @ queries.T - image_embeddings @ neutrals.T) * self._logit_scale()
        return 1.0 / (1.0 + np.exp(-margin))

    def columns(self, images: Sequence, texts: Sequence[str]) -> list[dict[str, object]]:
        if len(images) != len(texts):
            raise ValueError(f"intent_parts needs one text per image, got {len(images)} images and {len(texts)} texts.")
        embeddings = self.clip.embed_images(list(images))
        rows: list[dict[str, object]] = []
        for embedding, text in zip(embeddings, texts, strict=True):
            parts = self.parts(text)
            scores = self.part_scores(embedding[None], parts)[0]
            row: dict[str, object] = {column: math.nan for column in part_columns()}
            row.update({f"part_{part.role}": float(value) for part, value in zip(parts.parts, scores, strict=True)})
            row[self.name] = combine_parts([float(v) for v in scores], self.temperature)
            weakest = weakest_part([row], parts)
            row["weakest_part"] = weakest.role if weakest else ""
            rows.append(row)
        return rows

    def score(self, images: list, texts: list[str]) -> list[float]:
        return [float(row[self.name]) for row in self.columns(images, texts)]
