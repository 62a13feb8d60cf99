"""Pivotal tuning: new tokens (<s0><s1>…) that stand for the subject, with embeddings learnt in both text encoders.

As in diffusers' advanced SDXL script and Replicate's trainer, the subject token in the captions is replaced
by fresh tokens whose embeddings train for the first part of the run (while the LoRA trains too), then
freeze. The trainable rows live in their own small parameters; a forward hook on each encoder's token
embedding table puts them in place of the table's rows, so nothing else of the text encoders can change and
the optimiser keeps state for a few rows instead of the whole 49,408-row table.

The result is saved as `{"clip_l": [n, 768], "clip_g": [n, 1280]}` (the layout A1111 and diffusers' advanced
script use) and loaded for sampling with `sdxlab.train.export.load_embeddings`.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from sdxlab.train.conditioning import encode_tokens
from sdxlab.train.config import TrainError
from sdxlab.train.validation import encode_validation_prompts, fill_prompt

EMBEDDING_KEYS = ("clip_l", "clip_g")  # text_encoder (CLIP ViT-L) and text_encoder_2 (OpenCLIP bigG)


def replace_subject(text: str, subject_token: str, tokens: list[str]) -> str:
    """`a photo of sks person` -> `a photo of <s0><s1> person` (whole words only)."""
    return re.sub(rf"(?<![\w<]){re.escape(subject_token)}(?![\w>])", "".join(tokens), text)


class NewTokenEmbeddings(nn.Module):
    """Trainable embeddings for new tokens in both text encoders of a pipeline."""

    def __init__(self, pipe, tokens: list[str], generator: torch.Generator):
        super().__init__()
        self.tokens = list(tokens)
        self.rows = nn.ParameterDict()
        self._first_ids: dict[str, int] = {}
        for key, tokenizer, encoder in zip(
            EMBEDDING_KEYS, (pipe.tokenizer, pipe.tokenizer_2), (pipe.text_encoder, pipe.text_encoder_2), strict=True
        ):
            if tokenizer.add_tokens(self.tokens) != len(self.tokens):
                raise TrainError(
                    f"The tokenizer already knows one of {self.tokens}; load a fresh pipeline "
                    "for every training run (the trainer does this itself when given a model name)."
                )
            ids = tokenizer.convert_tokens_to_ids(self.tokens)
            if ids != list(range(ids[0], ids[0] + len(ids))):
                raise TrainError(f"New tokens {self.tokens} did not get consecutive ids ({ids}).")
            encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
            table = encoder.get_input_embeddings()
            old = table.weight[: ids[0]].float()
            # start as random embeddings of the same spread as real words (the advanced script's choice)
            init = torch.randn(len(ids), old.shape[1], generator=generator) * old.std().item()
            self.rows[key] = nn.Parameter(init.to(table.weight.device))
            self._first_ids[key] = ids[0]
            table.register_forward_hook(self._hook(key))

    def _hook(self, key: str):
        def put_new_rows(module, inputs, output):
            ids = inputs[0]
            first = self._first_ids[key]
            rows = self.rows[key]
            new = (ids >= first) & (ids < first + rows.shape[0])
            if not new.any():
                return output
            replaced = rows[(ids - first).clamp(0, rows.shape[0] - 1)].to(output.dtype)
            return torch.where(new[..., None], replaced, output)

        return put_new_rows

    @property
    def frozen(self) -> bool:
        return not any(p.requires_grad for p in self.parameters())

    def freeze(self, pipe) -> None:
        """Stop training the rows, and write them into the tables so the pipeline works without the hook too."""
        self.requires_grad_(False)
        for key, encoder in zip(EMBEDDING_KEYS, (pipe.text_encoder, pipe.text_encoder_2), strict=True):
            table = encoder.get_input_embeddings()
            first = self._first_ids[key]
            table.weight.data[first : first + len(self.tokens)] = self.rows[key].data.to(table.weight.dtype)

    def state(self) -> dict[str, torch.Tensor]:
        return {key: self.rows[key].detach().float().cpu().clone() for key in EMBEDDING_KEYS}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        for key in EMBEDDING_KEYS:
            self.rows[key].data.copy_(state[key])


class TextPhases:
    """The text side of a training, phase by phase.

    While something in the text encoders trains (their LoRA for the whole run, or the new tokens for the first
    `pivotal_steps`) they run on every micro-batch's captions. From the step nothing there trains any more,
    every caption (and validation prompt) is encoded once, and the encoders leave the GPU.
    """

    def __init__(
        self,
        pipe,
        captions,
        new_tokens: NewTokenEmbeddings | None,
        encoders_train: bool,
        pivotal_steps: int,
        validation_prompts: list[str],
        dtype: torch.dtype,
        autocast_dtype: torch.dtype | None,
        device: torch.device,
    ):
        self.pipe, self.captions, self.new_tokens = pipe, captions, new_tokens
        self.encoders = [pipe.text_encoder, pipe.text_encoder_2]
        self.encoders_train, self.pivotal_steps = encoders_train, pivotal_steps
        self.validation_prompts, self.dtype, self.autocast_dtype, self.device = (
            validation_prompts,
            dtype,
            autocast_dtype,
            device,
        )
        self.validation_encoded = None  # the validation prompts' encodings, once the text side is final

    @classmethod
    def of(cls, pipe, config, captions, new_tokens, dtype, autocast_dtype, device) -> TextPhases:
        """The phases `config` asks for: text-encoder LoRA for the whole run, new tokens for `pivotal_steps`; the
        validation prompts with the subject written as the training's tokens."""
        prompts = [fill_prompt(prompt, config.token_strings, config.class_word) for prompt in config.validation_prompts]
        return cls(
            pipe,
            captions,
            new_tokens,
            config.text_encoder,
            config.pivotal_steps,
            prompts,
            dtype,
            autocast_dtype,
            device,
        )

    def live(self, step: int) -> bool:
        """Whether the text encoders run every step (they train), or their cached output is used."""
        return self.encoders_train or step < self.pivotal_steps

    def end_phases(self, step: int) -> None:
        """Freeze what stops training at `step`: the new token embeddings, then (unless they train) the encoders."""
        if self.new_tokens is not None and step >= self.pivotal_steps and not self.new_tokens.frozen:
            self.new_tokens.freeze(self.pipe)  # pivotal tuning is over: the new embeddings are final
        if self.live(step) or self.captions.prompt_embeds is not None:
            return
        # nothing on the text side trains any more: encode the captions once and free the encoders
        self.captions.encode_all(self.pipe, self.device)
        if self.validation_prompts:
            self.validation_encoded = encode_validation_prompts(self.pipe, self.validation_prompts, self.dtype)
        for encoder in self.encoders:
            encoder.to("cpu" if self.device.type != "cpu" else self.device)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def encode(self, caption_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(prompt_embeds, pooled) of the captions `caption_ids`: cached, or through the (training) encoders."""
        captions = self.captions
        if captions.prompt_embeds is not None:
            return captions.prompt_embeds[caption_ids], captions.pooled[caption_ids]
        ids = [token_ids[caption_ids.cpu()] for token_ids in captions.token_ids]
        autocast = self.autocast_dtype
        with torch.autocast(self.device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
            return encode_tokens(self.encoders, ids)

    def validation(self, step: int):
        """The validation prompts' encodings at `step` (fresh while the text side still trains)."""
        if not self.live(step) and self.validation_encoded is not None:
            return self.validation_encoded
        # still training, or the checkpoint falls on the very step the text side ends (its encodings are cached
        # at the start of the next step): encode now, the encoders are still in place
        return encode_validation_prompts(self.pipe, self.validation_prompts, self.dtype)


def new_token_embeddings(pipe, config) -> NewTokenEmbeddings | None:
    """Pivotal tuning's new tokens in both text encoders (None without pivotal tuning), seeded by `config.seed`."""
    if not config.pivotal_tuning:
        return None
    return NewTokenEmbeddings(pipe, config.token_strings, torch.Generator().manual_seed(config.seed))
