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
    frame = pd.read_csv(search_folder / "candidates.csv", keep_default_na=False)
    summary = json.loads((search_folder / "best_prompts.json").read_text())
    score_columns = list(summary["objective"]["columns"])
    recipe = ["negative_prompt", "guidance", "lora_scale"]
    assert list(frame.columns) == [
        "intent",
        "round",
        "proposer",
        "prompt",
        "seed",
        *recipe,
        *score_columns,
        "total",
        "settings",
        "image",
    ]
    assert {"clip_t", "copy", "intent_parts", "part_who", "part_where", "weakest_part"} <= set(score_columns), (
        "meaning part by part, and the copy penalty, are kept per picture"
    )
    weights = summary["objective"]["weights"]
    assert {"clip_t", "intent_parts", "mood"} <= set(weights), summary["objective"]["notes"]
    # the demo intent names no mood: mood does not apply (empty cells) and the other weights are scaled up
    assert (frame["mood"] == "").all()
    present = {name: weight for name, weight in weights.items() if name != "mood"}
    scale = sum(w for w in weights.values() if w > 0) / sum(w for w in present.values() if w > 0)
    expected = scale * sum(weight * frame[name].astype(float) for name, weight in present.items())
    assert frame["total"].to_numpy() == pytest.approx(expected.to_numpy()), summary["objective"]["formula"]
    # demo profile: 1 intent, round 0 (the start) + 3 rounds x 4 candidates, each on 2 search seeds; a candidate
    # is a prompt with its recipe
    candidates = frame.groupby("round").apply(lambda rows: len(rows.drop_duplicates(["prompt", *recipe])))
    assert candidates.tolist() == [1, 4, 4, 4]
    # search_recipe is [] by default: every candidate carries the start's recipe (the generation settings)
    assert set(frame["proposer"]) == {"start", "vocabulary"}
    assert set(zip(frame["negative_prompt"], frame["guidance"], frame["lora_scale"], strict=True)) == {
        (
            summary["generation"]["negative_prompt"],
            summary["generation"]["guidance"],
            summary["generation"]["lora_scale"],
        )
    }
    assert set(frame["seed"]) == set(summary["search_seeds"]) and len(summary["search_seeds"]) == 2
    assert not frame.duplicated(["prompt", *recipe, "seed"]).any()
    assert frame["prompt"].str.contains("sks person").all()
    assert (frame.loc[frame["round"] == 0, "proposer"] == "start").all()
    assert all((search_folder / image).is_file() for image in frame["image"]), "each row's picture is cached"


def test_best_prompts_json_reports_heldout_uplift_consistently(search_folder):
    summary = json.loads((search_folder / "best_prompts.json").read_text())
    heldout = pd.read_csv(search_folder / "heldout.csv")
    assert list(summary)[0] == "what_the_numbers_mean" and "headline" in summary["what_the_numbers_mean"]
    assert summary["random_weights"] is True and "meaningless" in summary["note"]
    assert not set(summary["heldout_seeds"]) & set(summary["search_seeds"])
    assert len(summary["heldout_seeds"]) >= 6, "a paired test can reach p < 0.05"
    intent = summary["intents"][0]
    assert list(intent)[:2] == ["intent", "headline"], "the unbiased headline comes first"
    assert 1 <= len(intent["finalists"]) <= 3
    assert intent["headline"] == intent["finalists"][0] and intent["headline"]["search_rank"] == 1
    search_totals = [item["search"]["total"] for item in intent["finalists"]]
    assert search_totals == sorted(search_totals, reverse=True), "finalists keep the search's own order"
    start = heldout[heldout["role"] == "start"].set_index("seed")["total"]
    assert intent["start"]["heldout"]["total"] == pytest.approx(start.mean())
    for item in intent["finalists"]:
        rows = heldout[heldout["search_rank"] == item["search_rank"]].set_index("seed")["total"]
        assert set(heldout.loc[heldout["search_rank"] == item["search_rank"], "guidance"]) == {
            item["recipe"]["guidance"]
        }
        assert sorted(rows.index) == sorted(summary["heldout_seeds"])
        assert item["uplift"]["mean"] == pytest.approx((rows - start).mean())
        assert item["uplift"]["ci_low"] <= item["uplift"]["mean"] <= item["uplift"]["ci_high"]
        assert 0 < item["uplift"]["p"] <= item["uplift"]["p_holm"] <= 1
    candidates = pd.read_csv(search_folder / "candidates.csv")
    assert {item["prompt"] for item in intent["finalists"]} <= set(candidates["prompt"])


