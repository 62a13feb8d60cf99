"""Caches: every training image (and its mirror image) through the VAE once, every caption through both
text encoders once, so the training loop runs the UNet alone.

A *view* is one image as the UNet sees it: an example, possibly mirrored. Views hold their latents, their
loss-weight mask at latent resolution, their micro-conditioning time ids and which caption they use.
Captions are kept as token ids too, for the runs that must encode text live (text-encoder LoRA, the
pivotal-tuning phase).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from sdxlab.train.conditioning import encode_prompts, micro_conditioning, tokenize
from sdxlab.train.data import Example, load_mask, load_pixels
from sdxlab.train.memory import raise_if_out_of_memory
from sdxlab.train.pivotal import replace_subject
from sdxlab.train.prior import class_examples_for
from sdxlab.train.step import Batch


@dataclass
class Views:
    """Everything the loop needs about a set of training images, on the training device."""

    latents: torch.Tensor  # [V, 4, h, w], float32, already multiplied by the VAE's scaling factor
    loss_weights: torch.Tensor  # [V, 1, h, w] in [0, 1] (all ones without a mask)
    time_ids: torch.Tensor  # [V, 6]
    caption_ids: torch.Tensor  # [V] index into the run's caption list
    described: list[tuple[int, bool]]  # (example index, mirrored) of each view, for people and tests

    def __len__(self) -> int:
        return self.latents.shape[0]


@dataclass
class Captions:
    """Every caption of the run, tokenised for both encoders; `embeds` once they are encoded for good."""

    texts: list[str]
    token_ids: list[torch.Tensor]  # per tokenizer: [C, 77]
    prompt_embeds: torch.Tensor | None = None  # [C, 77, D]
    pooled: torch.Tensor | None = None  # [C, P]

    @classmethod
    def tokenized(cls, pipe, texts: list[str]) -> Captions:
        return cls(texts=list(texts), token_ids=[tokenize(t, list(texts)) for t in (pipe.tokenizer, pipe.tokenizer_2)])

    def encode_all(self, pipe, device: torch.device) -> None:
        """Run both text encoders over every caption once (no gradients) and keep the result."""
        prompt_embeds, pooled = encode_prompts(
            [pipe.tokenizer, pipe.tokenizer_2], [pipe.text_encoder, pipe.text_encoder_2], self.texts
        )
        self.prompt_embeds, self.pooled = prompt_embeds.float().to(device), pooled.float().to(device)


@torch.no_grad()
def encode_latents(vae, pixels: torch.Tensor, batch_size: int = 1) -> torch.Tensor:
    """VAE posterior means, scaled as the UNet expects, in float32 on the VAE's device.

    One image at a time by default: at 1024 px the encoder's activations take ~1 GB per image on top of the whole
    pipeline (~7 GB), which is what a 10 GB card has; batching saves well under a second for 40 images.
    """
    scaling = vae.config.scaling_factor
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    chunks = []
    for start in range(0, pixels.shape[0], batch_size):
        batch = pixels[start : start + batch_size].to(vae.device, vae.dtype)
        # the mean, not a sample: SDXL's posterior std is tiny, and a fixed latent makes runs reproducible
        chunks.append((vae.encode(batch).latent_dist.mean.float() - shift) * scaling)
    return torch.cat(chunks)


def build_views(
    examples: list[Example],
    caption_ids: list[int],
    vae,
    resolution: int,
    flip: bool,
    masked: bool,
    device: torch.device,
    progress: bool = True,
) -> Views:
    """Encode every example (and its mirror image when `flip`) once; `caption_ids[i]` is example i's caption."""
    described = [
        (index, mirrored) for mirrored in ((False, True) if flip else (False,)) for index in range(len(examples))
    ]
    pixels, masks = [], []
    for index, mirrored in tqdm(described, desc="loading images", disable=not progress, leave=False):
        image = load_pixels(examples[index].image)
        mask = load_mask(examples[index].mask if masked else None, resolution)
        pixels.append(image.flip(-1) if mirrored else image)
        masks.append(mask.flip(-1) if mirrored else mask)
    latents = encode_latents(vae, torch.stack(pixels)).to(device)
    # each latent covers 8×8 pixels: its loss weight is their average
    loss_weights = F.interpolate(torch.stack(masks), size=latents.shape[-2:], mode="area").to(device)
    time_ids = torch.tensor(
        [micro_conditioning(examples[index], resolution, mirrored) for index, mirrored in described],
        dtype=torch.float32,
        device=device,
    )
    view_captions = torch.tensor([caption_ids[index] for index, _ in described], device=device)
    return Views(
        latents=latents, loss_weights=loss_weights, time_ids=time_ids, caption_ids=view_captions, described=described
    )


