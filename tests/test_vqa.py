"""VQA scorer: questions from the intent's parts, P(yes) from a BLIP VQA model loaded from safetensors only.

The model here is a tiny randomly initialised `BlipForQuestionAnswering` with a 20-word vocabulary, saved to a
temporary folder; one test teaches it (a few dozen optimiser steps through transformers' own training path)
to answer "yes" for red pictures and "no" for blue ones, so P(yes) must follow the picture.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from sdxlab.evaluate.scorers import Scorer, make_scorer, try_make_scorer
from sdxlab.evaluate.vqa import VqaUnavailable, intent_questions, load_vqa, part_questions

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WORDS = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "is",
    "there",
    "a",
    "person",
    "it",
    "on",
    "mars",
    "the",
    "this",
    "as",
    "an",
    "astronaut",
    "?",
    "yes",
    "no",
    "[DEC]",
]


def tiny_blip(seed: int = 0):
    from transformers import BlipConfig, BlipForQuestionAnswering

    ids = {word: index for index, word in enumerate(WORDS)}
    text = dict(
        vocab_size=len(WORDS),
        hidden_size=32,
        encoder_hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
        bos_token_id=ids["[DEC]"],
        pad_token_id=ids["[PAD]"],
        sep_token_id=ids["[SEP]"],
        eos_token_id=ids["[SEP]"],
    )
    vision = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8
    )
    torch.manual_seed(seed)
    return BlipForQuestionAnswering(BlipConfig(text_config=text, vision_config=vision)).eval()


def save_tiny_blip(folder, model, safe: bool = True):
    from transformers import BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder)
    model.save_pretrained(folder)
    if not safe:  # how older checkpoints come: a pickled state dict only (transformers 5 no longer writes one)
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
        for path in folder.glob("*.safetensors"):
            path.unlink()
    return folder


@pytest.fixture(scope="module")
def blip_dir(tmp_path_factory):
    return save_tiny_blip(tmp_path_factory.mktemp("tiny-blip"), tiny_blip())


RED, BLUE = Image.new("RGB", (48, 48), (220, 30, 30)), Image.new("RGB", (48, 48), (30, 30, 220))
INTENT = "a photo of sks person as an astronaut on Mars"


def test_questions_come_from_the_parts_of_the_intent():
    questions = [
        (q.role, q.text) for q in intent_questions("a candid photo of {subject} laughing in a cafe, 35mm film")
    ]
    assert questions == [
        ("who", "Is there a person?"),
        ("where", "Is it in a cafe?"),
        ("style", "Is this a candid photo?"),
        ("style", "Is this a 35mm film?"),
        ("mood", "Is the person laughing?"),
    ]
    assert [q.text for q in intent_questions(INTENT)] == [
        "Is there a person as an astronaut?",
        "Is it on Mars?",
        "Is this a photo?",
    ]
    assert part_questions("framing", "close-up") == ["Is this a close-up?"]
    assert part_questions("style", "painted by Vermeer") == ["Is this picture painted by Vermeer?"]
    assert part_questions("lighting", "golden hour") == ["Does the picture have golden hour?"]


@pytest.mark.slow  # 25 optimiser steps of a tiny BLIP: about 9 s on a 2-core CPU
def test_p_yes_follows_the_picture_once_the_model_has_learnt_it(tmp_path):
    """Taught through transformers' own forward (labels = [DEC] answer), read back by the scorer's first-token path."""
    model = tiny_blip(seed=1).train()
    loaded = load_vqa(save_tiny_blip(tmp_path / "untrained", model), device="cpu")
    tokenizer = loaded.tokenizer
    question = tokenizer(["Is it on Mars?"] * 2, return_tensors="pt")
    dec = model.config.text_config.bos_token_id
    labels = torch.tensor(
        [[dec, WORDS.index("yes"), WORDS.index("[SEP]")], [dec, WORDS.index("no"), WORDS.index("[SEP]")]]
    )
    pixels = loaded.preprocess([RED, BLUE])
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(25):
        loss = model(
            input_ids=question["input_ids"],
            attention_mask=question["attention_mask"],
            pixel_values=pixels,
            labels=labels,
        ).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    taught = save_tiny_blip(tmp_path / "taught", model.eval())
    scorer = make_scorer("vqa", model=str(taught), device="cpu")
    red, blue = scorer.vqa.p_yes([RED, BLUE], ["Is it on Mars?"])[:, 0]
    assert red > 0.9 and blue < 0.1
    # the same answers as transformers' own generate(), whose first answer token the scorer reads
    answers = scorer.vqa.model.generate(
        input_ids=question["input_ids"],
        attention_mask=question["attention_mask"],
        pixel_values=pixels,
        max_new_tokens=2,
    )
    assert [WORDS[int(row[1])] for row in answers] == ["yes", "no"]


def test_columns_per_role_and_the_soft_minimum(blip_dir):
    scorer = make_scorer("vqa", model=str(blip_dir), device="cpu")
    assert isinstance(scorer, Scorer) and scorer.name == "vqa"
    rows = scorer.columns([RED, BLUE, RED], [INTENT, INTENT, "sks person on Mars"])
    for row in rows:
        assert 0.0 < row["vqa"] < 1.0 and 0.0 < row["vqa_who"] < 1.0 and 0.0 < row["vqa_where"] < 1.0
        assert math.isnan(row["vqa_mood"]) and math.isnan(row["vqa_lighting"])
        assert row["vqa_weakest"] in ("who", "where", "style")
    assert math.isnan(rows[2]["vqa_style"]) and not math.isnan(rows[0]["vqa_style"])
    assert scorer.score([RED], [INTENT]) == pytest.approx([rows[0]["vqa"]])
    answers = scorer.vqa.p_yes([RED, BLUE], ["Is it on Mars?", "Is there a person?"])
    assert answers.shape == (2, 2) and np.all((answers > 0) & (answers < 1))


def test_only_safetensors_weights_are_loaded(tmp_path):
    pickled = save_tiny_blip(tmp_path / "pickled", tiny_blip(), safe=False)
    assert (pickled / "pytorch_model.bin").exists() and not list(pickled.glob("*.safetensors"))
    with pytest.raises(VqaUnavailable, match="Refusing to load .* pickle"):
        load_vqa(pickled, device="cpu")


def test_without_the_model_one_sentence_and_the_caller_goes_on(tmp_path):
    scorer, note = try_make_scorer("vqa", model=str(tmp_path / "no-such-model"), device="cpu")
    assert scorer is None and note.startswith("vqa: ") and "does not exist" in note
    scorer, note = try_make_scorer("vqa", model="Salesforce/blip-vqa-base", device="cpu", local_files_only=True)
    assert scorer is None and "Could not load VQA model" in note