def test_likeness_uses_the_calibration_04_stored(demo_run, search_folder):
    summary = json.loads((search_folder / "best_prompts.json").read_text())
    metrics = json.loads((demo_run.metrics / "summary.json").read_text())
    scale = summary["objective"].get("likeness_scale")
    if metrics["calibration"]["floor"] is None or metrics["calibration"]["floor"]["mean"] is None:
        assert scale is None and any("Likeness is left out" in note for note in summary["objective"]["notes"])
    else:
        assert scale["floor"] == pytest.approx(metrics["calibration"]["floor"]["mean"])
        assert scale["ceiling"] == pytest.approx(metrics["calibration"]["ceiling"]["mean"])
        assert "04_evaluate" in scale["source"]


def test_notebook_shows_plots_and_ends_with_prompts_to_paste(demo_run, search_folder):
    for name in ("leaderboard.png", "heldout_grid.png", "pareto.png", "pareto_front.png"):
        assert (search_folder / name).stat().st_size > 10_000
    notebook = nbformat.read(demo_run.notebooks / "05_prompt_search.ipynb", as_version=4)
    paste_cell = next(cell for cell in notebook.cells if cell.cell_type == "code" and "paste_ready" in cell.source)
    pasted = "".join(output.get("text", "") for output in paste_cell.outputs)
    summary = json.loads((search_folder / "best_prompts.json").read_text())
    assert all(item["prompt"] in pasted for item in summary["intents"][0]["finalists"])
    assert pasted.index("HEADLINE") < pasted.index(summary["intents"][0]["headline"]["prompt"])
    assert "meaningless" in pasted
    images = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if "image/png" in output.get("data", {})
    ]
    assert len(images) >= 2, "leaderboard and held-out grid are shown"


def test_recorded_results_match_best_prompts_json(demo_run, search_folder):
    recorded = read_recorded(demo_run.notebooks / "05_prompt_search.ipynb")
    summary = json.loads((search_folder / "best_prompts.json").read_text())
    intent = summary["intents"][0]
    heldout = pd.read_csv(search_folder / "heldout.csv")
    assert recorded["intents"] == len(summary["intents"])
    candidates = pd.read_csv(search_folder / "candidates.csv", keep_default_na=False)
    tried = len(candidates.drop_duplicates(["prompt", "negative_prompt", "guidance", "lora_scale"]))
    assert recorded["prompts_tried"] == intent["prompts_tried"] == tried
    assert recorded["start_prompt"] == intent["start_prompt"]
    assert recorded["start_heldout_total"] == pytest.approx(heldout.loc[heldout["role"] == "start", "total"].mean())
    assert recorded["headline_prompt"] == intent["headline"]["prompt"] == intent["finalists"][0]["prompt"]
    assert recorded["headline_chosen_by"] == intent["headline_chosen_by"]
    assert recorded["headline_heldout_total"] == pytest.approx(intent["headline"]["heldout"]["total"])
    assert recorded["headline_uplift"] == pytest.approx(intent["headline"]["uplift"])
    assert recorded["headline_recipe"] == intent["headline"]["recipe"]
    assert set(recorded["headline_recipe"]) == {"negative_prompt", "guidance", "lora_scale"}
    uplift = recorded["headline_uplift"]
    assert uplift["ci_low"] <= uplift["mean"] <= uplift["ci_high"] and uplift["seeds"] == len(intent["heldout_seeds"])
    assert 0 < uplift["p"] <= uplift["p_holm"] <= 1
    assert recorded["finalists"] == [item["prompt"] for item in intent["finalists"]]
    assert recorded["heldout_choice_uplift"] == pytest.approx((intent["heldout_choice"] or {}).get("uplift"))
    assert recorded["random_weights"] is True


