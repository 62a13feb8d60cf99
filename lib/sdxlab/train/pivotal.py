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

from sdxlab.train.config import TrainError

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
        for key, tokenizer, encoder in zip(EMBEDDING_KEYS, (pipe.tokenizer, pipe.tokenizer_2),
                                           (pipe.text_encoder, pipe.text_encoder_2), strict=True):
            if tokenizer.add_tokens(self.tokens) != len(self.tokens):
                raise TrainError(f"The tokenizer already knows one of {self.tokens}; load a fresh pipeline "
                                 "for every training run (the trainer does this itself when given a model name).")
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
