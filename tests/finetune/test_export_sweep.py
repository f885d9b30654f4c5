"""A real (tiny) sweep on the local cluster exports each cell's selected trial as a task model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from earthloop.config import load_config
from earthloop.finetune.sweep import run_sweep
from earthloop.inference import load_task_model, predict
from earthloop.store.delta import read_table

pytestmark = pytest.mark.integration


def test_sweep_exports_selected_trials(ray_cluster: str, tiny_data: Any, tmp_path: Path) -> None:
    over = tiny_data.overrides(
        tmp_path, name="export", fractions=[0.5, 1.0], seeds=[0], max_steps=4, eval_every=2
    )
    cfg = load_config(None, over)
    res = run_sweep(cfg)
    assert res.errors == 0 and res.trials == 2
    selected = {r["trial_id"]: r for r in res.rows if r["selected"]}
    assert len(res.task_models) == len(selected) == 2
    models = {r["model_version"]: r for r in read_table(cfg.table_uri("task_models")).to_pylist()}
    assert set(models) == set(res.task_models)
    for mv, row in models.items():
        assert row["source_sweep"] == "export" and row["source_trial"] in selected
        assert row["chips_table_version"] == selected[row["source_trial"]]["chips_table_version"]
        model, meta = load_task_model(row["path"])
        assert meta["model_version"] == mv and meta["source"]["checkpoint_step"] == 4
        x = np.zeros((1, len(meta["bands"]), 32, 32), np.float32)
        assert predict(model, x, meta["class_ids"]).shape == (1, 32, 32)
