"""Every training parameter in one dataclass: its default (the demo's), its help and the values it allows.

The notebook's `parameters` cell names them `train_<field>` (plus the common block: model, resolution,
subject_token, class_word, device, seed, and lora_name); `TrainConfig.from_parameters(globals())` maps them and
checks every value at construction. `validate()` adds the checks that look beyond one value (an optimizer's
package, prior preservation's class word) and runs before any model is loaded, so a typo costs a second, not a
model load. The `sdxl` profile holds what real SDXL changes.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sdxlab.settings import CommonSettings, GenerationSettings, Settings, SettingsError, internal, like, setting

LORA_TARGET_PRESETS = {
    # the attention projections: what diffusers' SDXL DreamBooth-LoRA script trains
    "attention": ["to_q", "to_k", "to_v", "to_out.0"],
    # plus the feed-forward layers and the transformer blocks' input/output projections (more capacity)
    "attention+ff": ["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out"],
    # plus the ResNet blocks' two convolutions: the most capacity (the demo's tiny UNet needs it to form a head)
    "attention+ff+conv": [
        "to_q",
        "to_k",
        "to_v",
        "to_out.0",
        "ff.net.0.proj",
        "ff.net.2",
        "proj_in",
        "proj_out",
        "conv1",
        "conv2",
    ],
}
TEXT_ENCODER_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
OPTIMIZERS = ("adamw", "adamw8bit", "prodigy")
LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
# The notebook parameters shared with other stages that training reads (the rest are `train_<field>`).
COMMON_PARAMETERS = ("model", "resolution", "subject_token", "class_word", "device", "seed", "lora_name")

# Parameters that may change between an interrupted run and its resumption without changing the result.
RESUMABLE_CHANGES = frozenset(
    {
        "resume",
        "checkpoint_every",
        "keep_checkpoints",
        "validation_prompts",
        "validation_seeds",
        "validation_steps",
        "validation_guidance",
        "validation_scheduler",
        "gpu_price_per_hour",
        "progress",
        "dataset_dir",
        "output_dir",
        "device",
        "allow_pickle",
        "cache_dir",
        "cuda_graph",
    }
)


class TrainError(SettingsError):
    """Bad training input or a failed run; the message is one sentence that says what to do."""


def _lora_name(value: str) -> str | None:
    if not value or any(c in value for c in "/\\:") or value.startswith("."):
        return 'a plain file name without folders or suffix, e.g. "sdxlab_lora"'
    return None


def _lora_targets(value: str | list[str]) -> str | None:
    if isinstance(value, str) and value not in LORA_TARGET_PRESETS:
        return (
            f"a preset ({', '.join(LORA_TARGET_PRESETS)}) or a list of module names such as ['to_q', 'to_v']; "
            f"{value!r} is not a preset"
        )
    if not isinstance(value, str) and not value:
        return 'a preset such as "attention" or a list naming at least one module; an empty list trains nothing'
    return None


def _seeds(value: list[int]) -> str | None:
    return "a list of whole numbers of at least 0" if any(seed < 0 for seed in value) else None


@dataclass
class TrainConfig(Settings):
    """All training parameters; the defaults are the demo's (the tiny model in a minute on a CPU)."""

    prefix = "train_"
    title = "training"
    error = TrainError

    # where: the capture stage's dataset folder and this stage's output folder (outputs/<run>/lora)
    dataset_dir: Path = internal(Path("outputs/demo/dataset"))
    output_dir: Path = internal(Path("outputs/demo/lora"))
    # the common block
    model: str = like(CommonSettings, "model")
    resolution: int = like(CommonSettings, "resolution")
    subject_token: str = like(CommonSettings, "subject_token")
    class_word: str = like(CommonSettings, "class_word")
    device: str = like(CommonSettings, "device")
    seed: int = like(CommonSettings, "seed")
    lora_name: str = setting(
        "sdxlab_lora",
        "file name of the LoRA in outputs/<run>/lora/ (no folders, no suffix)",
        check=_lora_name,
        parameter="lora_name",
    )
    # length and batch
    steps: int = setting(720, "optimizer steps; SDXL: 500-1000 for ~20 photos", minimum=1)
    batch_size: int | Literal["auto"] = setting(
        "auto", 'images per step and GPU; "auto": the largest that fits free GPU memory (2 on a CPU)', minimum=1
    )
    gradient_accumulation: int = setting(
        1, "micro-batches per optimizer step (a bigger batch without more memory)", minimum=1
    )
    # optimisation
    optimizer: str = setting(
        "adamw",
        '"adamw" (fused on CUDA), "adamw8bit" (needs bitsandbytes), "prodigy" (needs prodigyopt)',
        choices=OPTIMIZERS,
    )
    learning_rate: float = setting(
        2e-3,
        "LoRA learning rate: 1e-4 for SDXL (the tiny demo model needs 2e-3 to learn in 720 steps); 1.0 with prodigy",
        minimum=0,
    )
    lr_scheduler: str = setting("cosine", ", ".join(LR_SCHEDULERS), choices=LR_SCHEDULERS)
    lr_warmup_steps: int = setting(10, "steps over which the learning rate rises from 0", minimum=0)
    adam_beta1: float = internal(0.9)
    adam_beta2: float = internal(0.999)
    adam_weight_decay: float = setting(1e-4, "AdamW weight decay on the LoRA weights", minimum=0)
    adam_epsilon: float = internal(1e-8)
    max_grad_norm: float = setting(1.0, "gradient clipping; 0 turns it off", minimum=0)
    # LoRA
    lora_rank: int = setting(32, "LoRA rank: 4 small and fast, 16-32 more capacity for faces", minimum=1)
    lora_alpha: float | None = setting(None, "LoRA alpha; None: equal to the rank (scale 1)", above=0)
    lora_dropout: float = setting(0.0, "dropout inside the LoRA layers", minimum=0, below=1)
    lora_targets: str | list[str] = setting(
        "attention+ff+conv",
        '"attention" (q, k, v, out), "attention+ff" (adds feed-forward and projections), "attention+ff+conv" (adds '
        "the ResNet convolutions), or a list of module names",
        check=_lora_targets,
    )
    # text encoders and pivotal tuning
    text_encoder: bool = setting(False, "also train LoRA on both text encoders (slower, more memory)")
    text_encoder_lr: float | None = setting(
        None, "text-encoder LoRA learning rate; None: train_learning_rate", minimum=0
    )
    pivotal_tuning: bool = setting(
        False, "learn new tokens <s0><s1> for you in both text encoders (replace subject_token in prompts)"
    )
    pivotal_tokens: int = setting(2, "how many new tokens stand for you", minimum=1)
    pivotal_fraction: float = setting(
        0.5, "the embeddings train for this first fraction of the steps, then freeze", above=0, maximum=1
    )
    embedding_lr: float = setting(3e-4, "learning rate of the new token embeddings", minimum=0)
    # data and loss
    flip: bool = setting(
        False, "also train on mirror images: twice the views, but a face's own asymmetries (parting, smile) blur"
    )
    masked_loss: bool = setting(True, "weight the loss by the capture's face masks (face 1.0, background lower)")
    min_snr_gamma: float | None = setting(
        5.0,
        "min-SNR loss weighting gamma (Hang et al. 2023; steadier training, the usual SDXL choice); "
        "None: every noise level weighs alike",
        above=0,
    )
    noise_offset: float = setting(0.0, "e.g. 0.0357: lets the model learn darker and brighter pictures", minimum=0)
    prior_preservation: bool = setting(
        False, "mix in class images made by the base model, so not every person becomes you"
    )
    class_images: int = setting(
        100, "how many class images (generated once, kept in outputs/<run>/lora/class_images/)", minimum=1
    )
    class_prompt: str | None = setting(None, 'None: "a photo of a <class_word>"')
    class_inference_steps: int = setting(25, "sampling steps per class image", minimum=1)
    prior_loss_weight: float = setting(1.0, "weight of the class images' loss", minimum=0)
    # precision and memory
    precision: str = setting(
        "auto", '"auto": bf16 where supported, fp16 with loss scaling otherwise, fp32 on a CPU', choices=PRECISIONS
    )
    gradient_checkpointing: bool | Literal["auto"] = setting(
        "auto", 'True / False; "auto": only when even batch 1 does not fit'
    )
    cuda_graph: bool | Literal["auto"] = setting(
        "auto",
        '"auto": on a CUDA GPU each step\'s forward and backward replay from a CUDA graph (much faster at '
        "small batches; train/graphed.py says when it cannot); False: always eager; True: required",
    )
    # checkpoints, pictures, cost
    checkpoint_every: int = setting(240, "steps between checkpoints (each with validation images)", minimum=1)
    keep_checkpoints: int = setting(3, "newest checkpoints kept; 0 keeps all", minimum=0)
    resume: bool = setting(False, "True: continue from the newest checkpoint (same parameters required)")
    validation_prompts: list[str] = setting(
        ["a photo of {subject} {class_word}", "a portrait of {subject} {class_word} as an astronaut"],
        "{subject}: your token(s)",
    )
    validation_seeds: list[int] = setting(
        [0], "one validation picture per prompt and seed at every checkpoint", check=_seeds
    )
    validation_steps: int = like(
        GenerationSettings, "steps", default=24, help="sampling steps per validation picture (25-30 for SDXL)"
    )
    validation_guidance: float = like(
        GenerationSettings,
        "guidance",
        default=1.0,
        help="classifier-free guidance of the validation pictures (5 for SDXL; 1.0 turns it off, where the demo's "
        "toy draws its clearest faces)",
    )
    validation_scheduler: str = like(
        GenerationSettings,
        "scheduler",
        default="euler_a",
        help="sampler of the validation pictures, one of sample_scheduler's (the demo's toy draws faces with euler_a)",
    )
    gpu_price_per_hour: float = setting(0.0, "for the cost line, in dollars per GPU hour; 0: unknown", minimum=0)
    progress: bool = internal(True)  # tqdm progress bar
    allow_pickle: bool = internal(False)  # passed to the model loader (pickle files can run code)

    # --- construction -------------------------------------------------------------------------------

    @classmethod
    def from_notebook_parameters(cls, namespace: Mapping[str, Any], **overrides: Any) -> TrainConfig:
        """Build from a notebook's variables: the common block, `lora_name` and every `train_<field>`."""
        return cls.from_parameters(namespace, **overrides)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.dataset_dir = Path(self.dataset_dir)
        self.output_dir = Path(self.output_dir)

    # --- derived values -----------------------------------------------------------------------------

    @property
    def alpha(self) -> float:
        return float(self.lora_alpha if self.lora_alpha is not None else self.lora_rank)

    @property
    def target_modules(self) -> list[str]:
        if isinstance(self.lora_targets, str):
            return list(LORA_TARGET_PRESETS[self.lora_targets])
        return list(self.lora_targets)

    @property
    def pivotal_steps(self) -> int:
        """Steps during which the new token embeddings train (0 without pivotal tuning)."""
        return math.ceil(self.steps * self.pivotal_fraction) if self.pivotal_tuning else 0

    @property
    def token_strings(self) -> list[str]:
        """What stands for the subject in prompts: the new tokens with pivotal tuning, else the subject token."""
        if self.pivotal_tuning:
            return [f"<s{i}>" for i in range(self.pivotal_tokens)]
        return [self.subject_token]

    @property
    def class_prompt_text(self) -> str:
        return self.class_prompt or f"a photo of a {self.class_word}"

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["dataset_dir"] = str(self.dataset_dir)
        values["output_dir"] = str(self.output_dir)
        return values

    def fingerprint(self) -> dict[str, Any]:
        """The values that must not change between an interrupted run and its resumption."""
        return {k: v for k, v in self.to_dict().items() if k not in RESUMABLE_CHANGES}

    # --- validation ---------------------------------------------------------------------------------

    def validate(self) -> TrainConfig:
        """Raise TrainError with one clear sentence for the first bad value; return self when all is well."""
        for problem in self._problems():
            raise TrainError(problem)
        return self

    def _problems(self):
        """What one field's declaration cannot say: packages an optimizer needs, rules across fields."""
        if self.optimizer == "prodigy" and importlib.util.find_spec("prodigyopt") is None:
            yield (
                "train_optimizer='prodigy' needs the prodigyopt package: `pip install prodigyopt` "
                "(or `pip install -e .[optimizers]`), or use train_optimizer='adamw'."
            )
        elif self.optimizer == "prodigy" and self.learning_rate < 0.1:
            yield (
                f"train_optimizer='prodigy' finds its own step size and expects train_learning_rate=1.0 "
                f"(got {self.learning_rate})."
            )
        elif self.optimizer == "adamw8bit" and importlib.util.find_spec("bitsandbytes") is None:
            yield (
                "train_optimizer='adamw8bit' needs the bitsandbytes package (NVIDIA GPUs): "
                "`pip install bitsandbytes`, or use train_optimizer='adamw'."
            )
        if self.prior_preservation and not self.class_word.strip() and not self.class_prompt:
            yield 'prior preservation needs class_word (e.g. "person") or train_class_prompt.'
