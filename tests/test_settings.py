"""Every setting declared once: the parameters cells, profiles, `--help` and the library's defaults follow from
the declarations, and every value is checked (type, range, choices) once, with one line naming it."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys

import nbformat
import pytest
import yaml

from sdxlab.run import STAGES, ParameterError, load_profile, parse_override, plan_run
from sdxlab.settings import CommonSettings, GenerationSettings, SettingsError
from sdxlab.settings.generation import DEFAULTS, SCHEDULER_NAMES
from sdxlab.settings.stages import all_parameters, literal, parameters_cell, stage_parameters, stale_cells


def committed_cell(project, stage: str) -> str:
    notebook = nbformat.read(project / "notebooks" / f"{stage}.ipynb", as_version=4)
    return next(c.source for c in notebook.cells if "parameters" in c.metadata.get("tags", []))


def test_parameters_cells_are_generated_from_the_declarations(project):
    assert stale_cells(project / "notebooks") == [], "run `python -m sdxlab.settings --write`"


@pytest.mark.parametrize("stage", STAGES)
def test_every_cell_declares_exactly_its_stage_fields_with_their_defaults_and_help(project, stage):
    source = committed_cell(project, stage)
    lines = [line for line in source.splitlines() if line.strip() and not line.startswith("#")]
    found = {}
    for line, node in zip(lines, ast.parse(source).body, strict=True):
        found[node.targets[0].id] = (ast.literal_eval(node.value), line.split("  # ", 1)[1])
    declared = {p.name: (p.default, p.help) for p in stage_parameters(stage)}
    assert found == declared


def test_a_name_shared_by_two_notebooks_has_one_default_and_one_help():
    parameters = all_parameters()  # raises if two stages declared one name differently
    assert parameters["clip_model"].default == "tiny"
    for stage in STAGES:  # the common block, in order, first in every notebook
        assert [p.name for p in stage_parameters(stage)[:8]] == [p.name for p in CommonSettings.declared()]


def test_stage_knobs_carry_their_prefix():
    """`-p guidance_scale=7` used to change 03 only: every stage's knob now says whose it is."""
    shared = {"photos_dir", "keep_anyway", "captions_override", "lora_name", "clip_model"}
    prefixes = {
        "01_capture": "capture_",
        "02_train": "train_",
        "03_sample": "sample_",
        "04_evaluate": "evaluate_",
        "05_prompt_search": "search_",
    }
    for stage, prefix in prefixes.items():
        names = [p.name for p in stage_parameters(stage)[8:]]
        assert all(name.startswith(prefix) or name in shared for name in names), names
    assert not {"guidance_scale", "scheduler", "negative_prompt", "lora_scale", "lora_scales"} & set(all_parameters())


@pytest.mark.parametrize("profile", ["demo", "sdxl"])
def test_profiles_hold_only_differences_each_with_its_reason(project, profile):
    path = project / "env" / "profiles" / f"{profile}.yaml"
    values = load_profile(profile)
    parameters = all_parameters()
    same = sorted(key for key, value in values.items() if parameters[key].check(value) == parameters[key].default)
    assert not same, f"{profile}.yaml repeats the default of {same}"
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            assert " # " in line, f"{profile}.yaml: say why on the line itself: {line!r}"


def test_the_command_line_trainer_and_the_notebook_train_with_the_same_settings(project):
    """The train CLI and 02_train once validated on different prompts; now both read one declaration."""
    from sdxlab.train import TrainConfig
    from sdxlab.train.config import COMMON_PARAMETERS

    _, plan = plan_run("sdxl", only=["02"], run="same")
    notebook_defaults = {
        name: ast.literal_eval(node.value)
        for node in ast.parse(committed_cell(project, "02_train")).body
        for name in [node.targets[0].id]
    }
    from_notebook = TrainConfig.from_parameters({**notebook_defaults, **plan[0].parameters})
    from_cli = TrainConfig.from_parameters(
        {k: v for k, v in load_profile("sdxl").items() if k.startswith("train_") or k in COMMON_PARAMETERS}
    )
    assert from_cli.to_dict() == from_notebook.to_dict()


