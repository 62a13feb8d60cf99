"""One training step's mathematics: draw noise and timesteps, noise the latents, predict, and weigh the error.

    x_t  = sqrt(ᾱ_t) · x_0 + sqrt(1 − ᾱ_t) · ε            (DDPM forward process, ᾱ from the model's schedule)
    ε̂    = UNet(x_t, t, text, pooled text + time ids)
    loss = weighted mean over pixels of (ε̂ − ε)²           (weights: the face mask, or 1)
           × min(SNR_t, γ) / SNR_t                        (min-SNR weighting, optional; SNR_t = ᾱ_t / (1 − ᾱ_t))
    averaged over the subject images, plus prior_loss_weight × the same over the class images.

Models trained for v-prediction get the velocity as target and min(SNR, γ) / (SNR + 1) as weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Batch:
    """A micro-batch as the UNet sees it (subject images first, then class images when prior preservation is on)."""

    latents: torch.Tensor  # [B, 4, h, w]
    prompt_embeds: torch.Tensor  # [B, 77, D]
    pooled: torch.Tensor  # [B, P]
    time_ids: torch.Tensor  # [B, 6]
    loss_weights: torch.Tensor | None  # [B, 1, h, w] or None
    is_prior: torch.Tensor  # [B] bool: which rows are class images


def draw_noise(latents: torch.Tensor, generator: torch.Generator, noise_offset: float) -> torch.Tensor:
    """Gaussian noise like the latents; with a noise offset, plus a per-channel constant (learns brightness)."""
    noise = torch.randn(latents.shape, generator=generator, device=latents.device)
    if noise_offset:
        noise += noise_offset * torch.randn((*latents.shape[:2], 1, 1), generator=generator, device=latents.device)
    return noise


def draw_timesteps(count: int, num_train_timesteps: int, generator: torch.Generator, device) -> torch.Tensor:
    return torch.randint(0, num_train_timesteps, (count,), generator=generator, device=device)


def diffusion_loss(
    unet,
    noise_scheduler,
    batch: Batch,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    min_snr_gamma: float | None = None,
    prior_loss_weight: float = 1.0,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """The training loss of one micro-batch (a scalar that still carries the graph)."""
    noisy = noise_scheduler.add_noise(batch.latents, noise, timesteps)
    with torch.autocast(noisy.device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
        prediction = unet(
            noisy,
            timesteps,
            encoder_hidden_states=batch.prompt_embeds,
            added_cond_kwargs={"text_embeds": batch.pooled, "time_ids": batch.time_ids},
        ).sample
    prediction_type = noise_scheduler.config.prediction_type
    target = noise if prediction_type == "epsilon" else noise_scheduler.get_velocity(batch.latents, noise, timesteps)

    squared_error = (prediction.float() - target.float()) ** 2
    pixel_dims = tuple(range(1, squared_error.ndim))
    if batch.loss_weights is None:
        per_image = squared_error.mean(dim=pixel_dims)
    else:  # a weighted mean: the face counts fully, the background by its mask value
        weights = batch.loss_weights.expand_as(squared_error)
        per_image = (squared_error * weights).sum(dim=pixel_dims) / weights.sum(dim=pixel_dims).clamp_min(1e-8)

    if min_snr_gamma is not None:
        per_image = per_image * min_snr_weights(noise_scheduler, timesteps, min_snr_gamma, prediction_type)

    subject = per_image[~batch.is_prior].mean()
    if not batch.is_prior.any():
        return subject
    return subject + prior_loss_weight * per_image[batch.is_prior].mean()


def min_snr_weights(noise_scheduler, timesteps: torch.Tensor, gamma: float, prediction_type: str) -> torch.Tensor:
    """min(SNR, γ)/SNR for ε-prediction, min(SNR, γ)/(SNR + 1) for v-prediction (Hang et al., 2023)."""
    alphas_cumprod = noise_scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
    snr = alphas_cumprod / (1 - alphas_cumprod)
    clipped = torch.clamp(snr, max=gamma)
    return clipped / (snr + 1) if prediction_type == "v_prediction" else clipped / snr


@dataclass
class TrainingStep:
    """A micro-batch's noise draw and loss, as the loop (and the captured step, through `draw`) runs them.

    Every process draws the noise and timesteps of the whole global micro-batch and keeps its own rows, so N
    processes train exactly as one process with an N times larger batch.
    """

    unet: torch.nn.Module
    noise_scheduler: object  # the DDPM forward process SDXL was trained with
    noise_offset: float
    min_snr_gamma: float | None
    prior_loss_weight: float
    autocast_dtype: torch.dtype | None
    device: torch.device
    processes: int = 1
    process: int = 0

    @classmethod
    def of(cls, pipe, config, autocast_dtype, device, processes: int, process: int) -> TrainingStep:
        """The step `config` asks for (noise offset, min-SNR weighting, prior loss weight) on the pipeline's UNet,
        with the forward process SDXL was trained with (DDPM, from the pipeline's scheduler configuration)."""
        from diffusers import DDPMScheduler

        return cls(
            pipe.unet,
            DDPMScheduler.from_config(pipe.scheduler.config),
            config.noise_offset,
            config.min_snr_gamma,
            config.prior_loss_weight,
            autocast_dtype,
            device,
            processes,
            process,
        )

    def draw(self, batch: Batch, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        rows = own_rows(
            int((~batch.is_prior).sum()), int(batch.is_prior.sum()), self.processes, self.process, self.device
        )
        everyone = batch.latents.new_empty((len(batch.latents) * self.processes, *batch.latents.shape[1:]))
        noise = draw_noise(everyone, generator, self.noise_offset)[rows]
        timesteps = draw_timesteps(
            len(everyone), self.noise_scheduler.config.num_train_timesteps, generator, self.device
        )[rows]
        return noise, timesteps

    def loss(self, batch: Batch, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, noise, timesteps) of one micro-batch; the loss still carries the graph."""
        noise, timesteps = self.draw(batch, generator)
        loss = diffusion_loss(
            self.unet,
            self.noise_scheduler,
            batch,
            noise,
            timesteps,
            self.min_snr_gamma,
            self.prior_loss_weight,
            self.autocast_dtype,
        )
        return loss, noise, timesteps


def own_rows(subject: int, prior: int, processes: int, process: int, device) -> torch.Tensor:
    """Which rows of the global micro-batch (all processes' subject rows, then all their class rows) are ours."""
    own = [process * subject + i for i in range(subject)] + [
        processes * subject + process * prior + i for i in range(prior)
    ]
    return torch.tensor(own, device=device)
