"""A UNet whose forward pass is replayed from CUDA graphs (experimental, CUDA only, off by default).

At batch 1 an SDXL UNet forward launches ~2,000 small kernels and the GPU waits on Python to launch them;
replaying a captured graph launches them all at once. ANCHORS.md measured 2.5x the stock pipeline at batch 1
on an H100 with this scheme. One graph is captured per input signature (shapes, dtypes); inputs are copied
into the graph's static tensors before each replay and the output is copied out.

What a graph bakes in: the weights' storage (in-place changes such as LoRA fusion are seen) and every
Python decision and scalar taken during capture (LoRA enabled or not, its scale). The Sampler therefore calls
`reset()` whenever the LoRA state changes. Calls with arguments a graph cannot hold (ControlNet residuals,
cross-attention kwargs, ...) run eagerly.

Not yet measured by sdxlab on a GPU (development had none): treat it as a starting point, check images
against the eager path before trusting it.
"""

from __future__ import annotations

from typing import Any

import torch


class GraphedUNet:
    """Installs itself as `unet.forward`; `uninstall()` restores the module's own forward."""

    def __init__(self, unet, warmup_runs: int = 2):
        self.unet = unet
        self.warmup_runs = warmup_runs
        self.graphs: dict[tuple, tuple[Any, dict[str, torch.Tensor], torch.Tensor]] = {}
        self.pool = None

    def install(self) -> None:
        self.unet.forward = self.forward  # an instance attribute shadows the class's forward for nn.Module.__call__

    def uninstall(self, forget: bool = True) -> None:
        self.unet.__dict__.pop("forward", None)
        if forget:
            self.reset()

    def reset(self) -> None:
        """Forget captured graphs (the LoRA state or anything else baked into them changed)."""
        self.graphs.clear()
        self.pool = None

    def _eager(self, *args, **kwargs):
        return type(self.unet).forward(self.unet, *args, **kwargs)

    def forward(
        self, sample, timestep, encoder_hidden_states, *args, added_cond_kwargs=None, return_dict=True, **kwargs
    ):
        graphable = (
            not args
            and sample.is_cuda
            and torch.is_tensor(timestep)
            and added_cond_kwargs is not None
            and set(added_cond_kwargs) == {"text_embeds", "time_ids"}
            and all(value is None for value in kwargs.values())
        )
        if not graphable:
            return self._eager(
                sample,
                timestep,
                encoder_hidden_states,
                *args,
                added_cond_kwargs=added_cond_kwargs,
                return_dict=return_dict,
                **kwargs,
            )
        inputs = {
            "sample": sample,
            "timestep": timestep.to(sample.device),
            "encoder_hidden_states": encoder_hidden_states,
            "text_embeds": added_cond_kwargs["text_embeds"],
            "time_ids": added_cond_kwargs["time_ids"],
        }
        key = tuple((name, tuple(value.shape), value.dtype) for name, value in inputs.items())
        if key not in self.graphs:
            self.graphs[key] = self._capture(inputs)
        graph, static_inputs, static_output = self.graphs[key]
        for name, value in inputs.items():
            static_inputs[name].copy_(value)
        graph.replay()
        output = static_output.clone()  # the next replay overwrites the static output
        if return_dict:
            from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

            return UNet2DConditionOutput(sample=output)
        return (output,)

    def _run_static(self, static: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._eager(
            static["sample"],
            static["timestep"],
            static["encoder_hidden_states"],
            added_cond_kwargs={"text_embeds": static["text_embeds"], "time_ids": static["time_ids"]},
            return_dict=False,
        )[0]

    @torch.no_grad()
    def _capture(self, inputs: dict[str, torch.Tensor]):
        static = {name: value.clone() for name, value in inputs.items()}
        # Warm up on a side stream (cuDNN/cuBLAS choose algorithms and allocate workspaces outside the graph).
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.warmup_runs):
                self._run_static(static)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            output = self._run_static(static)
        self.pool = graph.pool()  # graphs of other shapes share one memory pool
        return graph, static, output