def test_library_generation_defaults_are_the_declared_ones():
    """Sampler.generate, generate_pairs, the playground and the search's generator had four sets of defaults;
    generate and the search's generator now pass their options on, so the declared defaults apply."""
    from sdxlab.prompt_search.evaluation import SamplerGenerator
    from sdxlab.sample import SCHEDULERS, Sampler
    from sdxlab.sample.playground import Playground

    assert tuple(SCHEDULERS) == SCHEDULER_NAMES
    for function in (Sampler.generate_pairs, Playground.__init__):
        signature = inspect.signature(function).parameters
        for name, value in DEFAULTS.kwargs().items():
            assert signature[name].default == value, (
                f"{function.__qualname__}({name}=...) differs from GenerationSettings"
            )
    generator = SamplerGenerator(object())
    assert {**generator.options, "batch_size": generator.batch_size} == {
        **DEFAULTS.kwargs(),
        "width": None,
        "height": None,
    }
    with pytest.raises(TypeError, match="stepz"):
        SamplerGenerator(object(), stepz=3)
    passed = []

    class Recorder:
        def generate_pairs(self, pairs, **options):
            passed.append((pairs, options))

    Sampler.generate(Recorder(), ["a", "b"], [1, 2], steps=3)
    assert passed == [([("a", 1), ("a", 2), ("b", 1), ("b", 2)], {"steps": 3})]


