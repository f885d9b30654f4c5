"""Trials without storage and without waiting: a preloaded pool, parallel and time-boxed plain
loops, and a GPU asked for explicitly (what a lent GPU run of the label-efficiency benchmark
leans on)."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np
import pytest
import torch
from earthloop.config import load_config
from earthloop.finetune.data import read_raw
from earthloop.finetune.plan import SweepPlan, plan_sweep, trial_configs
from earthloop.finetune.sweep import plain_loop
from earthloop.finetune.trial import execute_trial, trial_device


@pytest.fixture
def plan(tiny_data: Any, tmp_path: Any) -> SweepPlan:
    over = tiny_data.overrides(
        tmp_path, name="plain", fractions=[0.5, 1.0], seeds=[0], max_steps=4, eval_every=2
    )
    return plan_sweep(load_config(None, over))


def test_a_preloaded_pool_reads_nothing_and_gives_the_same_pixels(plan: SweepPlan) -> None:
    pool = plan.pool
    idx = pool.indices("train") + pool.indices("test")
    direct = read_raw(pool, idx)
    assert pool.preload() == len(pool.samples)
    # the chips' storage is gone: every read must now come from the preloaded pixels
    for s in pool.samples:
        s.row = {**s.row, "href_B02": "/nonexistent/B02.tif", "hrefs": None}
    pool.label_rasters = {k: "/nonexistent/labels.tif" for k in pool.label_rasters}
    cached = read_raw(pool, idx)
    assert cached[4] == direct[4]
    for a, b in zip(cached[:4], direct[:4], strict=True):
        assert a is not None and b is not None
        assert np.array_equal(a, b)
    # and a whole trial runs from them
    last = execute_trial(trial_configs(plan)[0], plan.context())
    assert 0.0 <= last["test_miou"] <= 1.0


def test_trials_in_worker_processes_score_as_in_process(plan: SweepPlan) -> None:
    configs = trial_configs(plan)[:2]
    one = plain_loop(plan, configs)
    two = plain_loop(plan, configs, workers=2)
    assert [r["config"] for r in two] == configs  # the order of the configs, not of finishing
    for a, b in zip(one, two, strict=True):
        assert a["metrics"]["test_miou"] == pytest.approx(b["metrics"]["test_miou"], abs=1e-6)


def test_a_deadline_starts_no_trial_that_would_end_after_it(
    plan: SweepPlan, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from earthloop.finetune import sweep

    def half_second_trial(config: dict[str, Any], ctx: Any) -> dict[str, Any]:
        time.sleep(0.5)
        return {"test_miou": float(config["lr"])}

    monkeypatch.setattr(sweep, "execute_trial", half_second_trial)
    configs = [{**trial_configs(plan)[0], "lr": lr} for lr in (1e-3, 2e-3, 3e-3)]
    with caplog.at_level(logging.WARNING, logger="earthloop.finetune"):
        assert plain_loop(plan, configs, deadline_s=0.0) == []
    assert "0 of 3 trials ran, 3 were not started" in caplog.text
    # the first trial starts (no length known yet); after it, a second would end at ~1.0 s
    ran = plain_loop(plan, configs, deadline_s=0.75)
    assert [r["metrics"]["test_miou"] for r in ran] == [1e-3]
    assert len(plain_loop(plan, configs, deadline_s=60.0)) == 3


def test_a_gpu_asked_for_but_not_visible_is_an_error_naming_the_setting(plan: SweepPlan) -> None:
    ctx = plan.context()
    assert trial_device(ctx).type == "cpu"
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the error case cannot happen here")
    gpu = dataclasses.replace(ctx, gpus=1.0)
    with pytest.raises(RuntimeError, match=r"finetune\.resources\.gpu=1"):
        execute_trial(trial_configs(plan)[0], gpu)
