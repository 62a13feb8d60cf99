"""The captured training step (sdxlab.train.graphed): static inputs refilled in place give the eager step's loss and
LoRA gradients, step after step with changing batches; what disables it; a failed capture falls back to eager."""

from __future__ import annotations

import pytest
import torch

from sdxlab.models import load_pipeline
from sdxlab.train import TrainConfig, TrainError
from sdxlab.train.graphed import CapturedStep, choose_step_runner, compare_with_eager, graph_blockers
from sdxlab.train.lora import add_unet_lora
from sdxlab.train.step import Batch, diffusion_loss, draw_noise, draw_timesteps

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LATENT = 8  # 64 px: the tiny UNet's smallest comfortable size


@pytest.fixture(scope="module")
def tiny_unet():
    """The tiny pipeline's UNet with a rank-4 LoRA whose B matrices are non-zero (so every gradient is non-zero)."""
    from diffusers import DDPMScheduler

    pipe = load_pipeline("tiny", device="cpu")
    unet = pipe.unet
    trainable = add_unet_lora(unet, TrainConfig(lora_rank=4))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in unet.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    unet.train()
    return unet, DDPMScheduler.from_config(pipe.scheduler.config), trainable


def make_batch(unet, seed: int, subject: int = 2, prior: int = 0, masked: bool = True, device="cpu") -> Batch:
    """A random micro-batch shaped as the trainer's make_batch builds it (subject rows first, then class rows)."""
    generator = torch.Generator().manual_seed(seed)
    rows = subject + prior
    time_dims = 6 * unet.config.addition_time_embed_dim
    pooled = unet.config.projection_class_embeddings_input_dim - time_dims

    def random(*shape):
        return torch.randn(shape, generator=generator).to(device)

    weights = (torch.rand((rows, 1, LATENT, LATENT), generator=generator) * 0.7 + 0.3).to(device) if masked else None
    return Batch(
        latents=random(rows, 4, LATENT, LATENT),
        prompt_embeds=random(rows, 77, unet.config.cross_attention_dim),
        pooled=random(rows, pooled),
        time_ids=torch.tensor([[96.0, 96.0, 16.0, 16.0, 64.0, 64.0]] * rows, device=device),
        loss_weights=weights,
        is_prior=torch.tensor([False] * subject + [True] * prior, device=device),
    )


def settings(**options) -> TrainConfig:
    return TrainConfig(
        **{
            "lora_rank": 4,
            "learning_rate": 1e-2,
            "min_snr_gamma": 5.0,
            "noise_offset": 0.05,
            "max_grad_norm": 1.0,
            "device": "cpu",
            **options,
        }
    )


def test_refilled_runner_gives_the_eager_loss_and_gradients_step_after_step(tiny_unet):
    """Three optimizer steps of two micro-batches each (accumulation), with prior-preservation rows, masks, min-SNR
    and a noise offset: every step's loss and all LoRA gradients agree with the eager step (fp32: to ~1e-6)."""
    unet, scheduler, trainable = tiny_unet
    config = settings(gradient_accumulation=2, prior_preservation=True)
    steps = [[make_batch(unet, seed=10 * step + micro, subject=2, prior=1) for micro in range(2)] for step in range(3)]
    report = compare_with_eager(
        CapturedStep(unet, scheduler, trainable, config, None, torch.device("cpu"), capture=False), steps
    )

    assert report["passed"] and report["mode"] == "eager"
    assert len(report["steps"]) == 3
    losses = [row["loss_eager"] for row in report["steps"]]
    assert len(set(losses)) == 3  # the batches really changed
    for row in report["steps"]:
        assert row["loss_other"] == pytest.approx(row["loss_eager"], rel=1e-5)
        assert row["gradient_relative"] < 1e-5
    assert report["lora_tensors"] == len(trainable) and report["gradient_accumulation"] == 2


