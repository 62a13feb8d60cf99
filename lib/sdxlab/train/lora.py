"""LoRA adapters through peft, attached the way diffusers' own SDXL DreamBooth-LoRA script attaches them.

The frozen base weights stay in the training dtype (bf16/fp16 on a GPU); the small LoRA matrices are kept in
float32 so that Adam's tiny updates are not rounded away.
"""

from __future__ import annotations

import torch
from peft import LoraConfig, get_peft_model_state_dict, set_peft_model_state_dict

from sdxlab.train.config import TEXT_ENCODER_TARGETS, TrainConfig, TrainError


def add_lora(model, config: TrainConfig, target_modules: list[str], what: str) -> list[torch.nn.Parameter]:
    """Freeze `model`, attach a LoRA adapter to `target_modules` and return its (float32) parameters."""
    model.requires_grad_(False)
    lora_config = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.alpha,
        lora_dropout=config.lora_dropout,
        init_lora_weights="gaussian",
        target_modules=target_modules,
    )
    try:
        model.add_adapter(lora_config)
    except ValueError as error:  # peft: none of the target modules exist in this model
        raise TrainError(
            f"train_lora_targets {target_modules} match no layer of the {what} ({error}); "
            'use the preset "attention", "attention+ff" or "attention+ff+conv".'
        ) from None
    parameters = [p for p in model.parameters() if p.requires_grad]
    for parameter in parameters:
        parameter.data = parameter.data.float()
    return parameters


def add_unet_lora(unet, config: TrainConfig) -> list[torch.nn.Parameter]:
    return add_lora(unet, config, config.target_modules, "UNet")


def add_text_encoder_lora(text_encoder, config: TrainConfig) -> list[torch.nn.Parameter]:
    return add_lora(text_encoder, config, TEXT_ENCODER_TARGETS, "text encoder")


def lora_state(model) -> dict[str, torch.Tensor]:
    """The adapter's weights as peft names them (no "unet." prefix), copied to the CPU in float32."""
    # the token table is not part of the LoRA, even when pivotal tuning resized it (its new rows are saved apart)
    state = get_peft_model_state_dict(model, save_embedding_layers=False)
    return {key: value.detach().float().cpu().clone() for key, value in state.items()}


def load_lora_state(model, state: dict[str, torch.Tensor]) -> None:
    result = set_peft_model_state_dict(model, state)
    unexpected = getattr(result, "unexpected_keys", None) or []
    if unexpected:
        raise TrainError(
            f"The checkpoint's LoRA does not fit this model ({len(unexpected)} unknown weights, e.g. "
            f"{unexpected[0]}); resume with the same model and LoRA settings, or start over."
        )


def adapter_state(pipe, text_encoders: bool, new_tokens=None) -> dict[str, dict[str, torch.Tensor] | None]:
    """What trains, as it is now: the UNet's LoRA, both text encoders' (when they train) and the new tokens' rows."""
    return {
        "unet": lora_state(pipe.unet),
        "text_encoder": lora_state(pipe.text_encoder) if text_encoders else None,
        "text_encoder_2": lora_state(pipe.text_encoder_2) if text_encoders else None,
        "embeddings": new_tokens.state() if new_tokens is not None else None,
    }


def load_adapters(pipe, parts: dict[str, dict[str, torch.Tensor]], text_encoders: bool, new_tokens=None) -> None:
    """Put a checkpoint's trainable weights (`checkpoint.split_adapters`) back: the inverse of `adapter_state`."""
    load_lora_state(pipe.unet, parts["unet"])
    if text_encoders:
        load_lora_state(pipe.text_encoder, parts["text_encoder"])
        load_lora_state(pipe.text_encoder_2, parts["text_encoder_2"])
    if new_tokens is not None:
        new_tokens.load_state(parts["embeddings"])


def parameter_groups(pipe, config: TrainConfig, new_tokens=None) -> list[dict]:
    """Attach the LoRA adapters; the optimiser's groups: the UNet's LoRA, the text encoders' (at
    train_text_encoder_lr), and the new tokens' rows (at train_embedding_lr, without weight decay)."""
    groups = [{"params": add_unet_lora(pipe.unet, config)}]
    if config.text_encoder:
        text_lr = config.text_encoder_lr if config.text_encoder_lr is not None else config.learning_rate
        for encoder in (pipe.text_encoder, pipe.text_encoder_2):
            groups.append({"params": add_text_encoder_lora(encoder, config), "lr": text_lr})
    if new_tokens is not None:
        groups.append({"params": list(new_tokens.parameters()), "lr": config.embedding_lr, "weight_decay": 0.0})
    return groups


def set_training_mode(pipe, text_encoders: bool) -> None:
    """The UNet trains (its LoRA dropout is on); the text encoders only when their LoRA trains."""
    pipe.unet.train()
    for encoder in (pipe.text_encoder, pipe.text_encoder_2):
        encoder.train(text_encoders)


def checkpoint_weights(pipe, text_encoders: bool, new_tokens=None) -> dict[str, torch.Tensor]:
    """`adapter_state` as one flat dict of tensors, as a checkpoint stores it (`checkpoint.join_adapters`)."""
    from sdxlab.train.checkpoint import join_adapters

    return join_adapters(adapter_state(pipe, text_encoders, new_tokens))
