"""The committed notebooks: clean (no outputs), one commented parameters cell, the shared header, and a
demo run that executes all five into the run folder."""

from __future__ import annotations

import ast

import nbformat
import pytest

from sdxlab.recorded import read_recorded
from sdxlab.run import STAGES

COMMON_PARAMETERS = ["run", "outputs_dir", "model", "resolution", "subject_token", "class_word", "device", "seed"]


def notebooks(project):
    return [project / "notebooks" / f"{stage}.ipynb" for stage in STAGES]


@pytest.mark.parametrize("stage", STAGES)
def test_notebook_is_committed_without_outputs(project, stage):
    notebook = nbformat.read(project / "notebooks" / f"{stage}.ipynb", as_version=4)
    dirty = [
        i
        for i, cell in enumerate(notebook.cells)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
    ]
    assert not dirty, f"{stage}.ipynb carries outputs in cells {dirty}; clear them before committing"


@pytest.mark.parametrize("stage", STAGES)
def test_notebook_shape(project, stage):
    notebook = nbformat.read(project / "notebooks" / f"{stage}.ipynb", as_version=4)
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    assert notebook.cells[0].cell_type == "markdown" and "Reads" in notebook.cells[0].source
    parameter_cells = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(parameter_cells) == 1, "exactly one cell tagged 'parameters'"
    source = parameter_cells[0].source
    names = [node.targets[0].id for node in ast.parse(source).body if isinstance(node, ast.Assign)]
    assert names[: len(COMMON_PARAMETERS)] == COMMON_PARAMETERS, "the common block comes first, in order"
    assert len(names) == len(set(names)), "a parameter is declared twice"
    for line in source.splitlines():
        if line.strip() and not line.lstrip().startswith("#") and "=" in line and not line.startswith(" "):
            assert "#" in line, f"parameter line without a comment: {line!r}"
    for node in ast.parse(source).body:  # plain literals only, so papermill and profiles can override them
        if isinstance(node, ast.Assign):
            ast.literal_eval(node.value)


def test_demo_run_executes_all_five_notebooks(demo_run):
    """Every code cell of every notebook ran, none recorded an error, and each ended with its recorded results."""
    executed = sorted(path.name for path in demo_run.notebooks.glob("*.ipynb"))
    assert executed == [f"{stage}.ipynb" for stage in STAGES]
    for path in demo_run.notebooks.glob("*.ipynb"):
        notebook = nbformat.read(path, as_version=4)
        code = [c for c in notebook.cells if c.cell_type == "code"]
        assert all(c.execution_count is not None for c in code), f"{path.name} has cells that did not run"
        errors = [o for c in code for o in c.outputs if o.output_type == "error"]
        assert not errors, f"{path.name} recorded an error"
        assert read_recorded(path), f"{path.name} recorded no results"
