"""Profiles that extend another (`extends: sdxl`): the small-GPU memory settings hold only what differs."""

from __future__ import annotations

import pytest
import yaml

from sdxlab import run
from sdxlab.run import RunError, load_profile, plan_run


@pytest.mark.parametrize("name", ["sdxl-16gb", "sdxl-10gb"])
def test_small_gpu_profiles_are_sdxl_with_their_own_lines_on_top(name):
    own = yaml.safe_load((run.profiles_dir() / f"{name}.yaml").read_text())
    assert own.pop("extends") == "sdxl"
    values = load_profile(name)
    base = load_profile("sdxl")
    assert "extends" not in values
    assert values == {**base, **own}  # everything else inherited, its own lines win
    assert values["model"] == "stabilityai/stable-diffusion-xl-base-1.0" and values["resolution"] == 1024
    assert values["train_gradient_checkpointing"] is True and values["train_batch_size"] != "auto"
    assert all(own[key] != base.get(key) for key in own)  # a profile repeats nothing the parent already says
    _, plan = plan_run(name, run="small-gpu")  # every key is a parameter some notebook declares
    train = next(item for item in plan if item.stage == "02_train")
    assert train.parameters["train_batch_size"] == own["train_batch_size"]


def test_every_line_of_the_small_gpu_profiles_gives_its_reason():
    for name in ("sdxl-16gb", "sdxl-10gb"):
        for line in (run.profiles_dir() / f"{name}.yaml").read_text().splitlines():
            if line and not line.startswith("#"):
                assert "  # " in line, f"{name}.yaml: {line!r} has no reason"


def test_extends_loops_and_unknown_parents_are_one_clear_sentence(tmp_path, monkeypatch):
    monkeypatch.setattr(run, "profiles_dir", lambda: tmp_path)
    (tmp_path / "a.yaml").write_text("extends: b\nresolution: 64\n")
    (tmp_path / "b.yaml").write_text("extends: a\n")
    (tmp_path / "c.yaml").write_text("extends: nowhere\n")
    with pytest.raises(RunError, match="extends 'a', which extends it back"):
        load_profile("a")
    with pytest.raises(RunError, match="Unknown profile 'nowhere'"):
        load_profile("c")