def view_indices(seed: int, view_count: int, start: int, count: int) -> list[int]:
    """Items start … start+count-1 of an endless stream of views: each epoch is a fresh shuffle of all views.

    The stream is a pure function of (seed, position), so a resumed run draws exactly the batches the
    uninterrupted run would have drawn, with no data-loader state to save.
    """
    indices: list[int] = []
    position = start
    while len(indices) < count:
        epoch, offset = divmod(position, view_count)
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(view_count, generator=generator)
        take = min(count - len(indices), view_count - offset)
        indices += order[offset : offset + take].tolist()
        position += take
    return indices


@dataclass
class Batches:
    """Micro-batches put together from the cached views: subject views first, then class views (prior)."""

    views: Views
    class_views: Views | None
    text: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]  # caption ids -> (prompt_embeds, pooled)
    masked: bool  # whether the loss is weighted by the masks
    device: torch.device

    def indices(self, seed: int, position: int, count: int) -> tuple[list[int], list[int]]:
        """The subject and class views at `position` of their endless shuffled streams (`view_indices`)."""
        indices = view_indices(seed, len(self.views), position, count)
        class_indices = view_indices(seed + 1, len(self.class_views), position, count) if self.class_views else []
        return indices, class_indices

    def make(self, indices: list[int], class_indices: list[int]) -> Batch:
        views, class_views, device = self.views, self.class_views, self.device
        rows = torch.tensor(indices, device=device)
        latents, time_ids = views.latents[rows], views.time_ids[rows]
        weights, caption_ids = views.loss_weights[rows], views.caption_ids[rows]
        is_prior = torch.zeros(len(indices), dtype=torch.bool, device=device)
        if class_indices:
            extra = torch.tensor(class_indices, device=device)
            latents = torch.cat([latents, class_views.latents[extra]])
            time_ids = torch.cat([time_ids, class_views.time_ids[extra]])
            weights = torch.cat([weights, class_views.loss_weights[extra]])
            caption_ids = torch.cat([caption_ids, class_views.caption_ids[extra]])
            is_prior = torch.cat([is_prior, torch.ones(len(class_indices), dtype=torch.bool, device=device)])
        prompt_embeds, pooled = self.text(caption_ids)
        return Batch(
            latents=latents,
            prompt_embeds=prompt_embeds,
            pooled=pooled,
            time_ids=time_ids,
            loss_weights=weights if self.masked else None,
            is_prior=is_prior,
        )


def build_caches(
    pipe,
    examples: list[Example],
    caption_texts: list[str],
    class_examples: list[Example],
    resolution: int,
    flip: bool,
    masked: bool,
    device: torch.device,
    progress: bool = True,
) -> tuple[Captions, Views, Views | None]:
    """Every caption tokenised once; the subject's views (mirrored too when `flip`) and the class images' views."""
    captions = Captions.tokenized(pipe, sorted(set(caption_texts) | {e.caption for e in class_examples}))
    views = build_views(
        examples,
        [captions.texts.index(c) for c in caption_texts],
        pipe.vae,
        resolution,
        flip,
        masked,
        device,
        progress=progress,
    )
    class_views = None
    if class_examples:
        class_views = build_views(
            class_examples,
            [captions.texts.index(e.caption) for e in class_examples],
            pipe.vae,
            resolution,
            False,
            False,
            device,
            progress=progress,
        )
    return captions, views, class_views


def prepare_views(
    pipe, config, examples: list[Example], accelerator, device: torch.device, progress: bool = True
) -> tuple[Captions, Views, Views | None]:
    """The training's caches: the class images generated (prior preservation), every view through the VAE and
    every caption tokenised; then the VAE leaves the GPU (only validation images need it again)."""
    caption_texts = [
        replace_subject(example.caption, config.subject_token, config.token_strings) for example in examples
    ]
    try:
        class_examples = class_examples_for(pipe, config, accelerator, device)
        captions, views, class_views = build_caches(
            pipe,
            examples,
            caption_texts,
            class_examples,
            config.resolution,
            config.flip,
            config.masked_loss,
            device,
            progress=progress,
        )
        pipe.vae.to("cpu" if device.type != "cpu" else device)
    except Exception as error:
        raise_if_out_of_memory(error, 1, config.resolution, False)
        raise
    return captions, views, class_views
