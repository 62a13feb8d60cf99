"""One step of sdxlab.train against a plain computation written from the mathematics, on the same batch.

The reference below reads the dataset files itself and uses none of the trainer's helpers: it encodes the
images with the VAE, the captions with both text encoders (penultimate hidden states concatenated, pooled
output of the second), computes SDXL's six time ids from the crop boxes, noises the latents with the DDPM
schedule built from the scheduler's betas, runs the UNet, and weighs the squared error against the scheduler's target (velocity for the tiny model,
noise as SDXL predicts it in the epsilon case) by face mask and min-SNR.
The trainer must produce the same loss and the same gradient for every LoRA weight.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig
from PIL import Image

from sdxlab.models import load_pipeline
from sdxlab.train import TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RESOLUTION = 64
RANK = 4


def tiny_pipeline(prediction_type: str | None = None):
    """The tiny model (v-prediction); with `prediction_type="epsilon"` its scheduler predicts noise, as SDXL's does."""
    from diffusers import EulerDiscreteScheduler

    pipe = load_pipeline("tiny", device="cpu", dtype="fp32")
    if prediction_type is not None:
        pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, prediction_type=prediction_type)
    return pipe


def run_one_step(dataset, output, prediction_type: str | None = None, **options):
    """One optimizer step with learning rate 0 (weights stay put), capturing what the reference needs."""
    config = TrainConfig(
        dataset_dir=dataset,
        output_dir=output,
        model="tiny",
        resolution=RESOLUTION,
        steps=1,
        batch_size=3,
        learning_rate=0.0,
        lr_scheduler="constant",
        lr_warmup_steps=0,
        max_grad_norm=0.0,
        lora_rank=RANK,
        lora_targets="attention",  # what the reference below adds
        checkpoint_every=1,
        validation_prompts=[],
        device="cpu",
        progress=False,
        **options,
    )
    captured = {}

    def callback(event):
        lora = [(name, p) for name, p in event.pipe.unet.named_parameters() if "lora_" in name]
        if event.kind == "start":
            # LoRA starts with B = 0, which makes every A gradient zero: give all weights random values instead
            generator = torch.Generator().manual_seed(123)
            for _, parameter in lora:
                parameter.data.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
        elif event.kind == "step":
            captured.update(
                loss=event.loss,
                noise=event.noise.clone(),
                timesteps=event.timesteps.clone(),
                views=list(event.views),
                weights={name: p.detach().clone() for name, p in lora},
                grads={name: p.grad.detach().clone() for name, p in lora},
            )

    train(config, callbacks=[callback], pipe=tiny_pipeline(prediction_type))
    return captured


def reference_loss(
    dataset,
    captured,
    masked: bool,
    min_snr_gamma: float | None,
    prior: dict | None = None,
    prediction_type: str | None = None,
):
    """The loss and gradients written from the mathematics. `prior`: {"image": path, "caption": text, "weight": w}
    when prior preservation is on; each batch then ends with as many class rows as subject rows, and with a
    single class image every class row is that image (uncropped square: time ids res, res, 0, 0, res, res)."""
    pipe = tiny_pipeline(prediction_type)
    unet = pipe.unet
    unet.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=RANK, lora_alpha=RANK, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    parameters = dict(unet.named_parameters())
    for name, value in captured["weights"].items():
        parameters[name].data.copy_(value)
        parameters[name].requires_grad_(True)

    rows = [json.loads(line) for line in (dataset / "metadata.jsonl").read_text().splitlines() if line.strip()]
    pixels, masks, time_ids, captions = [], [], [], []
    for index, mirrored in captured["views"]:
        row = rows[index]
        image = np.asarray(Image.open(dataset / row["file_name"]).convert("RGB"), dtype=np.float32) / 127.5 - 1
        mask = np.asarray(Image.open(dataset / row["mask_file"]).convert("L"), dtype=np.float32) / 255
        if mirrored:
            image, mask = image[:, ::-1], mask[:, ::-1]
        pixels.append(torch.tensor(image.copy()).permute(2, 0, 1))
        masks.append(torch.tensor(mask.copy())[None])
        height, width = row["original_size"]
        left, top, right, bottom = row["crop_box"]
        if mirrored:
            left, right = width - right, width - left
        scale = RESOLUTION / (right - left)  # the crop is square: the source scaled so the crop is RESOLUTION px
        time_ids.append([height, width, round(top * scale), round(left * scale), RESOLUTION, RESOLUTION])
        captions.append(row["text"])
    subject_rows = len(pixels)
    if prior:
        image = np.asarray(Image.open(prior["image"]).convert("RGB"), dtype=np.float32) / 127.5 - 1
        for _ in range(subject_rows):
            pixels.append(torch.tensor(image.copy()).permute(2, 0, 1))
            masks.append(torch.ones(1, RESOLUTION, RESOLUTION))  # class images have no face mask: weight 1
            time_ids.append([RESOLUTION, RESOLUTION, 0, 0, RESOLUTION, RESOLUTION])
            captions.append(prior["caption"])

    with torch.no_grad():
        latents = pipe.vae.encode(torch.stack(pixels)).latent_dist.mean * pipe.vae.config.scaling_factor
        hidden, pooled = [], None
        for tokenizer, encoder in ((pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2)):
            ids = tokenizer(
                captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
            ).input_ids
            output = encoder(ids, output_hidden_states=True)
            hidden.append(output.hidden_states[-2])
            pooled = output.text_embeds if encoder is pipe.text_encoder_2 else pooled
        text = torch.cat(hidden, dim=-1)
    factor = 2 ** (len(pipe.vae.config.block_out_channels) - 1)  # pixels per latent side: 8 for SDXL, 4 tiny
    weights = F.avg_pool2d(torch.stack(masks), kernel_size=factor)  # one weight per latent: its pixels' mean

    schedule = pipe.scheduler.config
    assert schedule.beta_schedule == "scaled_linear" and schedule.prediction_type in ("epsilon", "v_prediction")
    betas = (
        torch.linspace(
            schedule.beta_start**0.5, schedule.beta_end**0.5, schedule.num_train_timesteps, dtype=torch.float64
        )
        ** 2
    )
    alpha_bar = torch.cumprod(1 - betas, dim=0)[captured["timesteps"]].float().view(-1, 1, 1, 1)
    noise = captured["noise"]
    noisy = alpha_bar.sqrt() * latents + (1 - alpha_bar).sqrt() * noise

    prediction = unet(
        noisy,
        captured["timesteps"],
        encoder_hidden_states=text,
        added_cond_kwargs={"text_embeds": pooled, "time_ids": torch.tensor(time_ids, dtype=torch.float32)},
    ).sample
    if schedule.prediction_type == "epsilon":
        target = noise
    else:  # velocity (Salimans & Ho 2022): sqrt(alpha_bar) * noise - sqrt(1 - alpha_bar) * latents
        target = alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * latents
    squared = (prediction - target) ** 2
    if masked:
        full = weights.expand_as(squared)
        per_image = (squared * full).sum(dim=(1, 2, 3)) / full.sum(dim=(1, 2, 3))
    else:
        per_image = squared.mean(dim=(1, 2, 3))
    if min_snr_gamma is not None:
        snr = alpha_bar.flatten() / (1 - alpha_bar.flatten())
        # Hang et al. 2023: min(SNR, gamma) / SNR for noise targets, min(SNR, gamma) / (SNR + 1) for velocity
        divisor = snr if schedule.prediction_type == "epsilon" else snr + 1
        per_image = per_image * torch.minimum(snr, torch.tensor(min_snr_gamma)) / divisor
    if prior:  # DreamBooth: the subject's mean loss plus the weighted mean loss of the class images
        loss = per_image[:subject_rows].mean() + prior["weight"] * per_image[subject_rows:].mean()
    else:
        loss = per_image.mean()
    loss.backward()
    return loss.item(), {name: parameters[name].grad for name in captured["weights"]}


