"""Importing sdxlab changes nothing outside it; the logging filter that hides transformers' torchvision notice
is installed when a pipeline is loaded, once."""

import os
import subprocess
import sys
from pathlib import Path

LIB = Path(__file__).resolve().parents[1] / "lib"

CODE = """
import logging
import sdxlab.models, sdxlab.sample, sdxlab.train, sdxlab.evaluate, sdxlab.prompt_search
notices = logging.getLogger("transformers.utils.import_utils")
assert not notices.filters, "importing sdxlab installed a logging filter"
sdxlab.models.hide_torchvision_notice()
sdxlab.models.hide_torchvision_notice()
assert len(notices.filters) == 1, notices.filters
from diffusers import StableDiffusionXLPipeline  # what triggers the notice without torchvision
"""


def test_importing_sdxlab_installs_no_logging_filter_and_loading_hides_the_notice_once():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(LIB), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "requires torchvision" not in result.stderr
