"""The playground in a real browser: JupyterLab on localhost, 03_sample run through the Run menu in headless Chromium.

Needs Debian's chromium (`apt-get install -y chromium`; `make test` installs it when missing): Playwright drives
it through `executable_path`, since its own browser download cannot reach the network on CI machines.
The server runs on a random free port with a token, with its settings, config, runtime and IPython folders
in a temporary directory, and serves a temporary copy of the notebook (demo parameters made smaller) whose
run folder, in a temporary outputs folder, holds a LoRA made from the tiny model. Set SDXLAB_SCREENSHOT=1 to
write the panel's picture to docs/playground.png.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
RUN = "browser"
# Smaller than the demo values so the whole test stays well under a minute on two busy cores.
NOTEBOOK_OVERRIDES = {
    "run": RUN,
    "sample_seeds": [1],
    "sample_steps": 2,
    "sample_lora_scales": [0.0, 1.0],
    "sample_prompts": ["a photo of {subject}"],
}
SETTINGS = {  # JupyterLab user settings: no news toast over the page, no autosave
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def served_notebook(project, tmp_path_factory, tiny_model_dir) -> Path:
    """A temporary copy of 03_sample.ipynb with small parameters, and a run folder holding a tiny LoRA."""
    from sdxlab.layout import RunLayout

    root = tmp_path_factory.mktemp("lab")
    notebook = nbformat.read(project / "notebooks" / "03_sample.ipynb", as_version=4)
    parameters = next(cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", []))
    lines = parameters.source.splitlines()
    for name, value in NOTEBOOK_OVERRIDES.items():
        lines = [f"{name} = {value!r}" if line.startswith(f"{name} = ") else line for line in lines]
    parameters.source = "\n".join(lines)
    (root / "notebook").mkdir()
    nbformat.write(notebook, root / "notebook" / "03_sample.ipynb")
    make_tiny_lora_run(RunLayout.for_run(RUN, root / "outputs"))
    return root / "notebook" / "03_sample.ipynb"


def make_tiny_lora_run(layout) -> None:
    """A run folder as the train stage leaves it: a random LoRA on the tiny UNet and its train_config.json."""
    import torch
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig, get_peft_model_state_dict

    from sdxlab.models import tiny_sdxl
    from sdxlab.train.export import export_lora

    unet = UNet2DConditionModel.from_pretrained(tiny_sdxl() / "unet")  # the UNet alone: all a UNet LoRA needs
    config = LoraConfig(
        r=4, lora_alpha=4, init_lora_weights="gaussian", target_modules=["to_q", "to_k", "to_v", "to_out.0"]
    )
    unet.add_adapter(config)
    generator = torch.Generator().manual_seed(0)
    for name, parameter in unet.named_parameters():
        if "lora_B" in name:
            parameter.data = torch.randn(parameter.shape, generator=generator) * 0.3
    files = export_lora(
        layout.ensure(layout.lora),
        "subject",
        get_peft_model_state_dict(unet),
        unet_lora_config=config,
        unet_config=unet.config,
    )
    (layout.lora / "train_config.json").write_text(
        json.dumps(
            {
                "model": "tiny",
                "subject_token": "sks",
                "class_word": "person",
                "lora_name": "subject",
                "lora_file": files.diffusers.name,
                "kohya_file": files.kohya.name,
                "embeddings_file": None,
                "tokens": [],
            }
        )
    )


@pytest.fixture(scope="module")
def lab_url(served_notebook, tmp_path_factory):
    """A JupyterLab server on 127.0.0.1 (random free port, token), stopped after the module."""
    if not CHROMIUM.exists():
        pytest.skip(
            f"{CHROMIUM} is missing: install Debian's chromium (`apt-get install -y chromium`; `make test` does)"
        )
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
    state = tmp_path_factory.mktemp("jupyter-state")
    for relative, values in SETTINGS.items():
        (state / "settings" / relative).parent.mkdir(parents=True, exist_ok=True)
        (state / "settings" / relative).write_text(json.dumps(values))
    port, token = free_port(), secrets.token_hex(16)
    environment = {
        **os.environ,
        "SDXLAB_OUTPUTS": str(served_notebook.parent.parent / "outputs"),
        "JUPYTERLAB_SETTINGS_DIR": str(state / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(state / "workspaces"),
        "JUPYTER_CONFIG_DIR": str(state / "config"),
        "JUPYTER_RUNTIME_DIR": str(state / "runtime"),
        "IPYTHONDIR": str(state / "ipython"),
        "OMP_NUM_THREADS": "1",  # tiny model: one thread is fastest, above all on a busy machine
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
    }
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={served_notebook.parent}",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")
    log = (state / "server.log").open("w")
    server = subprocess.Popen(command, env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_server(f"http://127.0.0.1:{port}/api/status?token={token}", server, state / "server.log")
        yield f"http://127.0.0.1:{port}/lab/tree/{served_notebook.name}?token={token}"
    finally:
        stop(server)
        log.close()


def wait_for_server(url: str, server: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"JupyterLab exited with code {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"JupyterLab did not answer within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def stop(server: subprocess.Popen) -> None:
    """Stop the server we started (it shuts its kernel down); kill its process group if it hangs."""
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def test_generate_in_the_playground_shows_an_image_and_grows_the_history(lab_url, served_notebook, project):
    from playwright.sync_api import expect, sync_playwright

    cell_count = len(nbformat.read(served_notebook, as_version=4).cells)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(lab_url)
            # ready = the real notebook is rendered (a one-cell placeholder comes first) and the kernel is idle
            page.wait_for_function(
                f"document.querySelectorAll('.jp-Notebook .jp-Cell').length === {cell_count}", timeout=60_000
            )
            page.wait_for_function("document.body.innerText.includes('| Idle')", timeout=60_000)
            page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
            page.locator("[data-command='runmenu:run-all']").click()

            panel = page.locator(".sdxlab-playground")
            expect(panel).to_be_visible(timeout=60_000)
            expect(page.locator(".sdxlab-status")).to_contain_text("with the LoRA")
            page.locator(".sdxlab-prompt textarea").fill("a photo of {subject} on the moon")
            generate = page.locator("button.sdxlab-generate")
            expect(generate).to_be_enabled()
            generate.click()

            expect(page.locator(".sdxlab-history .sdxlab-history-entry")).to_have_count(1, timeout=30_000)
            image = page.locator(".sdxlab-output img.sdxlab-image").first
            expect(image).to_be_visible()
            assert image.evaluate("element => element.complete && element.naturalWidth") == 128
            expect(page.locator(".sdxlab-status")).to_contain_text("Done")
            expect(generate).to_be_enabled()
            if os.environ.get("SDXLAB_SCREENSHOT") == "1":
                take_screenshot(page, panel, project / "docs" / "playground.png")
        finally:
            browser.close()
    saved = served_notebook.parent.parent / "outputs" / RUN / "samples" / "playground"
    assert any(saved.glob("playground001_*.png"))  # the click's picture was saved with its parameters


def take_screenshot(page, panel, target: Path) -> None:
    """docs/playground.png: the panel after a second generation (two pictures, two history entries)."""
    from playwright.sync_api import expect

    page.locator(".sdxlab-count input").fill("2")
    page.locator(".sdxlab-count input").press("Enter")
    page.locator("button.sdxlab-generate").click()
    expect(page.locator(".sdxlab-history .sdxlab-history-entry")).to_have_count(2, timeout=30_000)
    expect(page.locator(".sdxlab-output img.sdxlab-image")).to_have_count(2)
    panel.scroll_into_view_if_needed()
    scratch = target.with_suffix(".partial.png")
    panel.screenshot(path=str(scratch))
    shutil.move(scratch, target)
