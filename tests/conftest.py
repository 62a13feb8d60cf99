"""Shared fixtures: the tiny offline SDXL, the bundled sample photos, and one demo run of all notebooks.

The tiny model is built once per machine (cached under $SDXLAB_CACHE or ~/.cache/sdxlab). The demo run
executes every notebook once with papermill on the demo profile into a temporary outputs folder; the
per-stage notebook tests assert on what it wrote.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sdxlab.layout import RunLayout, project_root

PROJECT = project_root(Path(__file__).parent)


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


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> RunLayout:
    """All five notebooks executed once, in order, on the demo profile (as `make demo` does)."""
    from sdxlab.run import run_pipeline

    outputs = tmp_path_factory.mktemp("outputs")
    return run_pipeline("demo", overrides={"outputs_dir": str(outputs)}, run="demo-test", log=lambda *_: None)


# --- faces (capture, evaluate): a real photo of six different people, fetched once from PyPI --------------

INSIGHTFACE_WHEEL = "insightface==2.1"  # a pure-Python wheel that carries insightface/data/images/t1.jpg


@pytest.fixture(scope="session")
def group_photo(request):
    """insightface's t1.jpg (1280x886, six different people) as a PIL image, or skip when PyPI is unreachable.

    The photo's own licence is not stated, so it is read from the downloaded wheel at test time rather than
    committed. The wheel is cached under $SDXLAB_CACHE or pytest's cache folder, so it is fetched once.
    """
    import io
    import os
    import subprocess
    import sys
    import zipfile

    from PIL import Image

    cache = Path(os.environ["SDXLAB_CACHE"]) / "insightface" if os.environ.get("SDXLAB_CACHE") else None
    folder = cache or Path(request.config.cache.mkdir("insightface"))
    folder.mkdir(parents=True, exist_ok=True)
    wheels = sorted(folder.glob("insightface-*.whl"))
    if not wheels:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", INSIGHTFACE_WHEEL,
                   "-d", str(folder), "--quiet", "--disable-pip-version-check"]
        try:
            subprocess.run(command, check=True, capture_output=True, timeout=120)
        except (subprocess.SubprocessError, OSError) as error:
            pytest.skip(f"could not download {INSIGHTFACE_WHEEL} from PyPI for its group photo ({error}); needs network")
        wheels = sorted(folder.glob("insightface-*.whl"))
    with zipfile.ZipFile(wheels[-1]) as wheel:
        image = Image.open(io.BytesIO(wheel.read("insightface/data/images/t1.jpg")))
        image.load()
    return image.convert("RGB")
