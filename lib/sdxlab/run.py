"""The papermill runner: execute the numbered notebooks in order into outputs/<run>/notebooks/.

Parameters come from `env/profiles/<profile>.yaml`, then `-p key=value` overrides. Each notebook receives
the parameters its `parameters` cell declares; a key no notebook declares is an error, so a typo never
silently runs with the default. Every value is checked against its declaration (`sdxlab.settings`) before the
first notebook starts: a bad one costs one line and no work, and a refused value (a key pasted where a
variable's name belongs) never reaches an executed notebook.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from sdxlab.layout import RunLayout, project_root

STAGES = ("01_capture", "02_train", "03_sample", "04_evaluate", "05_prompt_search")


class RunError(RuntimeError):
    """A run could not start or a notebook failed; the message is meant to be shown as it is."""


class ParameterError(RunError):
    """A parameter, profile or override is wrong: nothing ran. The message names it and what is allowed."""


@dataclass(frozen=True)
class NotebookRun:
    stage: str
    source: Path
    output: Path
    parameters: dict[str, Any]


def _local_kernel_manager_class():
    """A kernel manager that talks to its kernel over Unix sockets instead of loopback TCP.

    Nothing on the network can reach the kernel, and ipykernel stops warning about unencrypted TCP at
    every notebook. The socket files live in the temporary folder, never beside the notebooks.
    """
    import tempfile
    import uuid

    from jupyter_client.manager import AsyncKernelManager
    from traitlets import Unicode, default

    class LocalKernelManager(AsyncKernelManager):
        transport = Unicode("ipc", config=True)

        @default("ip")
        def _default_ip(self) -> str:
            return str(Path(tempfile.gettempdir()) / f"sdxlab-kernel-{uuid.uuid4().hex[:12]}")

    return LocalKernelManager


def notebooks_dir() -> Path:
    return project_root() / "notebooks"


def profiles_dir() -> Path:
    return project_root() / "env" / "profiles"


def available_profiles() -> list[str]:
    return sorted(path.stem for path in profiles_dir().glob("*.yaml"))


def load_profile(name: str, _chain: tuple[str, ...] = ()) -> dict[str, Any]:
    """A profile's parameters (a flat mapping from parameter name to value).

    `extends: <other profile>` starts from that profile's parameters; the profile's own lines override them.
    """
    path = profiles_dir() / f"{name}.yaml"
    if not path.is_file():
        raise ParameterError(f"Unknown profile '{name}'; valid profiles: {', '.join(available_profiles())}.")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ParameterError(f"Profile {path} is not valid YAML ({_yaml_problem(error)}); fix that line.") from None
    if not isinstance(values, dict):
        raise ParameterError(f"Profile {path} must be a mapping of parameter names to values.")
    parent = values.pop("extends", None)
    if parent is not None:
        if parent in (*_chain, name):
            raise ParameterError(
                f"Profile {path} extends '{parent}', which extends it back; remove one of the extends lines."
            )
        values = {**load_profile(str(parent), (*_chain, name)), **values}
    return values


def parse_override(text: str) -> tuple[str, Any]:
    """`key=value` with the value read as YAML, so `steps=20`, `flip=true` and `prompts=[a, b]` get their types.

    YAML 1.1 reads `5e-4` as text; the declarations turn numeric text into a number for number parameters."""
    key, separator, value = text.partition("=")
    if not separator or not key.strip():
        raise ParameterError(f"Parameter override '{text}' must look like key=value.")
    try:
        return key.strip(), yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError as error:
        # the value is not repeated: it may be a secret pasted into the wrong parameter
        raise ParameterError(
            f"The value of -p {key.strip()} is not valid YAML ({_yaml_problem(error)}); quote it, "
            "e.g. -p 'key=\"text\"', or write a list as -p 'key=[a, b]'."
        ) from None


def _yaml_problem(error: yaml.YAMLError) -> str:
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    mark = getattr(error, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


def check_parameters(values: Mapping[str, Any]) -> dict[str, Any]:
    """Every value checked against its declaration and converted; ParameterError names the first bad one."""
    from sdxlab.settings.stages import check_values

    return check_values(values, ParameterError)


@cache
def _declared_parameters(notebook: Path, modified: float) -> tuple[str, ...]:
    import papermill

    return tuple(papermill.inspect_notebook(str(notebook)).keys())


def declared_parameters(notebook: Path) -> tuple[str, ...]:
    """Names in a notebook's `parameters` cell."""
    return _declared_parameters(notebook, notebook.stat().st_mtime)


