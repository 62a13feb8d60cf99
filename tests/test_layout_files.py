"""Run folders and atomic writes."""

from __future__ import annotations

import pytest

from sdxlab import files
from sdxlab.layout import RunLayout, outputs_root, project_root, resolve_path


def test_relative_parameters_resolve_against_the_project(monkeypatch, project):
    monkeypatch.chdir(project / "notebooks")  # notebooks run with their own folder as working folder
    assert project_root() == project
    assert resolve_path("data/sample") == project / "data" / "sample"


def test_a_notebook_copy_outside_the_checkout_finds_the_project_through_the_environment(monkeypatch, tmp_path, project):
    monkeypatch.chdir(tmp_path)  # e.g. make test's nbmake run, on copies of the notebooks
    monkeypatch.delenv("SDXLAB_PROJECT", raising=False)
    assert resolve_path("data/sample") == tmp_path / "data" / "sample"  # without it: the wrong folder
    monkeypatch.setenv("SDXLAB_PROJECT", str(project))
    assert resolve_path("data/sample") == project / "data" / "sample"
    assert project_root(tmp_path) == tmp_path  # an explicit start still wins


def test_outputs_root_precedence(monkeypatch, tmp_path, project):
    monkeypatch.chdir(project)
    monkeypatch.delenv("SDXLAB_OUTPUTS", raising=False)
    assert outputs_root() == project / "outputs"
    monkeypatch.setenv("SDXLAB_OUTPUTS", str(tmp_path))
    assert outputs_root() == tmp_path
    assert outputs_root(tmp_path / "explicit") == tmp_path / "explicit"


def test_run_layout_names_every_stage_folder(tmp_path):
    layout = RunLayout.for_run("me-2026", tmp_path)
    assert layout.dataset == tmp_path / "me-2026" / "dataset"
    assert {p.name for p in (layout.lora, layout.samples, layout.metrics, layout.prompt_search, layout.notebooks)} == {
        "lora",
        "samples",
        "metrics",
        "prompt_search",
        "notebooks",
    }
    with pytest.raises(ValueError, match="folder name"):
        RunLayout.for_run("../escape", tmp_path)


def test_interrupted_write_keeps_the_old_file_and_leaves_no_partial(tmp_path):
    target = tmp_path / "manifest.json"
    files.write_json(target, {"version": 1})

    def crash(path):
        path.write_text('{"version": 2, "trunc')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        files.write_with(target, crash)
    assert files.write_json is not None and target.read_text().strip().endswith("}")
    assert '"version": 1' in target.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_writers_round_trip(tmp_path):
    import json

    import pandas as pd
    from PIL import Image

    files.write_jsonl(tmp_path / "m.jsonl", [{"file_name": "images/0001.png", "text": "a photo of sks person"}])
    assert json.loads((tmp_path / "m.jsonl").read_text().splitlines()[0])["text"] == "a photo of sks person"
    files.write_csv(tmp_path / "t.csv", pd.DataFrame({"a": [1, 2]}))
    assert pd.read_csv(tmp_path / "t.csv")["a"].tolist() == [1, 2]
    files.write_image(tmp_path / "i.png", Image.new("RGB", (8, 8), "red"))
    assert Image.open(tmp_path / "i.png").getpixel((0, 0)) == (255, 0, 0)


@pytest.mark.parametrize(
    "umask, file_mode, folder_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700), (0o002, 0o664, 0o775)]
)
def test_written_files_and_folders_respect_the_umask(tmp_path, umask, file_mode, folder_mode):
    import os
    import stat

    previous = os.umask(umask)
    try:
        written = files.write_text(tmp_path / "a.txt", "hello")
        with files.atomic_folder(tmp_path / "built") as staging:
            files.write_bytes(staging / "inner.bin", b"x")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(written.stat().st_mode) == file_mode
    assert stat.S_IMODE((tmp_path / "built").stat().st_mode) == folder_mode
    assert stat.S_IMODE((tmp_path / "built" / "inner.bin").stat().st_mode) == file_mode


def test_partials_left_by_a_killed_writer_are_cleaned_up(tmp_path):
    import signal
    import subprocess
    import sys
    import textwrap
    import time

    target = tmp_path / "big.bin"
    # a writer killed with SIGKILL half-way through (no finally block runs)
    script = textwrap.dedent(f"""
        import time
        from sdxlab import files
        def slow(path):
            path.write_bytes(b"half")
            print("writing", flush=True)
            time.sleep(60)
        files.write_with({str(target)!r}, slow)
    """)
    writer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "writing"
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)
    time.sleep(0.1)
    leftovers = [p for p in tmp_path.iterdir()]
    assert len(leftovers) == 1 and files.is_partial(leftovers[0]) and not target.exists()
    (tmp_path / "keep.txt").write_text("mine")
    (tmp_path / ".hidden-but-mine").write_text("mine")
    assert files.remove_stale_partials(tmp_path) == leftovers
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden-but-mine", "keep.txt"]
