"""The three tasks through planning and one trial (no Ray); selection, gains and the report."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from earthloop.config import load_config
from earthloop.finetune.plan import plan_sweep, trial_configs
from earthloop.finetune.report import curves, gains, write_report
from earthloop.finetune.rows import mark_selected
from earthloop.finetune.sweep import plain_loop

ONE = {
    "fraction": 1.0,
    "init": "random",
    "seed": 0,
    "mode": "full",
    "lr": 1e-3,
    "weight_decay": 0.0,
    "encoder_lr_mult": 1.0,
}


@pytest.mark.parametrize(
    "task,metric", [("classification", "accuracy"), ("multilabel", "map"), ("segmentation", "miou")]
)
def test_each_task_plans_and_trains(tiny_data: Any, task: str, metric: str) -> None:
    over = tiny_data.overrides(
        task=task, fractions=[0.5, 1.0], max_steps=2, eval_every=2, allow_missing_classes=True
    )
    plan = plan_sweep(load_config(None, over))
    pool = plan.pool
    assert pool.summary()["train"] > 0 and pool.summary()["test"] > 0
    train_ids = {pool.samples[i].id for i in pool.indices("train")}
    eval_ids = {pool.samples[i].id for i in pool.indices("val") + pool.indices("test")}
    assert not train_ids & eval_ids
    if task == "classification":  # one example per chip, of its majority class
        assert all(sum(s.counts.values()) == 1 for s in pool.samples)
    (out,) = plain_loop(plan, [{**ONE, "mode": "linear"}])
    m = out["metrics"]
    assert m["step"] == 2 and 0.0 <= m[f"test_{metric}"] <= 1.0
    assert m["n_labelled"] == len(plan.label_sets[(1.0, 0)].ids)
    if task == "segmentation":
        assert 0 < m["val_boundary_pixels"] < m["val_pixels"]


def test_trial_configs_cover_the_grid(tiny_data: Any) -> None:
    over = tiny_data.overrides(fractions=[0.5, 1.0], seeds=[0, 1], max_steps=2, eval_every=2)
    plan = plan_sweep(load_config(None, over))
    cfgs = trial_configs(plan)
    assert len(cfgs) == plan.n_trials == 4
    assert {(c["fraction"], c["seed"]) for c in cfgs} == {(0.5, 0), (0.5, 1), (1.0, 0), (1.0, 1)}


def _row(
    tid: str, init: str, f: float, seed: int, val: float, test: float, kind: str = "earthloop"
) -> dict[str, Any]:
    return {
        "trial_id": tid,
        "init": init,
        "init_kind": kind,
        "mode": "full",
        "fraction": f,
        "seed": seed,
        "cell": f"f={f:g}|init={init}|seed={seed}",
        "status": "finished",
        "best_val_metric": val,
        "test_metric": test,
        "test_boundary_miou": test / 2,
        "lr": 1e-3,
        "weight_decay": 0.0,
        "encoder_lr_mult": 1.0,
        "n_labelled": 3,
        "iterations": 2,
        "selected": False,
    }


def test_selection_on_val_and_gains_per_seed(tmp_path: Path) -> None:
    rows = [
        _row("a", "random", 0.1, 0, 0.50, 0.40, "random"),
        _row("b", "random", 0.1, 0, 0.60, 0.30, "random"),  # better val: selected, test 0.30
        _row("c", "seco", 0.1, 0, 0.70, 0.45),
        _row("d", "random", 0.1, 1, 0.55, 0.35, "random"),
        _row("e", "seco", 0.1, 1, 0.65, 0.33),
        _row("f", "seco", 1.0, 0, float("nan"), float("nan")),  # nothing finished: skipped
    ]
    rows = mark_selected(rows)
    assert [r["trial_id"] for r in rows if r["selected"]] == ["b", "c", "d", "e"]
    assert curves(rows)["random"][0.1] == {0: 0.30, 1: 0.35}
    g = gains(rows)["seco"][0.1]
    assert g[0] == pytest.approx(0.15) and g[1] == pytest.approx(-0.02)
    paths = write_report(
        rows, str(tmp_path), {"sweep": "s", "metric": "miou", "task": "segmentation"}
    )
    text = Path(paths.markdown).read_text()
    assert "+0.065 ± 0.120 (1/2 seeds > 0)" in text
    assert "random pixel" in text.lower()
    for p in paths.plots:
        assert Path(p).read_bytes()[:4] == b"\x89PNG"
    assert not math.isnan(g[0])
