"""The papermill runner and the command line: profiles, overrides, stage selection, failures."""

from __future__ import annotations

import subprocess
import sys

import nbformat
import pytest

from sdxlab.run import STAGES, RunError, load_profile, parse_override, plan_run, run_pipeline, select_stages


def test_profiles_list_and_unknown_profile_is_one_line():
    with pytest.raises(RunError) as error:
        plan_run("no-such-profile")
    assert "valid profiles: " in str(error.value) and "demo" in str(error.value) and "sdxl" in str(error.value)


def test_unknown_parameter_lists_the_valid_ones():
    with pytest.raises(RunError) as error:
        plan_run("demo", {"reslution": 64})
    message = str(error.value)
    assert "reslution" in message and "resolution" in message


def test_overrides_are_typed_and_reach_only_the_notebooks_that_declare_them(tmp_path):
    overrides = dict(parse_override(text) for text in ["resolution=64", f"outputs_dir={tmp_path}"])
    assert overrides["resolution"] == 64
    layout, plan = plan_run("demo", overrides, run="typed")
    assert [item.stage for item in plan] == list(STAGES)
    assert all(item.parameters["resolution"] == 64 and item.parameters["run"] == "typed" for item in plan)
    assert layout.root == tmp_path / "typed"
    assert all(item.output == layout.notebooks / f"{item.stage}.ipynb" for item in plan)


def test_stage_selection():
    assert select_stages(["2,3"]) == ["02_train", "03_sample"]
    assert select_stages(["evaluate"]) == ["04_evaluate"]
    assert select_stages(start_from="04") == ["04_evaluate", "05_prompt_search"]
    with pytest.raises(RunError, match="valid stages"):
        select_stages(["07"])


def test_bad_override_syntax():
    with pytest.raises(RunError, match="key=value"):
        parse_override("resolution")


def _write_notebooks(folder, failing_stage):
    """Five minimal notebooks; one raises, to check how a failure is reported."""
    for stage in STAGES:
        notebook = nbformat.v4.new_notebook()
        notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        names = {"run", "outputs_dir", *load_profile("demo")}
        parameters = nbformat.v4.new_code_cell("\n".join(f"{name} = None  # {name}" for name in sorted(names)))
        parameters.metadata["tags"] = ["parameters"]
        body = "raise ValueError('the photos folder is empty')" if stage == failing_stage else "print('ok')"
        notebook.cells = [parameters, nbformat.v4.new_code_cell(body)]
        nbformat.write(notebook, folder / f"{stage}.ipynb")


def test_failing_notebook_stops_the_run_naming_notebook_cell_and_error(tmp_path):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    _write_notebooks(notebooks, failing_stage="02_train")
    with pytest.raises(RunError) as error:
        run_pipeline(
            "demo", {"outputs_dir": str(tmp_path / "out")}, run="failing", notebooks=notebooks, log=lambda *_: None
        )
    message = str(error.value)
    assert "02_train" in message and "cell" in message and "the photos folder is empty" in message
    executed = tmp_path / "out" / "failing" / "notebooks"
    assert (executed / "01_capture.ipynb").exists()  # what ran before the failure is kept
    first = nbformat.read(executed / "01_capture.ipynb", as_version=4)
    injected = [c.source for c in first.cells if c.metadata.get("tags") == ["injected-parameters"]]
    assert injected and str(tmp_path / "out") in injected[0]  # papermill injected the run's parameters
    assert (executed / "02_train.ipynb").exists()  # the failing notebook is kept for its traceback
    assert not (executed / "03_sample.ipynb").exists()


def test_command_line_errors_are_one_line():
    result = subprocess.run(
        [sys.executable, "-m", "sdxlab", "run", "--profile", "demo", "-p", "stepz=3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "Unknown parameter(s) stepz" in result.stderr
