"""02's live view: the loss curve redrawn in place, but not so often that drawing slows training down."""

from __future__ import annotations

import pytest

from sdxlab.train.live import LiveTrainingView
from sdxlab.train.loop import TrainEvent


class Slot:
    def __init__(self):
        self.updates = 0

    def update(self, figure):
        self.updates += 1


def run_view(monkeypatch, steps: int, **options) -> Slot:
    slots = [Slot(), Slot()]
    monkeypatch.setattr(LiveTrainingView, "_slot", staticmethod(lambda: slots.pop(0)))
    view = LiveTrainingView(**options)
    history = []
    view(TrainEvent("start", 0, steps, None, None, history, []))
    loss_slot = view._loss_slot
    for step in range(1, steps + 1):
        history.append({"step": step, "loss": 1.0 / step, "lr": 1e-3, "samples_per_s": 1.0, "elapsed_s": step})
        view(TrainEvent("step", step, steps, 1.0 / step, 1e-3, history, []))
    view(TrainEvent("end", steps, steps, history[-1]["loss"], 1e-3, history, []))
    return loss_slot


@pytest.mark.parametrize(("min_seconds", "expected"), [(0.0, 12 + 1), (3600.0, 1 + 1)])
def test_the_loss_curve_is_redrawn_every_few_steps_but_not_faster_than_min_seconds(monkeypatch, min_seconds, expected):
    # 60 steps, every 5: twelve redraws when time does not matter, one when it does; the end always draws
    assert run_view(monkeypatch, 60, every=5, min_seconds=min_seconds).updates == expected