def test_help_lists_every_parameter_with_default_and_help():
    result = subprocess.run(
        [sys.executable, "-m", "sdxlab", "run", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0
    for parameter in all_parameters().values():
        assert f"{parameter.name} = {literal(parameter.default)}  # {parameter.help}" in result.stdout
    train = subprocess.run(
        [sys.executable, "-m", "sdxlab.train", "--help"], capture_output=True, text=True, timeout=120
    )
    assert train.returncode == 0
    assert "train_lora_rank = 32  # LoRA rank" in train.stdout and "sample_steps" not in train.stdout


def test_generator_writes_a_stale_cell_back(tmp_path, project):
    from sdxlab.sample.settings import SampleSettings
    from sdxlab.settings.stages import write_cells

    steps = SampleSettings().steps
    notebook = nbformat.read(project / "notebooks" / "03_sample.ipynb", as_version=4)
    cell = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
    assert f"sample_steps = {steps}  #" in cell.source
    cell.source = cell.source.replace(f"sample_steps = {steps}", f"sample_steps = {steps + 1}")
    nbformat.write(notebook, tmp_path / "03_sample.ipynb")
    assert stale_cells(tmp_path, ["03_sample"]) == ["03_sample"]
    assert write_cells(tmp_path, ["03_sample"]) == ["03_sample"]
    assert stale_cells(tmp_path, ["03_sample"]) == []
    assert f"sample_steps = {steps}  #" in parameters_cell("03_sample")


# --- one line for a bad value, before any work -------------------------------------------------------------


def test_numeric_text_from_yaml_1_1_becomes_a_number():
    key, value = parse_override("train_learning_rate=5e-4")
    assert value == "5e-4"  # what YAML 1.1 makes of it
    _, plan = plan_run("demo", {key: value}, run="numbers", only=["02"])
    assert plan[0].parameters["train_learning_rate"] == pytest.approx(5e-4)
    assert isinstance(plan[0].parameters["train_learning_rate"], float)


BAD_VALUES = {
    "text for a number": ("sample_steps", "abc", "sample_steps must be a whole number of at least 1 (got 'abc')"),
    "text for a float": ("train_learning_rate", "fast", "train_learning_rate must be a number of at least 0"),
    "wrong choice": ("sample_scheduler", "ddim", "sample_scheduler must be one of 'euler', 'euler_a'"),
    "out of range": ("train_lora_dropout", 1.5, "train_lora_dropout must be a number of at least 0 and below 1"),
    "not a multiple of 8": ("resolution", 100, "resolution must be a multiple of 8"),
    "a bool for a number": ("search_rounds", True, "search_rounds must be a whole number"),
    "a list of the wrong things": ("sample_seeds", ["one"], "sample_seeds must be a list of whole numbers"),
    "unknown proposer": ("search_proposers", ["oracle"], "search_proposers must be a list of one or more of"),
    "a run name with a path": ("run", "../evil", "run must be a plain folder name"),
}


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_a_bad_value_gets_one_line_naming_it_and_what_is_allowed(case):
    name, value, expected = BAD_VALUES[case]
    with pytest.raises(ParameterError) as error:
        plan_run("demo", {name: value})
    message = str(error.value)
    assert expected in message and "\n" not in message


def test_notebook_settings_construction_checks_the_same_way():
    from sdxlab.capture import CaptureSettings
    from sdxlab.sample.settings import SampleSettings

    with pytest.raises(SettingsError, match="resolution must be a multiple of 8"):
        CaptureSettings.from_parameters({"resolution": 100, "capture_min_photos": 8})
    with pytest.raises(SettingsError, match="Unknown sample parameter sample_stpes"):
        SampleSettings.from_parameters({"sample_stpes": 3})
    settings = SampleSettings.from_parameters({"sample_guidance": "7", "sample_steps": 12, "sample": object()})
    assert settings.generation == GenerationSettings(
        steps=12, guidance=7.0, scheduler="euler_a", negative_prompt=settings.negative_prompt, batch_size=4
    )


def run_cli(*args, cwd=None, env=None):
    return subprocess.run(
        [sys.executable, "-m", "sdxlab", "run", *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=env
    )


@pytest.mark.parametrize(
    "args",
    [["--run", "../evil"], ["-p", "sample_prompts=[a, b"], ["-p", "train_steps=abc"], ["-p", "sample_scheduler=ddim"]],
)
def test_command_line_refuses_bad_input_in_one_line_without_traceback(args, tmp_path):
    result = run_cli("--profile", "demo", "-p", f"outputs_dir={tmp_path}", *args)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert not any(tmp_path.iterdir()), "nothing may be written before the parameters are checked"


def test_malformed_profile_file_is_one_line(tmp_path, project):
    """A profile with a YAML error: one line naming the file and the line, no traceback."""
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "notebooks").symlink_to(project / "notebooks")
    (tmp_path / "env" / "profiles").mkdir(parents=True)
    (tmp_path / "env" / "profiles" / "broken.yaml").write_text("train_steps: 10\nsample_prompts: [a, b\n")
    import os

    env = {**os.environ, "PYTHONPATH": str(project / "lib")}
    result = run_cli("--profile", "broken", cwd=tmp_path, env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert "broken.yaml is not valid YAML" in result.stderr and "line" in result.stderr


def test_a_key_pasted_as_the_variable_name_is_refused_before_any_notebook_is_written(tmp_path):
    secret = "sk-proj-" + "Zq8" * 12
    result = run_cli(
        "--profile",
        "demo",
        "--only",
        "05",
        "--run",
        "leak",
        "-p",
        f"outputs_dir={tmp_path}",
        "-p",
        f"search_endpoint_api_key_env={secret}",
    )
    assert result.returncode == 2
    assert "search_endpoint_api_key_env must be the NAME of an environment variable" in result.stderr
    assert secret not in result.stderr + result.stdout
    written = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert not any(secret in path.read_text(errors="replace") for path in written)
    assert not (tmp_path / "leak" / "notebooks").exists()


@pytest.mark.parametrize("name", ["OPENAI_API_KEY", "MY_LLM_TOKEN", "HF_TOKEN", ""])
def test_variable_names_pass(name):
    from sdxlab.prompt_search.settings import PromptSearchSettings

    assert PromptSearchSettings(endpoint_api_key_env=name).endpoint_api_key_env == name


@pytest.mark.parametrize(
    "value",
    [
        "sk-abc",
        "hf_AbCdEfGhIjKlMnOpQrStUv",
        "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
        "aZ3kP9qL2mX7vB4nC8dF1gH6",
        "Bearer abc",
    ],
)
def test_secrets_are_refused_without_being_echoed(value):
    from sdxlab.prompt_search.settings import PromptSearchSettings

    with pytest.raises(SettingsError) as error:
        PromptSearchSettings(endpoint_api_key_env=value)
    assert value not in str(error.value)


def test_every_declared_parameter_has_help_and_a_default_that_passes_its_own_check():
    for parameter in all_parameters().values():
        assert parameter.help.strip()
        assert parameter.check(parameter.default) == parameter.default
    assert yaml.safe_load(literal({"a": [1, 2.5e-4, None, True, "x"]})) is not None


def test_settings_command_checks_the_cells_and_the_tiny_model_name_is_the_loaders():
    from sdxlab.labels import TINY_MODEL

    assert CommonSettings().model == TINY_MODEL
    result = subprocess.run(
        [sys.executable, "-m", "sdxlab.settings", "--check"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_start_prompts_pair_with_intents_in_order_and_missing_ones_start_from_the_intent():
    from sdxlab.prompt_search.settings import PromptSearchSettings

    two = ["a photo of {subject} on Mars", "{subject} painted by Vermeer"]
    assert PromptSearchSettings(intents=two, start_prompts=["sks mars"]).intent_start_pairs() == [
        (two[0], "sks mars"),
        (two[1], None),
    ]
    assert PromptSearchSettings(intents=two[:1], start_prompts="").intent_start_pairs() == [(two[0], None)]
    assert PromptSearchSettings(intents=two, start_prompts=["", "sks vermeer"]).intent_start_pairs()[1] == (
        two[1],
        "sks vermeer",
    )
