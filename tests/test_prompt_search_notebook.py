"""05_prompt_search under papermill on the demo profile: what it wrote to prompt_search/, and that an
endpoint's API key never lands in the executed notebook, the CSVs, the JSON or the logs."""

from __future__ import annotations

import json
import shutil

import nbformat
import pandas as pd
import pytest
from fake_openai_server import FakeOpenAIServer

from sdxlab.layout import RunLayout
from sdxlab.recorded import read_recorded

SECRET = "sk-notebook-test-0ddba11-keep-out"


@pytest.fixture(scope="module")
def search_folder(demo_run):
    return demo_run.prompt_search


def test_candidates_csv_has_every_prompt_tried_with_its_sub_scores(search_folder):
    frame = pd.read_csv(search_folder / "candidates.csv")
    summary = json.loads((search_folder / "best_prompts.json").read_text())
    score_columns = list(summary["weights"])
    assert list(frame.columns) == ["intent", "round", "proposer", "prompt", "seed", *score_columns, "total",
                                   "settings", "image"]
    assert "clip_t" in score_columns
    # demo profile: 1 intent, round 0 (the start) + 3 rounds x 4 candidates, each on 2 search seeds
    assert frame.groupby("round")["prompt"].nunique().tolist() == [1, 4, 4, 4]
    assert set(frame["seed"]) == set(summary["search_seeds"]) and len(summary["search_seeds"]) == 2
    assert not frame.duplicated(["prompt", "seed"]).any()
    assert frame["prompt"].str.contains("sks person").all()
    assert (frame.loc[frame["round"] == 0, "proposer"] == "start").all()
    assert all((search_folder / image).is_file() for image in frame["image"]), "each row's picture is cached"


def test_best_prompts_json_reports_heldout_uplift_consistently(search_folder):
    summary = json.loads((search_folder / "best_prompts.json").read_text())
    heldout = pd.read_csv(search_folder / "heldout.csv")
    assert summary["random_weights"] is True and "meaningless" in summary["note"]
    assert not set(summary["heldout_seeds"]) & set(summary["search_seeds"])
    intent = summary["intents"][0]
    assert 1 <= len(intent["best"]) <= 3
    totals = [item["heldout"]["total"] for item in intent["best"]]
    assert totals == sorted(totals, reverse=True), "the leaderboard ranks on held-out scores"
    start = heldout[heldout["role"] == "start"].set_index("seed")["total"]
    assert intent["start"]["heldout"]["total"] == pytest.approx(start.mean())
    for item in intent["best"]:
        rows = heldout[heldout["prompt"] == item["prompt"]].set_index("seed")["total"]
        assert sorted(rows.index) == sorted(summary["heldout_seeds"])
        assert item["uplift"]["mean"] == pytest.approx((rows - start).mean())
        assert item["uplift"]["ci_low"] <= item["uplift"]["mean"] <= item["uplift"]["ci_high"]
    candidates = pd.read_csv(search_folder / "candidates.csv")
    assert {item["prompt"] for item in intent["best"]} <= set(candidates["prompt"])


def test_notebook_shows_plots_and_ends_with_prompts_to_paste(demo_run, search_folder):
    for name in ("leaderboard.png", "heldout_grid.png"):
        assert (search_folder / name).stat().st_size > 10_000
    notebook = nbformat.read(demo_run.notebooks / "05_prompt_search.ipynb", as_version=4)
    paste_cell = next(cell for cell in notebook.cells if cell.cell_type == "code" and "paste_ready" in cell.source)
    pasted = "".join(output.get("text", "") for output in paste_cell.outputs)
    summary = json.loads((search_folder / "best_prompts.json").read_text())
    assert all(item["prompt"] in pasted for item in summary["intents"][0]["best"])
    assert "meaningless" in pasted
    images = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
              if "image/png" in output.get("data", {})]
    assert len(images) >= 2, "leaderboard and held-out grid are shown"


def test_recorded_results_match_best_prompts_json(demo_run, search_folder):
    recorded = read_recorded(demo_run.notebooks / "05_prompt_search.ipynb")
    summary = json.loads((search_folder / "best_prompts.json").read_text())
    intent = summary["intents"][0]
    heldout = pd.read_csv(search_folder / "heldout.csv")
    assert recorded["intents"] == len(summary["intents"])
    assert recorded["prompts_tried"] == intent["prompts_tried"] == pd.read_csv(search_folder / "candidates.csv")["prompt"].nunique()
    assert recorded["start_prompt"] == intent["start_prompt"]
    assert recorded["start_heldout_total"] == pytest.approx(heldout.loc[heldout["role"] == "start", "total"].mean())
    assert recorded["best_prompt"] == intent["best"][0]["prompt"]
    assert recorded["best_heldout_total"] == pytest.approx(intent["best"][0]["heldout"]["total"])
    assert recorded["best_uplift"] == pytest.approx(intent["best"][0]["uplift"])
    assert recorded["best_uplift"]["ci_low"] <= recorded["best_uplift"]["mean"] <= recorded["best_uplift"]["ci_high"]
    assert recorded["search_pick"] == intent["search_pick"]["prompt"]
    assert recorded["random_weights"] is True


def test_endpoint_key_never_lands_in_the_run_folder(demo_run, tmp_path, monkeypatch):
    from sdxlab.run import run_pipeline

    # a copy of the demo run without its search, so this run searches from scratch with the endpoint
    outputs = tmp_path / "outputs"
    shutil.copytree(demo_run.root, outputs / "leak-test", ignore=shutil.ignore_patterns("prompt_search", "notebooks"))
    monkeypatch.setenv("SDXLAB_TEST_KEY", SECRET)
    logs = []
    with FakeOpenAIServer(script=["500"]) as server:
        layout = run_pipeline("demo", overrides={
            "outputs_dir": str(outputs), "search_proposers": ["endpoint", "vocabulary"],
            "search_endpoint_url": server.base_url, "search_endpoint_model": "fake-model",
            "search_endpoint_api_key_env": "SDXLAB_TEST_KEY", "search_rounds": 1, "search_candidates_per_round": 2,
            "search_seed_count": 1, "search_heldout_seed_count": 2, "search_finalists": 1,
        }, run="leak-test", only=["05"], log=logs.append)
    assert server.requests and all(r["headers"]["Authorization"] == f"Bearer {SECRET}" for r in server.requests)
    frame = pd.read_csv(RunLayout.for_run("leak-test", outputs).prompt_search / "candidates.csv")
    assert "endpoint" in set(frame["proposer"]), "the endpoint's answer after a 500 was used"
    executed = (layout.notebooks / "05_prompt_search.ipynb").read_text()
    assert "SDXLAB_TEST_KEY" in executed, "the parameter holds the variable's name"
    for path in layout.root.rglob("*"):
        if path.is_file() and path.suffix in {".ipynb", ".csv", ".json", ".txt", ".log", ".md"}:
            assert SECRET not in path.read_text(errors="replace"), path
    assert SECRET not in "\n".join(map(str, logs))
