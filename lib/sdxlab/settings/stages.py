"""Which dataclass declares which notebook's parameters, and everything that follows from the declarations:
the runner's checks, the parameters cells, the command line's help.

Each notebook's parameters cell is the common block followed by its stage's parameters, one line each:
`name = default  # help`. `python -m sdxlab.settings --write` writes the cells; a test checks they are current.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from sdxlab.settings.base import Parameter, Settings, SettingsError
from sdxlab.settings.common import CommonSettings

STAGE_SETTINGS = {
    "01_capture": "sdxlab.capture.settings:CaptureSettings",
    "02_train": "sdxlab.train.config:TrainConfig",
    "03_sample": "sdxlab.sample.settings:SampleSettings",
    "04_evaluate": "sdxlab.evaluate.settings:EvaluateSettings",
    "05_prompt_search": "sdxlab.prompt_search.settings:PromptSearchSettings",
}


def settings_class(stage: str) -> type[Settings]:
    module, _, name = STAGE_SETTINGS[stage].partition(":")
    return getattr(importlib.import_module(module), name)


@cache
def stage_parameters(stage: str) -> tuple[Parameter, ...]:
    """A notebook's parameters in cell order: the common block, then its stage's."""
    return (*CommonSettings.declared(), *settings_class(stage).stage_parameters())


@cache
def all_parameters() -> dict[str, Parameter]:
    """Every notebook parameter by name. A name two notebooks share has one declaration (same default, help)."""
    found: dict[str, Parameter] = {}
    for stage in STAGE_SETTINGS:
        for parameter in stage_parameters(stage):
            seen = found.setdefault(parameter.name, parameter)
            if (seen.default, seen.help) != (parameter.default, parameter.help):
                raise AssertionError(
                    f"{parameter.name} is declared twice with different defaults or help "
                    f"({seen.owner.__name__} and {parameter.owner.__name__}); declare it once"
                )
    return found


def check_values(values: Mapping[str, Any], error: type[Exception] = SettingsError) -> dict[str, Any]:
    """Every value checked against its declaration and converted (numeric text to numbers); one line for the first
    bad one. Names without a declaration pass unchanged (the runner refuses names no notebook declares)."""
    declared = all_parameters()
    checked = {}
    for name, value in values.items():
        checked[name] = declared[name].check(value, error) if name in declared else value
    return checked


# --- the parameters cells -------------------------------------------------------------------------------------


def literal(value: Any) -> str:
    """A default as the cell writes it: plain Python literals, double-quoted strings."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(literal(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{literal(key)}: {literal(item)}" for key, item in value.items()) + "}"
    if isinstance(value, Path):
        return literal(str(value))
    if isinstance(value, float) and value and abs(value) < 0.01:  # 1e-4, not 0.0001
        mantissa, exponent = f"{value:.12e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return repr(value)


def parameters_cell(stage: str) -> str:
    """The source of a notebook's parameters cell, from the declarations."""
    lines = [
        f"{parameter.name} = {literal(parameter.default)}  # {parameter.help}"
        for parameter in CommonSettings.declared()
    ]
    cls = settings_class(stage)
    lines.append(f"# --- {cls.title or stage[3:]}")
    lines += [
        f"{parameter.name} = {literal(parameter.default)}  # {parameter.help}" for parameter in cls.stage_parameters()
    ]
    return "\n".join(lines)


def _parameters_cell_index(notebook) -> int:
    found = [i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", [])]
    if len(found) != 1:
        raise ValueError(f"{notebook.metadata.get('path', 'the notebook')} needs exactly one cell tagged 'parameters'")
    return found[0]


def stale_cells(notebooks_dir: Path, stages: Iterable[str] = STAGE_SETTINGS) -> list[str]:
    """The stages whose committed parameters cell differs from the declarations."""
    import nbformat

    stale = []
    for stage in stages:
        notebook = nbformat.read(notebooks_dir / f"{stage}.ipynb", as_version=4)
        if notebook.cells[_parameters_cell_index(notebook)].source != parameters_cell(stage):
            stale.append(stage)
    return stale


def write_cells(notebooks_dir: Path, stages: Iterable[str] = STAGE_SETTINGS) -> list[str]:
    """Rewrite the parameters cells that differ from the declarations; returns the stages rewritten."""
    import nbformat

    from sdxlab import files

    written = []
    for stage in stale_cells(notebooks_dir, stages):
        path = notebooks_dir / f"{stage}.ipynb"
        notebook = nbformat.read(path, as_version=4)
        notebook.cells[_parameters_cell_index(notebook)].source = parameters_cell(stage)
        files.write_text(path, nbformat.writes(notebook) + "\n")
        written.append(stage)
    return written


def help_text(stages: Iterable[str] = STAGE_SETTINGS) -> str:
    """Every parameter with its default and help, grouped like the parameters cells (for `--help`)."""
    lines = ["parameters (-p NAME=VALUE; defaults are the demo's, profiles change some):", "  common:"]
    lines += [f"    {p.name} = {literal(p.default)}  # {p.help}" for p in CommonSettings.declared()]
    shown = {p.name for p in CommonSettings.declared()}
    for stage in stages:
        rows = [p for p in settings_class(stage).stage_parameters() if p.name not in shown]
        shown.update(p.name for p in rows)
        lines.append(f"  {stage}:")
        lines += [f"    {p.name} = {literal(p.default)}  # {p.help}" for p in rows]
    return "\n".join(lines)
