"""A sweep trial resumes from the newest checkpoint in its own directory (no Ray needed).

Tune restores an interrupted trial from the checkpoint named in the experiment state it last
synced, which lags the trial; these tests play the trial's side: checkpoints are written where
Tune writes them (``<experiment>/<trial dir>/checkpoint_*``), the "driver" loses track of them
(``tune.get_checkpoint()`` is None, or names an older one) and the trial must still continue from
its newest loadable checkpoint and end exactly where an uninterrupted trial ends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from earthloop.checkpoints import STATE_FILE, save_checkpoint
from earthloop.config import load_config
from earthloop.finetune.plan import SweepPlan, plan_sweep, trial_configs
from earthloop.finetune.trial import _resume_state, execute_trial, trial_dirname


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def plan(tiny_data: Any, tmp_path_factory: pytest.TempPathFactory) -> SweepPlan:
    wd = tmp_path_factory.mktemp("resume")
    over = tiny_data.overrides(
        wd, name="resume", fractions=[1.0], seeds=[0], max_steps=8, eval_every=2
    )
    return plan_sweep(load_config(None, over))


def _trial(
    plan: SweepPlan, trial_id: str, *, kill_at: int | None = None, state: Any = None
) -> tuple[dict[str, Any], Path]:
    """Run one trial, writing checkpoints as ``tune_trial`` does, optionally dying after one."""
    ctx = plan.context()
    config = trial_configs(plan)[0]
    tdir = Path(plan.experiment_path) / trial_dirname(config, trial_id)
    tdir.mkdir(parents=True, exist_ok=True)

    def report(metrics: dict[str, Any], state_fn: Callable[[], dict[str, Any]] | None) -> None:
        if state_fn is None:
            return
        snap = state_fn()
        d = tdir / f"checkpoint_{len(list(tdir.glob('checkpoint_*'))):06d}"
        d.mkdir()
        save_checkpoint(d, snap, {"step": int(snap["step"]), "iteration": snap["iteration"]})
        if snap["step"] == kill_at:
            raise Killed

    return execute_trial(config, ctx, report=report, state=state), tdir


def test_trial_resumes_from_its_newest_checkpoint_when_tune_lost_track(plan: SweepPlan) -> None:
    full, _ = _trial(plan, "full")
    with pytest.raises(Killed):
        _trial(plan, "cut", kill_at=6)
    config = trial_configs(plan)[0]
    state = _resume_state(config, plan.context(), "cut", None)  # Tune restored no checkpoint
    assert state is not None and state["step"] == 6
    resumed, _ = _trial(plan, "cut", state=state)
    assert resumed["step"] == full["step"] == 8
    assert resumed["start_step"] == 6
    for k in ("val_metric", "best_val_metric", "train_loss", "test_miou"):
        assert resumed[k] == full[k], k


def test_truncated_newest_trial_checkpoint_falls_back(
    plan: SweepPlan, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(Killed):
        _, tdir = _trial(plan, "broken", kill_at=6)
    tdir = Path(plan.experiment_path) / trial_dirname(trial_configs(plan)[0], "broken")
    newest = tdir / "checkpoint_000002" / STATE_FILE
    newest.write_bytes(newest.read_bytes()[:1000])

    class Older:  # what a stale experiment state hands back: an older checkpoint
        path = str(tdir / "checkpoint_000000")
        filesystem = None

    with caplog.at_level(logging.INFO, logger="earthloop"):
        state = _resume_state(trial_configs(plan)[0], plan.context(), "broken", Older())
    assert state is not None and state["step"] == 4  # newest loadable, newer than Tune's (2)
    assert str(newest) in caplog.text and "truncated or corrupt" in caplog.text


def test_trial_state_is_plain(plan: SweepPlan, tmp_path: Path) -> None:
    """The whole fine-tuning state passes the save-time check and loads with weights_only."""
    _, tdir = _trial(plan, "plain")
    f = max(tdir.glob("checkpoint_*")) / STATE_FILE
    state = torch.load(f, map_location="cpu", weights_only=True)
    assert state["step"] == 8 and isinstance(state["stream"]["rng"]["state"]["state"], int)