def test_static_inputs_are_refilled_in_place_and_never_stale(tiny_unet):
    unet, scheduler, trainable = tiny_unet
    config = settings()
    runner = CapturedStep(unet, scheduler, trainable, config, None, torch.device("cpu"), capture=False)
    pointers = None
    for seed in (1, 2, 3):
        batch = make_batch(unet, seed)
        for parameter in trainable:
            parameter.grad = None
        loss, noise, timesteps = runner.forward_backward(batch, torch.Generator().manual_seed(seed))
        got = [parameter.grad.clone() for parameter in trainable]
        if pointers is None:
            pointers = {name: tensor.data_ptr() for name, tensor in runner.static.items()}
        assert {name: tensor.data_ptr() for name, tensor in runner.static.items()} == pointers
        assert torch.equal(runner.static["latents"], batch.latents) and torch.equal(runner.static["noise"], noise)

        # the eager step on the same batch, noise and timesteps
        generator = torch.Generator().manual_seed(seed)
        noise_eager = draw_noise(batch.latents, generator, config.noise_offset)
        timesteps_eager = draw_timesteps(len(batch.latents), scheduler.config.num_train_timesteps, generator, "cpu")
        assert torch.equal(noise, noise_eager) and torch.equal(timesteps, timesteps_eager)
        for parameter in trainable:
            parameter.grad = None
        eager = diffusion_loss(unet, scheduler, batch, noise_eager, timesteps_eager, config.min_snr_gamma)
        eager.backward()
        assert loss.item() == pytest.approx(eager.item(), rel=1e-6)
        for mine, reference in zip(got, (parameter.grad for parameter in trainable), strict=True):
            torch.testing.assert_close(mine, reference, rtol=1e-5, atol=1e-8)
    for parameter in trainable:
        parameter.grad = None


def test_gradients_add_up_over_micro_batches_like_backward(tiny_unet):
    unet, scheduler, trainable = tiny_unet
    runner = CapturedStep(unet, scheduler, trainable, settings(), None, torch.device("cpu"), capture=False)
    for parameter in trainable:
        parameter.grad = None
    runner.forward_backward(make_batch(unet, 5), torch.Generator().manual_seed(0))
    first = [parameter.grad.clone() for parameter in trainable]
    runner.forward_backward(make_batch(unet, 6), torch.Generator().manual_seed(1))
    both = [parameter.grad.clone() for parameter in trainable]
    for parameter in trainable:
        parameter.grad = None
    runner.forward_backward(make_batch(unet, 6), torch.Generator().manual_seed(1))
    second = [parameter.grad for parameter in trainable]
    for total, a, b in zip(both, first, second, strict=True):
        torch.testing.assert_close(total, a + b)
    for parameter in trainable:
        parameter.grad = None


def test_after_release_the_runner_builds_its_step_again_and_agrees(tiny_unet):
    unet, scheduler, trainable = tiny_unet
    runner = CapturedStep(unet, scheduler, trainable, settings(), None, torch.device("cpu"), capture=False)
    batch = make_batch(unet, 4)
    first, _, _ = runner.forward_backward(batch, torch.Generator().manual_seed(3))
    runner.release()
    assert runner.static_grads is None and runner.graph is None
    for parameter in trainable:
        parameter.grad = None
    again, _, _ = runner.forward_backward(batch, torch.Generator().manual_seed(3))
    assert again.item() == first.item() and all(parameter.grad is not None for parameter in trainable)
    for parameter in trainable:
        parameter.grad = None


def test_a_batch_of_another_shape_is_refused_with_a_clear_message(tiny_unet):
    unet, scheduler, trainable = tiny_unet
    runner = CapturedStep(unet, scheduler, trainable, settings(), None, torch.device("cpu"), capture=False)
    runner.forward_backward(make_batch(unet, 1, subject=2), torch.Generator().manual_seed(0))
    with pytest.raises(TrainError, match="same batch shape every step"):
        runner.forward_backward(make_batch(unet, 2, subject=3), torch.Generator().manual_seed(0))
    for parameter in trainable:
        parameter.grad = None


