"""Trial rows (schema, status, selection) and the sweep fingerprint, without data or Ray."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
import pytest
from earthloop.config import ConfigError, FinetuneConfig
from earthloop.finetune.model import ResolvedInit
from earthloop.finetune.plan import (
    FINGERPRINT_FILE,
    _check_fingerprint,
    fingerprint,
    stored_fingerprint,
)
from earthloop.finetune.rows import (
    TRIAL_SCHEMA,
    RowContext,
    cell_key,
    checkpoint_uri,
    mark_selected,
    result_rows,
    trial_row,
)

RC = RowContext(
    sweep="s",
    task="segmentation",
    metric="miou",
    backbone="resnet_tiny",
    bands=["B02", "B03"],
    iterations=4,
    max_steps=8,
    modes_in_grid=False,
    chips_table="/w/chips",
    chips_version=3,
    labels_source="/w/manifest.json",
    inits={"random": ("random", "", "random"), "seco": ("earthloop", "/m/seco.pt", "seco")},
    label_sets={"0.1|0": (2, "abc", ["c1", "c2"])},
    table_uri="/w/finetune_trials",
)


def _config(**kw: Any) -> dict[str, Any]:
    base = {
        "fraction": 0.1,
        "init": "seco",
        "seed": 0,
        "mode": "full",
        "lr": 1e-3,
        "weight_decay": 0.0,
        "encoder_lr_mult": 0.1,
    }
    return {**base, **kw}


def test_row_fits_the_schema_and_carries_the_label_set_and_init() -> None:
    last = {"step": 8, "evals": 4, "best_val_metric": 0.5, "test_miou": 0.4, "val_metric": 0.45}
    row = trial_row(RC, "t1", _config(), last, "/x/checkpoint_000003", None)
    pa.Table.from_pylist([row], schema=TRIAL_SCHEMA)  # every column present and typed
    assert set(row) == set(TRIAL_SCHEMA.names)
    assert row["status"] == "finished" and not row["stopped_early"]
    assert (row["n_labelled"], row["label_set_id"], row["label_chip_ids"]) == (
        2,
        "abc",
        ["c1", "c2"],
    )
    assert (row["init_kind"], row["init_path"], row["init_method"]) == (
        "earthloop",
        "/m/seco.pt",
        "seco",
    )
    assert row["test_metric"] == 0.4 and row["iterations"] == 4
    assert math.isnan(row["test_map"])  # a metric the task does not report is NaN, not 0
    assert row["cell"] == "f=0.1|init=seco|seed=0"
    assert json.loads(row["config"])["encoder_lr_mult"] == 0.1


def test_row_status_stopped_and_error() -> None:
    stopped = trial_row(RC, "t", _config(), {"step": 4}, None, None)
    assert stopped["status"] == "stopped" and stopped["stopped_early"]
    failed = trial_row(RC, "t", _config(), {"step": 8}, None, "boom" * 1000)
    assert failed["status"] == "error" and len(failed["error"]) == 2000


def test_cell_key_includes_the_mode_only_when_modes_are_in_the_grid() -> None:
    assert cell_key(_config(), False) == "f=0.1|init=seco|seed=0"
    assert cell_key(_config(mode="linear"), True) == "f=0.1|init=seco|seed=0|mode=linear"


def _row(tid: str, cell_fraction: float, best: float, status: str = "finished") -> dict[str, Any]:
    r = trial_row(RC, tid, _config(fraction=cell_fraction), {"step": 8}, None, None)
    r["best_val_metric"], r["status"] = best, status
    return r


def test_mark_selected_best_val_per_cell_ties_to_lowest_id_and_skips_errors() -> None:
    rows = [
        _row("b", 0.1, 0.5),
        _row("a", 0.1, 0.5),  # tie: lowest trial id wins
        _row("c", 0.1, 0.4),
        _row("d", 0.2, 0.9, status="error"),
        _row("e", 0.2, float("nan")),
        _row("f", 0.2, 0.1),
    ]
    picked = {r["trial_id"] for r in mark_selected(rows) if r["selected"]}
    assert picked == {"a", "f"}


def test_result_rows_from_tune_results() -> None:
    ok = SimpleNamespace(
        metrics={"trial_id": "t1", "step": 8, "best_val_metric": 0.3},
        path="/exp/seco-f0.1-s0-t1",
        error=None,
        checkpoint=SimpleNamespace(path="/exp/t1/checkpoint_000001"),
        config=_config(),
    )
    bad = SimpleNamespace(
        metrics=None,
        path="/exp/seco-f0.1-s0-t2",
        error=RuntimeError("x"),
        checkpoint=None,
        config=_config(),
    )
    rows = result_rows(RC, [ok, bad])
    assert [r["trial_id"] for r in rows] == ["t1", "seco-f0.1-s0-t2"]
    assert rows[0]["checkpoint"] == "/exp/t1/checkpoint_000001" and rows[0]["selected"]
    assert rows[1]["status"] == "error" and rows[1]["error"] == "RuntimeError: x"


def test_checkpoint_uri_names_s3_checkpoints_with_their_scheme() -> None:
    import pyarrow.fs as pafs

    s3 = pafs.S3FileSystem(anonymous=True, region="us-east-1")
    assert checkpoint_uri(None) is None
    assert checkpoint_uri(SimpleNamespace(path="/a/b")) == "/a/b"
    assert checkpoint_uri(SimpleNamespace(path="bkt/exp/ck", filesystem=s3)) == "s3://bkt/exp/ck"


# ------------------------------------------------------------------------------------------
# fingerprint


def _pool() -> Any:
    return SimpleNamespace(
        chips=SimpleNamespace(as_dict=lambda: {"uri": "/w/chips", "version": 3}),
        labels_source="/w/manifest.json",
        summary=lambda: {"train": 10, "val": 3, "test": 3},
    )


INITS = {
    "random": ResolvedInit("random", "random", None, "resnet_tiny", ["B02"], None, None, "random")
}


def _fc(**kw: Any) -> FinetuneConfig:
    return FinetuneConfig.model_validate({"backbone": "resnet_tiny", **kw})


def test_fingerprint_ignores_logging_and_placement_but_not_what_trials_compute() -> None:
    base = fingerprint(_fc(), ["B02"], _pool(), INITS)
    assert base == fingerprint(_fc(), ["B02"], _pool(), INITS)  # deterministic
    same = _fc(name="other", verbose=0, log_every_s=5, max_failures=3, resources={"cpu": 2})
    assert fingerprint(same, ["B02"], _pool(), INITS) == base
    assert fingerprint(_fc(max_steps=300), ["B02"], _pool(), INITS) != base
    assert fingerprint(_fc(), ["B03"], _pool(), INITS)["bands"] == ["B03"]


def test_stored_fingerprint_round_trip_and_a_changed_definition_is_refused(tmp_path: Path) -> None:
    fp = fingerprint(_fc(), ["B02"], _pool(), INITS)
    assert stored_fingerprint(str(tmp_path)) is None
    (tmp_path / FINGERPRINT_FILE).write_text(json.dumps(fp, default=str))
    stored = stored_fingerprint(str(tmp_path))
    _check_fingerprint("s", str(tmp_path), fp, stored)  # unchanged: no error
    changed = fingerprint(_fc(max_steps=300), ["B02"], _pool(), INITS)
    with pytest.raises(ConfigError, match=r"changed: \['finetune'\]"):
        _check_fingerprint("s", str(tmp_path), changed, stored)