@pytest.mark.parametrize(
    "options",
    [
        dict(masked_loss=True, min_snr_gamma=5.0, flip=True, noise_offset=0.0),
        dict(masked_loss=False, min_snr_gamma=None, flip=False, noise_offset=0.1),
        dict(masked_loss=True, min_snr_gamma=5.0, flip=True, noise_offset=0.0, gradient_checkpointing=True),
        dict(masked_loss=True, min_snr_gamma=5.0, flip=True, noise_offset=0.0, prediction_type="epsilon"),
    ],
    ids=["masked-minsnr-flip", "plain-mse-noise-offset", "gradient-checkpointing", "epsilon-like-sdxl"],
)
def test_one_training_step_matches_the_reference(train_dataset, tmp_path, options):
    captured = run_one_step(train_dataset, tmp_path / "lora", **options)
    assert len(captured["views"]) == 3
    loss, grads = reference_loss(
        train_dataset,
        captured,
        options["masked_loss"],
        options["min_snr_gamma"],
        prediction_type=options.get("prediction_type"),
    )

    assert captured["loss"] == pytest.approx(loss, rel=1e-4)
    assert len(grads) == len(captured["grads"]) > 0
    a_grads = [name for name in grads if "lora_A" in name]
    assert a_grads and all(grads[name].abs().sum() > 0 for name in a_grads)  # the comparison is not vacuous
    for name, reference in grads.items():
        torch.testing.assert_close(captured["grads"][name], reference, rtol=1e-3, atol=1e-6, msg=name)


def test_one_step_with_prior_preservation_matches_the_reference(train_dataset, tmp_path):
    output = tmp_path / "lora"
    options = dict(
        masked_loss=True,
        min_snr_gamma=5.0,
        flip=False,
        noise_offset=0.0,
        prior_preservation=True,
        class_images=1,
        class_inference_steps=2,
        prior_loss_weight=0.5,
    )
    captured = run_one_step(train_dataset, output, **options)
    assert len(captured["views"]) == 3 and captured["noise"].shape[0] == 6  # 3 subject rows + 3 class rows
    prior = {"image": output / "class_images" / "class_0000.png", "caption": "a photo of a person", "weight": 0.5}
    loss, grads = reference_loss(train_dataset, captured, masked=True, min_snr_gamma=5.0, prior=prior)
    without_prior, _ = reference_loss(
        train_dataset, {**captured, "noise": captured["noise"][:3], "timesteps": captured["timesteps"][:3]}, True, 5.0
    )
    assert abs(loss - without_prior) > 1e-3 * loss  # the class rows count: the comparison is not vacuous

    assert captured["loss"] == pytest.approx(loss, rel=1e-4)
    for name, reference in grads.items():
        torch.testing.assert_close(captured["grads"][name], reference, rtol=1e-3, atol=1e-6, msg=name)
