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
