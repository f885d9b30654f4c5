"""PerCellASHA: trials compete only with trials of their own (fraction, init, seed) cell."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from earthloop.finetune.schedulers import PerCellASHA
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

ASHA = {
    "time_attr": "training_iteration",
    "metric": "val",
    "mode": "max",
    "max_t": 8,
    "grace_period": 1,
    "reduction_factor": 2,
}


@dataclass
class FakeTrial:
    """The two attributes the schedulers read: an id and the sampled configuration."""

    trial_id: str
    config: dict[str, Any] = field(default_factory=dict)


def trial(trial_id: str, fraction: float, init: str = "random", seed: int = 0, **extra: Any) -> Any:
    return FakeTrial(trial_id, {"fraction": fraction, "init": init, "seed": seed, **extra})


def report(sched: TrialScheduler, t: Any, iteration: int, val: float) -> str:
    return str(sched.on_trial_result(None, t, {"training_iteration": iteration, "val": val}))


def test_a_low_budget_trial_is_not_stopped_by_a_richer_cell() -> None:
    """Global ASHA stops the 1 % trial because a 10 % trial scored higher; per cell it goes on."""
    rich, poor = trial("rich", 0.1), trial("poor", 0.01)

    global_asha = ASHAScheduler(**ASHA)
    for t in (rich, poor):
        global_asha.on_trial_add(None, t)
    assert report(global_asha, rich, 1, 0.9) == TrialScheduler.CONTINUE
    assert report(global_asha, poor, 1, 0.1) == TrialScheduler.STOP

    per_cell = PerCellASHA(**ASHA)
    for t in (rich, poor):
        per_cell.on_trial_add(None, t)
    assert report(per_cell, rich, 1, 0.9) == TrialScheduler.CONTINUE
    assert report(per_cell, poor, 1, 0.1) == TrialScheduler.CONTINUE
    assert "2 cells" in per_cell.debug_string()


def test_samples_of_one_cell_still_compete() -> None:
    per_cell = PerCellASHA(**ASHA)
    good, bad = trial("good", 0.1, lr=1e-3), trial("bad", 0.1, lr=1.0)
    for t in (good, bad):
        per_cell.on_trial_add(None, t)
    assert report(per_cell, good, 1, 0.9) == TrialScheduler.CONTINUE
    assert report(per_cell, bad, 1, 0.1) == TrialScheduler.STOP
    assert "1 cells, 1 trials stopped early" in per_cell.debug_string()


def test_init_and_seed_are_part_of_the_cell_and_mode_only_when_asked() -> None:
    per_cell = PerCellASHA(**ASHA)
    for i, t in enumerate([trial("a", 0.1), trial("b", 0.1, init="seco"), trial("c", 0.1, seed=1)]):
        per_cell.on_trial_add(None, t)
        assert f"{i + 1} cells" in per_cell.debug_string()
    per_cell.on_trial_add(None, trial("d", 0.1, mode="linear"))  # same cell as "a"
    assert "3 cells" in per_cell.debug_string()

    by_mode = PerCellASHA(modes_in_grid=True, **ASHA)
    by_mode.on_trial_add(None, trial("a", 0.1, mode="full"))
    by_mode.on_trial_add(None, trial("b", 0.1, mode="linear"))
    assert "2 cells" in by_mode.debug_string()


def test_restored_trials_are_registered_on_their_first_result() -> None:
    """After Tuner.restore a trial can report before on_trial_add was seen by this scheduler."""
    per_cell = PerCellASHA(**ASHA)
    restored = trial("restored", 0.05)
    assert report(per_cell, restored, 1, 0.5) == TrialScheduler.CONTINUE
    assert report(per_cell, restored, 2, 0.6) == TrialScheduler.CONTINUE
    assert report(per_cell, restored, 8, 0.7) == TrialScheduler.STOP  # max_t reached


def test_ending_unknown_or_finished_trials_is_harmless() -> None:
    per_cell = PerCellASHA(**ASHA)
    stranger = trial("stranger", 0.1)
    per_cell.on_trial_complete(None, stranger, {"training_iteration": 1, "val": 0.1})
    per_cell.on_trial_error(None, stranger)

    t = trial("t", 0.1)
    per_cell.on_trial_add(None, t)
    per_cell.on_trial_complete(None, t, {"training_iteration": 2, "val": 0.3})
    per_cell.on_trial_remove(None, t)  # already gone from its cell's ASHA: no KeyError
    per_cell.on_trial_error(None, t)


def test_search_properties_are_taken_once() -> None:
    unset = PerCellASHA(time_attr="training_iteration", max_t=4)
    assert unset.set_search_properties("val", "max")
    t = trial("t", 0.1)
    unset.on_trial_add(None, t)  # the cell's ASHA got the metric and mode from Tune
    assert report(unset, t, 1, 0.4) == TrialScheduler.CONTINUE
    assert not unset.set_search_properties("other", "min")  # already set: Tune must not override
    assert not PerCellASHA(**ASHA).set_search_properties("val", None)


def test_a_cell_without_metric_fails_loudly() -> None:
    with pytest.raises(ValueError, match="metric"):
        PerCellASHA(time_attr="training_iteration", max_t=4).on_trial_add(None, trial("t", 0.1))