def select_stages(only: Iterable[str] | None = None, start_from: str | None = None) -> list[str]:
    """The stages to run: all, `only` some (by number or name), or everything from one stage on."""

    def find(token: str) -> str:
        token = token.strip()
        for stage in STAGES:
            if token in (stage, stage[:2], stage[3:], str(int(stage[:2]))):
                return stage
        raise ParameterError(f"Unknown stage '{token}'; valid stages: {', '.join(STAGES)}.")

    if only:
        wanted = {find(token) for item in only for token in str(item).split(",") if token.strip()}
        return [stage for stage in STAGES if stage in wanted]
    if start_from:
        return list(STAGES[STAGES.index(find(start_from)) :])
    return list(STAGES)


def plan_run(
    profile: str,
    overrides: Mapping[str, Any] | None = None,
    run: str | None = None,
    only: Iterable[str] | None = None,
    start_from: str | None = None,
    notebooks: Path | None = None,
) -> tuple[RunLayout, list[NotebookRun]]:
    """Work out which notebooks run with which parameters, and check every parameter name first."""
    notebooks = notebooks or notebooks_dir()
    values = {**load_profile(profile), **dict(overrides or {})}
    stages = select_stages(only, start_from)
    declared = {stage: declared_parameters(notebooks / f"{stage}.ipynb") for stage in STAGES}
    valid = sorted({name for names in declared.values() for name in names})
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise ParameterError(f"Unknown parameter(s) {', '.join(unknown)}; valid parameters: {', '.join(valid)}.")
    values["run"] = run or values.get("run") or f"{profile}-{dt.datetime.now():%Y%m%d-%H%M%S}"
    values = check_parameters(values)
    layout = RunLayout.for_run(values["run"], values.get("outputs_dir"))
    plan = [
        NotebookRun(
            stage=stage,
            source=notebooks / f"{stage}.ipynb",
            output=layout.notebooks / f"{stage}.ipynb",
            parameters={key: value for key, value in values.items() if key in declared[stage]},
        )
        for stage in stages
    ]
    return layout, plan


def execute(plan: list[NotebookRun], kernel_name: str | None = None, log=print, progress: bool = False) -> None:
    """Run the planned notebooks one after another; the first failure stops the run with a clear message."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    for item in plan:
        item.output.parent.mkdir(parents=True, exist_ok=True)
        log(f"[sdxlab] {item.stage} -> {item.output}")
        started = time.perf_counter()
        try:
            papermill.execute_notebook(
                str(item.source),
                str(item.output),
                parameters=item.parameters,
                kernel_name=kernel_name,
                cwd=str(item.source.parent),
                progress_bar=progress,
                log_output=False,
                kernel_manager_class=_local_kernel_manager_class(),
            )
        except PapermillExecutionError as error:
            raise RunError(
                f"Notebook {item.stage} failed in cell {error.exec_count} ({error.ename}: {_short(error.evalue)}); "
                f"the executed notebook with the full traceback is {item.output}, and everything produced "
                "before it is kept."
            ) from None
        log(f"[sdxlab] {item.stage} done in {time.perf_counter() - started:.0f} s")


def run_pipeline(
    profile: str = "demo",
    overrides: Mapping[str, Any] | None = None,
    run: str | None = None,
    only: Iterable[str] | None = None,
    start_from: str | None = None,
    kernel_name: str | None = None,
    log=print,
    notebooks: Path | None = None,
    progress: bool = False,
) -> RunLayout:
    """Plan and execute a run; returns its layout so callers can find what it wrote."""
    layout, plan = plan_run(profile, overrides, run, only, start_from, notebooks)
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # silences a debugger warning in every kernel
    execute(plan, kernel_name=kernel_name, log=log, progress=progress)
    log(f"[sdxlab] run '{layout.root.name}' finished: {layout.root}")
    return layout


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
