"""Recorded results: the headline figures a notebook ends with, kept inside the executed notebook.

Each notebook's last code cell calls `record({...})` with plain JSON values (counts, means, file names).
The values are displayed as a small table for the reader and stored in the cell's output under the mime type
`MIME`, so a test (or a person comparing runs) reads them back from the executed notebook with
`read_recorded(path)` instead of searching printed text (the shape of microsoft/recommenders' results cell).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MIME = "application/vnd.sdxlab.recorded+json"


def _plain(value: Any) -> Any:
    """JSON-safe copy: numpy scalars become Python numbers, paths strings, NaN/inf None."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"record(): {value!r} ({type(value).__name__}) is not a plain JSON value")


def record(values: Mapping[str, Any]) -> dict[str, Any]:
    """Show `values` and store them in this cell's output for `read_recorded`; returns the plain copy."""
    plain = _plain(dict(values))
    text = "\n".join(f"{key}: {json.dumps(item)}" for key, item in plain.items())
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:  # plain Python: nothing to display into
        return plain
    if get_ipython() is not None:
        display({MIME: plain, "text/plain": "Recorded results\n" + text}, raw=True)
    return plain


def read_recorded(notebook: Path | str) -> dict[str, Any]:
    """Every value recorded in an executed notebook (later records win on a repeated key).

    Raises `ValueError` naming the notebook when it recorded nothing (it failed early, or was not executed).
    """
    cells = json.loads(Path(notebook).read_text(encoding="utf-8")).get("cells", [])
    found: dict[str, Any] = {}
    seen = False
    for cell in cells:
        for output in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            data = output.get("data", {})
            if MIME in data:
                payload = data[MIME]
                found.update(json.loads(payload) if isinstance(payload, str) else payload)
                seen = True
    if not seen:
        raise ValueError(f"{notebook} has no recorded results: it did not run to its last cell")
    return found
