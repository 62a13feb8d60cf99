"""Run folders and atomic writes."""

from __future__ import annotations

import pytest

from sdxlab import files
from sdxlab.layout import RunLayout, outputs_root, project_root, resolve_path


def test_relative_parameters_resolve_against_the_project(monkeypatch, project):
    monkeypatch.chdir(project / "notebooks")  # notebooks run with their own folder as working folder
    assert project_root() == project
    assert resolve_path("data/sample") == project / "data" / "sample"


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
        "lora", "samples", "metrics", "prompt_search", "notebooks"}
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
