"""What the SDXL UNet is conditioned on besides the noisy latents: text and micro-conditioning.

Text: both CLIP encoders read the caption; their penultimate hidden states are concatenated along the
feature axis (cross-attention input) and text_encoder_2's projected pooled output joins the time ids in the
`text_time` embedding. This is exactly what `StableDiffusionXLPipeline.encode_prompt` computes, so images
rendered from the cache match images rendered from the prompt.

Micro-conditioning: six numbers per image, (original height, original width, crop top, crop left, target
height, target width). We pass the truth from the capture's crop boxes, in the convention of diffusers' and
kohya's SDXL trainers: the original size is the upright source photo's size, and the crop's top-left corner
is measured in the source scaled so that the crop becomes resolution × resolution pixels.
"""

from __future__ import annotations

import torch

from sdxlab.train.data import Example


def tokenize(tokenizer, prompts: list[str]) -> torch.Tensor:
    """Token ids [N, 77], padded and truncated as the SDXL pipeline does."""
    return tokenizer(
        prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids


def encode_tokens(text_encoders, token_ids: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(prompt_embeds [N, 77, D1 + D2], pooled_prompt_embeds [N, P]) from both encoders' token ids."""
    hidden_states = []
    pooled = None
    for encoder, ids in zip(text_encoders, token_ids, strict=True):
        output = encoder(ids.to(encoder.device), output_hidden_states=True)
        hidden_states.append(output.hidden_states[-2])  # SDXL reads the penultimate layer
        pooled = output.text_embeds if hasattr(output, "text_embeds") else pooled  # only text_encoder_2 projects
    return torch.cat(hidden_states, dim=-1), pooled


@torch.no_grad()
def encode_prompts(tokenizers, text_encoders, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode prompts once, without gradients (caches, validation prompts, class prompts)."""
    return encode_tokens(text_encoders, [tokenize(t, prompts) for t in tokenizers])


def micro_conditioning(example: Example, resolution: int, flipped: bool) -> list[float]:
    """SDXL's six time ids for one training image (see the module docstring for the convention)."""
    if example.crop_box is None or example.original_size is None:
        return [resolution, resolution, 0, 0, resolution, resolution]  # nothing known: "an uncropped square"
    left, top, right, bottom = example.crop_box
    height, width = example.original_size
    if flipped:  # the mirror image's crop starts where the original's ended, seen from the other side
        left, right = width - right, width - left
    scale_x = resolution / (right - left)
    scale_y = resolution / (bottom - top)
    crop_top = max(0, round(top * scale_y))
    crop_left = max(0, round(left * scale_x))
    return [height, width, crop_top, crop_left, resolution, resolution]
