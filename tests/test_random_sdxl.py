"""The benchmark model: SDXL-base-1.0's exact architecture with random weights (built on the meta device here)."""

from __future__ import annotations

import torch

from sdxlab.models import load_architecture
from sdxlab.sdxl.random_weights import build_random_sdxl, parameter_count


def test_random_sdxl_has_the_size_and_tokenizer_of_sdxl_base():
    architecture = load_architecture()
    pipe = build_random_sdxl("meta", torch.bfloat16)  # shapes without allocating 3.5 B parameters
    for name, published in architecture["parameter_counts"].items():
        billions = parameter_count(getattr(pipe, name)) / 1e9
        assert round(billions, 3) == float(published.rstrip("B")), name
    assert pipe.unet.dtype == torch.bfloat16
    assert pipe.vae.config.scaling_factor == architecture["vae"]["scaling_factor"]
    assert pipe.unet.config.cross_attention_dim == 768 + 1280  # both encoders' hidden states side by side
    # the real CLIP vocabulary: "a photo" is <start> a photo <end>
    assert pipe.tokenizer("a photo").input_ids == [49406, 320, 1125, 49407]
    assert pipe.tokenizer_2.pad_token == "!"
