"""Yes/no questions about each picture, answered by a visual question-answering model: score = P(yes).

The questions come from the parts of the intent (`sdxlab.prompt_search.intent`): "Is there a person as an
astronaut?", "Is it on Mars?", "Is the person laughing?", "Is this a close-up?". Each is answered by a BLIP VQA
model (`BlipForQuestionAnswering`, e.g. `Salesforce/blip-vqa-base` or `Salesforce/blip-vqa-capfilt-large`,
given by hub id or local folder) reading the decoder's first answer token: P(yes) = p("yes") / (p("yes") +
p("no")), as VQAScore and TIFA do. A part's score is the mean over its questions; the parts are combined by the
same soft minimum as the CLIP part scores, so one missing part weighs most.

Weights are loaded from safetensors only (`use_safetensors=True`); a folder with only pickle weights
(`pytorch_model.bin`) is refused in one sentence. Without the model (no hub, misspelt id) `VqaUnavailable`
says so and callers go on without the term (`try_make_scorer("vqa", model=...)`). This stage needs a GPU to be
quick (blip-vqa-base: 385 M parameters) and a hub or a downloaded folder; tests use a tiny random BLIP.

Images are resized and normalised here (BLIP: 384x384 bicubic, OpenAI CLIP mean and std, read from the
folder's preprocessor_config.json when present) rather than by transformers' image processor, which needs
torchvision in transformers 5.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sdxlab.evaluate.clip import CLIP_MEAN, CLIP_STD, PICKLE_WEIGHTS
from sdxlab.evaluate.scorers import ScorerUnavailable
from sdxlab.models import choose_placement
from sdxlab.settings.common import CLASS_WORD, SUBJECT_TOKEN

DEFAULT_VQA_MODEL = "Salesforce/blip-vqa-base"


class VqaUnavailable(ScorerUnavailable):
    """The VQA model cannot be loaded (no hub, pickle-only weights, not a BLIP VQA folder); one sentence."""


# --- questions from the parts of an intent ---------------------------------------------------------------------

_NOUN_ENDINGS = (
    "photo",
    "photograph",
    "painting",
    "illustration",
    "drawing",
    "sketch",
    "render",
    "film",
    "snapshot",
    "portrait",
    "picture",
    "image",
    "poster",
    "still",
    "artwork",
    "print",
)


@dataclass(frozen=True)
class Question:
    role: str
    text: str


def _article(phrase: str) -> str:
    return "an" if phrase[:1].lower() in "aeiou" else "a"


def part_questions(role: str, phrase: str) -> list[str]:
    """Yes/no questions for one part; a part with several comma-separated items asks about each."""
    items = [item.strip() for item in phrase.split(",") if item.strip()]
    questions = []
    for item in items:
        if role == "who":
            questions.append(f"Is there {item}?")
        elif role == "where":
            questions.append(
                f"Is it {item}?"
                if re.match(
                    r"(in|on|at|under|inside|near|beside|by|over|above|"
                    r"below|among|underwater|outside|behind|in front of)\b",
                    item,
                    flags=re.I,
                )
                else f"Is it in {item}?"
            )
        elif role in ("doing", "mood"):
            questions.append(f"Is the person {item}?")
        elif role == "framing":
            questions.append(f"Is this {_article(item)} {item}?")
        elif role == "style":
            if re.match(
                r"(in the style of|painted by|drawn by|photographed by|shot on|shot with|by)\b", item, flags=re.I
            ):
                questions.append(f"Is this picture {item}?")
            elif item.lower().split()[-1] in _NOUN_ENDINGS:
                questions.append(f"Is this {_article(item)} {item}?")
            else:
                questions.append(f"Is this picture {item}?")
        elif role == "lighting":
            questions.append(f"Does the picture have {item}?")
    return questions


def intent_questions(
    text: str,
    subject_token: str | Sequence[str] = SUBJECT_TOKEN,
    class_word: str = CLASS_WORD,
    splitter: Callable | None = None,
) -> list[Question]:
    """The yes/no questions for an intent, part by part (rule splitter unless `splitter` is given)."""
    from sdxlab.prompt_search.intent import split_intent

    parts = splitter(text) if splitter is not None else split_intent(text, subject_token, class_word)
    return [
        Question(part.role, question) for part in parts.parts for question in part_questions(part.role, part.phrase)
    ]


# --- the model -------------------------------------------------------------------------------------------------


@dataclass
class VqaModel:
    """A loaded BLIP VQA model with its tokenizer and image preprocessing."""

    name: str
    model: torch.nn.Module
    tokenizer: object
    device: torch.device
    image_size: tuple[int, int]
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        height, width = self.image_size
        batch = []
        for image in images:
            pixels = (
                np.asarray(image.convert("RGB").resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32)
                / 255.0
            )
            batch.append((pixels - np.array(self.mean, dtype=np.float32)) / np.array(self.std, dtype=np.float32))
        return torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).contiguous()

    def _token(self, word: str) -> int:
        ids = self.tokenizer(word, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise VqaUnavailable(
                f"The tokenizer of VQA model {self.name} does not have '{word}' as one token; "
                "it is not a yes/no VQA model."
            )
        return int(ids[0])

    @torch.inference_mode()
    def p_yes(self, images: Sequence[Image.Image], questions: Sequence[str], batch_size: int = 16) -> np.ndarray:
        """(images, questions) P(yes) from the first answer token, normalised over "yes" and "no"."""
        if not images or not questions:
            return np.zeros((len(images), len(questions)), dtype=np.float32)
        yes, no = self._token("yes"), self._token("no")
        model = self.model
        dtype = next(model.parameters()).dtype
        tokens = self.tokenizer(list(questions), padding=True, return_tensors="pt")
        input_ids, attention = tokens["input_ids"].to(self.device), tokens["attention_mask"].to(self.device)
        start = model.config.text_config.bos_token_id
        out = np.zeros((len(images), len(questions)), dtype=np.float32)
        for first in range(0, len(images), batch_size):
            pixels = self.preprocess(images[first : first + batch_size]).to(self.device, dtype)
            image_embeds = model.vision_model(pixel_values=pixels)[0]
            for index, embeds in enumerate(image_embeds):
                repeated = embeds[None].expand(len(questions), -1, -1)
                image_mask = torch.ones(repeated.shape[:-1], dtype=torch.long, device=self.device)
                question_embeds = model.text_encoder(
                    input_ids=input_ids,
                    attention_mask=attention,
                    encoder_hidden_states=repeated,
                    encoder_attention_mask=image_mask,
                    return_dict=False,
                )[0]
                bos = torch.full((len(questions), 1), start, dtype=torch.long, device=self.device)
                logits = model.text_decoder(
                    input_ids=bos,
                    encoder_hidden_states=question_embeds,
                    encoder_attention_mask=attention,
                    return_dict=True,
                ).logits[:, -1]
                pair = torch.stack([logits[:, yes], logits[:, no]], dim=-1).float().softmax(dim=-1)
                out[first + index] = pair[:, 0].cpu().numpy()
        return out


def load_vqa(
    model: str | os.PathLike = DEFAULT_VQA_MODEL,
    device: str | torch.device | None = "auto",
    local_files_only: bool = False,
) -> VqaModel:
    """A BLIP VQA model from a hub id or local folder, safetensors weights only; raises `VqaUnavailable`."""
    from transformers import AutoTokenizer, BlipForQuestionAnswering

    source = str(model)
    folder = Path(source).expanduser()
    is_local = folder.is_dir()
    if not is_local and (source.startswith((".", "/", "~")) or source.count("/") > 1):
        raise VqaUnavailable(
            f"VQA model folder {folder} does not exist; pass an existing folder or a hub id such as "
            f"{DEFAULT_VQA_MODEL}."
        )
    if is_local and not any(folder.glob("*.safetensors")):
        pickled = [name for name in PICKLE_WEIGHTS if (folder / name).exists()]
        raise VqaUnavailable(
            f"Refusing to load VQA model {folder}: it has only pickle-based weights ({', '.join(pickled)}), which can "
            "run arbitrary code when loaded; convert them to .safetensors."
            if pickled
            else f"VQA model folder {folder} has no .safetensors weights; save the model with safe_serialization=True."
        )
    location = str(folder) if is_local else source
    placement = choose_placement(device)
    dtype = torch.float16 if placement.device.type == "cuda" else torch.float32
    try:
        network = BlipForQuestionAnswering.from_pretrained(
            location, dtype=dtype, use_safetensors=True, local_files_only=is_local or local_files_only
        )
        tokenizer = AutoTokenizer.from_pretrained(location, local_files_only=is_local or local_files_only)
    except Exception as error:  # huggingface_hub and transformers raise many types for "cannot get it"
        raise VqaUnavailable(
            f"Could not load VQA model '{source}' ({type(error).__name__}): there is no network, the id is misspelt, or "
            f"it is not a BLIP VQA folder with safetensors weights; download one (e.g. `hf download {DEFAULT_VQA_MODEL} "
            "--local-dir <folder>`) and pass that folder."
        ) from error
    network.to(placement.device).eval()
    size, mean, std = _preprocessing(folder if is_local else None, network)
    return VqaModel(
        name=source, model=network, tokenizer=tokenizer, device=placement.device, image_size=size, mean=mean, std=std
    )


def _preprocessing(folder: Path | None, network) -> tuple[tuple[int, int], tuple, tuple]:
    side = int(network.config.vision_config.image_size)
    config: dict = {}
    try:
        if folder is not None:
            path = folder / "preprocessor_config.json"
            config = json.loads(path.read_text()) if path.is_file() else {}
        else:
            from huggingface_hub import hf_hub_download

            config = json.loads(
                Path(
                    hf_hub_download(network.config.name_or_path, "preprocessor_config.json", local_files_only=True)
                ).read_text()
            )
    except Exception:  # a missing or odd preprocessor config: BLIP's published defaults are right for BLIP
        config = {}
    size = config.get("size") or {}
    height, width = (
        (int(size.get("height", side)), int(size.get("width", side))) if isinstance(size, dict) else (side, side)
    )
    return (height, width), tuple(config.get("image_mean") or CLIP_MEAN), tuple(config.get("image_std") or CLIP_STD)


# --- the scorer ------------------------------------------------------------------------------------------------


class VqaScorer:
    """P(yes) to the intent's yes/no questions; `columns` gives `vqa`, `vqa_<role>` and `vqa_weakest`."""

    name = "vqa"
    meaningful = True  # unless a random-weight model is loaded on purpose (tests)

    def __init__(
        self,
        model: str | os.PathLike = DEFAULT_VQA_MODEL,
        device: str = "auto",
        subject_token: str | Sequence[str] = SUBJECT_TOKEN,
        class_word: str = CLASS_WORD,
        local_files_only: bool = False,
        vqa: VqaModel | None = None,
        splitter: Callable | None = None,
        temperature: float | None = None,
    ):
        from sdxlab.prompt_search.intent import DEFAULT_TEMPERATURE

        self.vqa = vqa or load_vqa(model, device, local_files_only)
        self.subject_token = subject_token
        self.class_word = class_word
        self.splitter = splitter
        self.temperature = DEFAULT_TEMPERATURE if temperature is None else temperature

    def questions(self, text: str) -> list[Question]:
        return intent_questions(text, self.subject_token, self.class_word, self.splitter)

    def columns(self, images: Sequence[Image.Image], texts: Sequence[str]) -> list[dict[str, object]]:
        from sdxlab.prompt_search.intent import ROLES, combine_parts

        if len(images) != len(texts):
            raise ValueError(f"vqa needs one text per image, got {len(images)} images and {len(texts)} texts.")
        rows: list[dict[str, object]] = [{} for _ in images]
        for text in dict.fromkeys(texts):  # one batch of questions per distinct intent
            indices = [i for i, t in enumerate(texts) if t == text]
            questions = self.questions(text)
            answers = self.vqa.p_yes([images[i] for i in indices], [q.text for q in questions])
            for row_index, image_answers in zip(indices, answers, strict=True):
                row: dict[str, object] = {f"vqa_{role}": math.nan for role in ROLES}
                for role in dict.fromkeys(q.role for q in questions):
                    row[f"vqa_{role}"] = float(
                        np.mean([a for a, q in zip(image_answers, questions, strict=True) if q.role == role])
                    )
                asked = {role: row[f"vqa_{role}"] for role in ROLES if not math.isnan(row[f"vqa_{role}"])}
                row[self.name] = combine_parts(asked, self.temperature)
                row["vqa_weakest"] = min(asked, key=asked.get) if asked else ""
                rows[row_index] = row
        return rows

    def score(self, images: list[Image.Image], texts: list[str]) -> list[float]:
        return [float(row[self.name]) for row in self.columns(images, texts)]
