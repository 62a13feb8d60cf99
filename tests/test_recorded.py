"""Recorded results survive papermill execution and read back as the values the notebook computed."""

from __future__ import annotations

import nbformat
import pytest

from sdxlab.recorded import read_recorded, record


def test_values_recorded_in_a_notebook_read_back_exactly(tmp_path):
    import papermill

    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.cells = [
        nbformat.v4.new_code_cell("import numpy as np\nfrom sdxlab.recorded import record"),
        nbformat.v4.new_code_cell("record({'faces': np.int64(3), 'mean': np.float32(0.25), 'name': 'x'})"),
        nbformat.v4.new_code_cell("record({'mean': 0.5, 'missing': float('nan')})"),
    ]
    source, executed = tmp_path / "in.ipynb", tmp_path / "out.ipynb"
    nbformat.write(notebook, source)
    papermill.execute_notebook(str(source), str(executed), progress_bar=False, kernel_name="python3")
    assert read_recorded(executed) == {"faces": 3, "mean": 0.5, "name": "x", "missing": None}


def test_a_notebook_that_recorded_nothing_is_an_error_naming_it(tmp_path):
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell("1 + 1")]
    path = tmp_path / "empty.ipynb"
    nbformat.write(notebook, path)
    with pytest.raises(ValueError, match="empty.ipynb has no recorded results"):
        read_recorded(path)


def test_record_refuses_values_that_are_not_plain_json():
    with pytest.raises(TypeError, match="not a plain JSON value"):
        record({"figure": object()})
    assert record({"n": 1}) == {"n": 1}  # outside a kernel it just returns the plain copy