def test_a_failed_capture_warns_in_one_line_and_trains_on_eagerly(tiny_unet, capsys):
    """On this CPU-only machine the capture itself fails (no CUDA): the fallback must give the eager results."""
    unet, scheduler, trainable = tiny_unet
    steps = [[make_batch(unet, seed)] for seed in (7, 8)]
    runner = CapturedStep(unet, scheduler, trainable, settings(), None, torch.device("cpu"), capture=True)
    report = compare_with_eager(runner, steps)
    warning = capsys.readouterr().err.strip()
    assert warning.startswith("Warning: capturing the training step in a CUDA graph failed") and "\n" not in warning
    assert report["mode"].startswith("eager (capture failed")
    assert not report["passed"]  # the check asked for a capture and did not get one
    assert all(row["gradient_relative"] < 1e-5 for row in report["steps"])

    required = CapturedStep(
        unet, scheduler, trainable, settings(cuda_graph=True), None, torch.device("cpu"), capture=True, required=True
    )
    with pytest.raises(TrainError, match="train_cuda_graph=True but capturing the training step failed"):
        required.forward_backward(make_batch(unet, 1), torch.Generator().manual_seed(0))
    for parameter in trainable:
        parameter.grad = None


def test_what_disables_the_captured_step():
    cuda = torch.device("cuda")
    assert graph_blockers(TrainConfig(), cuda) == []
    assert (
        graph_blockers(
            TrainConfig(gradient_accumulation=4, prior_preservation=True, optimizer="prodigy", learning_rate=1.0), cuda
        )
        == []
    )
    assert "train_text_encoder=True" in graph_blockers(TrainConfig(text_encoder=True), cuda)[0]
    assert "train_pivotal_tuning=True" in graph_blockers(TrainConfig(pivotal_tuning=True), cuda)[0]
    assert "fp16" in graph_blockers(TrainConfig(), cuda, loss_scaling=True)[0]
    assert graph_blockers(TrainConfig(cuda_graph=False), cuda) == ["train_cuda_graph=False"]
    assert "not a CUDA GPU" in graph_blockers(TrainConfig(), torch.device("cpu"))[0]

    # "auto" on the CPU: the loop's eager step; True where it cannot be captured: an error naming why
    assert choose_step_runner(TrainConfig(), None, None, [], None, torch.device("cpu"), show=False) is None
    with pytest.raises(TrainError, match="train_text_encoder=True"):
        choose_step_runner(TrainConfig(cuda_graph=True, text_encoder=True), None, None, [], None, cuda, show=False)
    with pytest.raises(TrainError, match="train_cuda_graph must be True or False or 'auto'"):
        TrainConfig(cuda_graph="yes").validate()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need an NVIDIA GPU")
def test_captured_step_matches_eager_on_the_gpu():
    from diffusers import DDPMScheduler

    pipe = load_pipeline("tiny", device="cuda", dtype="fp32")
    trainable = add_unet_lora(pipe.unet, TrainConfig(lora_rank=4))
    pipe.unet.train()
    steps = [[make_batch(pipe.unet, seed, device="cuda")] for seed in range(4)]
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    report = compare_with_eager(
        CapturedStep(pipe.unet, scheduler, trainable, settings(device="cuda"), None, "cuda"), steps
    )
    assert report["mode"] == "captured", report["mode"]
    assert report["passed"], report


def test_the_loops_own_draw_is_used_so_several_processes_stay_equal_to_one(tiny_unet):
    """The loop passes its draw (the whole global micro-batch, this process's rows): the runner must use exactly
    that noise and those timesteps, not a draw of its own (which would break multi-process equality)."""
    unet, scheduler, trainable = tiny_unet
    runner = CapturedStep(unet, scheduler, trainable, settings(), None, torch.device("cpu"), capture=False)
    batch = make_batch(unet, 7)
    fixed_noise = torch.randn(batch.latents.shape, generator=torch.Generator().manual_seed(99))
    fixed_timesteps = torch.tensor([5, 900])
    loss, noise, timesteps = runner.forward_backward(
        batch, torch.Generator().manual_seed(0), draw=lambda _batch, _generator: (fixed_noise, fixed_timesteps)
    )
    assert torch.equal(noise, fixed_noise) and torch.equal(timesteps, fixed_timesteps)
    eager = diffusion_loss(unet, scheduler, batch, fixed_noise, fixed_timesteps, settings().min_snr_gamma)
    assert loss.item() == pytest.approx(eager.item(), rel=1e-5)
