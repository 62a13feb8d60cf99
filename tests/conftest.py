"""Shared fixtures: the tiny offline SDXL, the bundled sample photos, and one demo run of all notebooks.

The tiny model is built once per machine (cached under $SDXLAB_CACHE or ~/.cache/sdxlab). The demo run
executes every notebook once on the demo defaults into a temporary outputs folder (nbmake's run under
`make test`, papermill's under plain `pytest`); the per-stage notebook tests assert on what it wrote.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sdxlab.layout import RunLayout, project_root
from sdxlab.run import STAGES

PROJECT = project_root(Path(__file__).parent)


@pytest.fixture(scope="module")
def one_torch_thread():
    """The tiny model's operations are too small to gain from threads, and on a busy machine threads fight:
    modules that train or sample the tiny model in-process use one thread (`pytestmark = usefixtures(...)`)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def project() -> Path:
    return PROJECT


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    from sdxlab.models import tiny_sdxl

    return tiny_sdxl()


@pytest.fixture(scope="session")
def sample_photos_dir() -> Path:
    return PROJECT / "data" / "sample"


DEMO_RUN_ENV = "SDXLAB_TEST_DEMO_RUN"  # a demo run folder already executed (make test's nbmake run)


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> RunLayout:
    """All five notebooks executed once, in order, on the demo defaults (as `make demo` does).

    `make test` has nbmake execute the committed notebooks first and names that run folder in
    $SDXLAB_TEST_DEMO_RUN (its executed notebooks in `notebooks/`), so the demo runs once per `make test`;
    plain `pytest` executes them here with papermill, like `make demo`.
    """
    if os.environ.get(DEMO_RUN_ENV):
        layout = RunLayout(Path(os.environ[DEMO_RUN_ENV]))
        missing = [stage for stage in STAGES if not (layout.notebooks / f"{stage}.ipynb").is_file()]
        if missing:
            pytest.fail(f"${DEMO_RUN_ENV} is {layout.root}, but it holds no executed {', '.join(missing)}.")
        return layout
    from sdxlab.run import run_pipeline

    outputs = tmp_path_factory.mktemp("outputs")
    return run_pipeline("demo", overrides={"outputs_dir": str(outputs)}, run="demo-test", log=lambda *_: None)


# --- faces (capture, evaluate): a real photo of six different people, fetched once from PyPI --------------


@pytest.fixture(scope="session")
def group_photo():
    """insightface's t1.jpg (1280x886, six different people) as a PIL image, or skip when PyPI is unreachable.

    The photo's own licence is not stated, so it is read from the downloaded wheel at test time rather than
    committed: the library's own fetch (`sdxlab.evaluate.other_people.group_photo_path`, sha256-checked and
    cached under $SDXLAB_CACHE or ~/.cache/sdxlab), so tests and 04_evaluate share one download.
    """
    from PIL import Image

    from sdxlab.evaluate.other_people import group_photo_path

    path, note = group_photo_path()
    if path is None:
        pytest.skip(f"{note} (the group photo needs PyPI once)")
    with Image.open(path) as image:
        return image.convert("RGB")


# --- train (02_train): a small dataset folder in the capture stage's format, built without capture ---------


def write_train_dataset(
    folder: Path, count: int = 6, resolution: int = 64, seed: int = 0, caption: str = "a photo of sks person"
) -> Path:
    """`folder/images`, `folder/masks` and `metadata.jsonl` as docs/ARCHITECTURE.md describes them.

    Each image is a differently coloured 'face' (an ellipse) on a gradient background; each mask is 255 on
    the ellipse and 77 (background weight 0.3) elsewhere; crop boxes and source sizes vary like real photos'.
    """
    import json

    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    rows = []
    for index in range(count):
        ramp = np.linspace(0, 1, resolution)[None, :, None]
        background = (rng.uniform(0, 255, 3) * ramp + rng.uniform(0, 255, 3) * (1 - ramp)).repeat(resolution, axis=0)
        image = Image.fromarray(background.astype(np.uint8), "RGB")
        box = [
            int(resolution * v) for v in (0.25 + rng.uniform(-0.05, 0.05), 0.2, 0.75 + rng.uniform(-0.05, 0.05), 0.85)
        ]
        ImageDraw.Draw(image).ellipse(box, fill=tuple(int(v) for v in rng.uniform(60, 230, 3)))
        mask = Image.new("L", (resolution, resolution), 77)
        ImageDraw.Draw(mask).ellipse(box, fill=255)
        name = f"{index + 1:04d}.png"
        image.save(folder / "images" / name)
        mask.save(folder / "masks" / name)
        height, width = int(rng.integers(600, 1200)), int(rng.integers(500, 1000))
        side = int(rng.integers(200, min(height, width)))
        left, top = int(rng.integers(0, width - side)), int(rng.integers(0, height - side))
        rows.append(
            {
                "file_name": f"images/{name}",
                "text": caption,
                "mask_file": f"masks/{name}",
                "source": f"synthetic/{name}",
                "face_box": box,
                "crop_box": [left, top, left + side, top + side],
                "original_size": [height, width],
                "upscaled": side < resolution,
            }
        )
    (folder / "metadata.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder


@pytest.fixture
def train_dataset(tmp_path) -> Path:
    """A fresh six-image 64-px dataset folder (see `write_train_dataset`)."""
    return write_train_dataset(tmp_path / "dataset")