def test_endpoint_key_never_lands_in_the_run_folder(demo_run, tmp_path, monkeypatch):
    from sdxlab.run import run_pipeline

    # a copy of the demo run without its search, so this run searches from scratch with the endpoint
    outputs = tmp_path / "outputs"
    shutil.copytree(demo_run.root, outputs / "leak-test", ignore=shutil.ignore_patterns("prompt_search", "notebooks"))
    monkeypatch.setenv("SDXLAB_TEST_KEY", SECRET)
    logs = []
    with FakeOpenAIServer(script=["500"]) as server:
        layout = run_pipeline(
            "demo",
            overrides={
                "outputs_dir": str(outputs),
                "search_proposers": ["endpoint", "vocabulary"],
                "search_endpoint_url": server.base_url,
                "search_endpoint_model": "fake-model",
                "search_endpoint_api_key_env": "SDXLAB_TEST_KEY",
                "search_rounds": 1,
                "search_candidates_per_round": 2,
                "search_seed_count": 1,
                "search_heldout_seed_count": 2,
                "search_finalists": 1,
            },
            run="leak-test",
            only=["05"],
            log=logs.append,
        )
    assert server.requests and all(r["headers"]["Authorization"] == f"Bearer {SECRET}" for r in server.requests)
    frame = pd.read_csv(RunLayout.for_run("leak-test", outputs).prompt_search / "candidates.csv")
    assert "endpoint" in set(frame["proposer"]), "the endpoint's answer after a 500 was used"
    executed = (layout.notebooks / "05_prompt_search.ipynb").read_text()
    assert "SDXLAB_TEST_KEY" in executed, "the parameter holds the variable's name"
    for path in layout.root.rglob("*"):
        if path.is_file() and path.suffix in {".ipynb", ".csv", ".json", ".txt", ".log", ".md"}:
            assert SECRET not in path.read_text(errors="replace"), path
    assert SECRET not in "\n".join(map(str, logs))


def test_every_parameter_of_05_is_declared_to_the_runner(project):
    """The runner accepts only what papermill finds in the parameters cell: a comment papermill cannot parse
    (an "=" in it) silently hides that parameter from `-p` and the profiles."""
    import ast

    from sdxlab.run import declared_parameters

    notebook = project / "notebooks" / "05_prompt_search.ipynb"
    cell = next(c for c in nbformat.read(notebook, as_version=4).cells if "parameters" in c.metadata.get("tags", []))
    assigned = [node.targets[0].id for node in ast.parse(cell.source).body if isinstance(node, ast.Assign)]
    assert set(declared_parameters(notebook)) == set(assigned)


def test_why_csv_takes_away_each_added_part_of_the_headline(demo_run, search_folder):
    from sdxlab.prompt_search.why import added_parts

    summary = json.loads((search_folder / "best_prompts.json").read_text())
    intent = summary["intents"][0]
    headline = intent["headline"]
    why = pd.read_csv(search_folder / "why.csv", keep_default_na=False)
    assert read_recorded(demo_run.notebooks / "05_prompt_search.ipynb")["why_rows"] == len(why)
    added = added_parts(headline["prompt"], intent["start_prompt"])
    if not added:  # the search kept your start: nothing to take away
        assert why.empty
        return
    assert why["kind"].iloc[0] == "headline" and why["prompt"].iloc[0] == headline["prompt"]
    # the headline row is the headline's own pictures on the search seeds (from the cache): the same mean
    assert why["total"].iloc[0] == pytest.approx(headline["search"]["total"]) and why["change_total"].iloc[0] == 0
    assert list(why.loc[why["kind"] == "words", "removed"]) == added[:6]
    for _, row in why.iloc[1:].iterrows():
        assert row["removed"] not in row["prompt"].split(", ")
        assert row["change_total"] == pytest.approx(row["total"] - why["total"].iloc[0])
