"""bench/gpu_check: the prepared GPU check runs here as a dry run (tiny model, CPU), so it cannot rot before the
next session with a GPU spends its minutes on it."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import nbformat
import pytest

from sdxlab.layout import project_root

PROJECT = project_root()
sys.path.insert(0, str(PROJECT / "bench"))

import gpu_check  # noqa: E402


@pytest.mark.slow
def test_dry_run_writes_the_report_the_gpu_session_reads(tmp_path):
    """Environment, the model as a local folder through load_pipeline, and the captured-step equivalence check,
    with the packages the GPU image lacks hidden; only the files the run tool brings back are written."""
    out, work = tmp_path / "out", tmp_path / "work"
    completed = subprocess.run(
        [
            "bash",
            str(PROJECT / "bench" / "gpu_check.sh"),
            "--dry-run",
            "--parts",
            "environment,model,equivalence",
            "--out",
            str(out),
            "--work",
            str(work),
            "--budget",
            "300",
        ],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert {path.name for path in out.iterdir()} <= set(gpu_check.RESULT_FILES)
    parts = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [(part["part"], part["status"]) for part in parts] == [
        ("environment", "ok"),
        ("model", "ok"),
        ("equivalence", "ok"),
    ]
    model = parts[1]["figures"]
    assert model["folder"].startswith(str(work)) and model["dtypes"]["unet"] == "float32"
    assert parts[0]["figures"]["versions"]["diffusers"] != "missing"

    report = json.loads((out / "equivalence.json").read_text())
    assert report["passed"] and report["mode"] == "eager" and len(report["steps"]) == 4
    assert all(row["gradient_relative"] < 1e-5 and row["loss_relative"] < 1e-5 for row in report["steps"])
    summary = (out / "summary.md").read_text()
    assert "DRY RUN" in summary and "| equivalence | ok |" in summary and "passed=True" in summary
    assert "[gpu_check] equivalence: ok" in (out / "gpu_check.log").read_text()


def test_notebook_cells_run_with_the_profile_and_overrides_laid_over_the_parameters_cell(tmp_path, capsys, monkeypatch):
    notebook = nbformat.v4.new_notebook()
    parameters = nbformat.v4.new_code_cell(
        'run = "demo"  # run\nresolution = 128  # size\nmodel = "tiny"  # model\ntrain_steps = 60  # steps\n'
    )
    parameters.metadata["tags"] = ["parameters"]
    notebook.cells = [
        nbformat.v4.new_markdown_cell("# a stage"),
        parameters,
        nbformat.v4.new_code_cell(
            "from IPython.display import display\nseen = (run, resolution, model, train_steps)\ndisplay({'shown': 1})"
        ),
    ]
    nbformat.write(notebook, tmp_path / "02_train.ipynb")
    monkeypatch.setattr(gpu_check, "BLOCKED", {"IPython"})  # as on the GPU image: the notebook gets a stand-in display
    check = gpu_check.Check(out=tmp_path, work=tmp_path, dry=True, deadline=time.monotonic() + 60)
    namespace = gpu_check.run_notebook(check, "02_train", "sdxl", {"run": "gpu"}, notebooks=tmp_path)
    # the sdxl profile's resolution and model and train_steps, the override's run
    assert namespace["seen"] == ("gpu", 1024, "stabilityai/stable-diffusion-xl-base-1.0", 500)
    assert "{'shown': 1}" in capsys.readouterr().out
    with pytest.raises(ValueError, match="declares no parameter train_stepz"):
        gpu_check.run_notebook(check, "02_train", "sdxl", {"train_stepz": 1}, notebooks=tmp_path)


def test_a_part_over_its_budget_is_stopped_and_the_next_part_still_runs(tmp_path, monkeypatch):
    def slow(check):
        while True:
            time.sleep(0.05)

    monkeypatch.setattr(
        gpu_check,
        "PARTS",
        {
            "slow": (slow, 1, ()),
            "quick": (lambda check: {"fine": 1}, 30, ()),
            "broken": (lambda check: 1 / 0, 30, ("slow",)),
        },
    )
    monkeypatch.setattr(gpu_check, "SUMMARY_RESERVE_S", 0)
    monkeypatch.setattr(gpu_check, "MIN_PART_S", 0.5)
    check = gpu_check.Check(out=tmp_path, work=tmp_path, dry=True, deadline=time.monotonic() + 60)
    started = time.monotonic()
    for name in ("slow", "quick", "broken"):
        gpu_check.run_part(check, name)
    assert time.monotonic() - started < 45  # the endless part was stopped (importing torch takes some of it)
    statuses = {part["part"]: part["status"] for part in check.parts}
    assert statuses == {"slow": "over budget", "quick": "ok", "broken": "skipped"}
    assert check.parts[1]["figures"] == {"fine": 1}
    assert "needs slow" in check.parts[2]["reason"]
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 3


def test_bench_sample_keeps_the_other_variants_when_one_fails(monkeypatch, capsys):
    import bench_sample

    def run_variant(sampler, fuse, graphs, batch, steps, resolution):
        if graphs:
            raise RuntimeError("capture failed")

    class FakeSampler:
        def disable_cuda_graphs(self):
            pass

    monkeypatch.setattr(bench_sample, "run_variant", run_variant)
    calls = {"stock": (None, False), "fused": (True, False), "graphs": (True, True)}
    seconds = bench_sample.measure_interleaved(FakeSampler(), calls, 1, 1, 64, 1, on_gpu=False)
    assert isinstance(seconds["stock"], float) and isinstance(seconds["fused"], float)
    assert seconds["graphs"] == "failed: RuntimeError: capture failed"
    rows = [bench_sample.row(label, 1, value, seconds["stock"]) for label, value in seconds.items()]
    assert rows[2]["seconds_per_image"] is None and rows[2]["note"].startswith("failed")
    bench_sample.print_table(rows)
    assert "failed: RuntimeError" in capsys.readouterr().out
