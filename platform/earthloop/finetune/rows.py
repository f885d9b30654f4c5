"""The ``finetune_trials`` table: its schema, one row per trial, the per-cell selection, writes.

A row is built from driver-side facts (:class:`RowContext`) plus the trial's config and last
metrics, so the same function serves the Tune callback (a row as each trial ends), the end of
:func:`~earthloop.finetune.sweep.run_sweep` (every row, with the selection) and plain-loop
benchmarks. This module imports neither Ray nor torch: the Tune callbacks and the per-cell
scheduler depend on it, and so must not pull in the trial's training code.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from earthloop.store.delta import merge_rows
from earthloop.store.fs import as_uri
from earthloop.store.tables import FINETUNE_TRIALS

__all__ = [
    "TRIAL_KEY",
    "TRIAL_SCHEMA",
    "RowContext",
    "cell_key",
    "checkpoint_uri",
    "mark_selected",
    "result_rows",
    "trial_row",
    "write_rows",
]

TRIAL_KEY = FINETUNE_TRIALS.keys

TRIAL_SCHEMA = FINETUNE_TRIALS.schema  # the contract lives in store.tables


@dataclass
class RowContext:
    """Driver-side facts a trial row needs (picklable: it rides in the Tune callbacks)."""

    sweep: str
    task: str
    metric: str
    backbone: str
    bands: list[str]
    iterations: int
    max_steps: int
    modes_in_grid: bool
    chips_table: str
    chips_version: int
    labels_source: str
    inits: dict[str, tuple[str, str, str]]  # name -> (kind, path, method)
    label_sets: dict[str, tuple[int, str, list[str]]]  # "fraction|seed" -> (n, set id, ids)
    table_uri: str


def cell_key(config: dict[str, Any], modes_in_grid: bool) -> str:
    """The grid cell of a trial: hyper-parameter samples of one cell compete with each other."""
    key = f"f={float(config['fraction']):g}|init={config['init']}|seed={int(config['seed'])}"
    return key + (f"|mode={config['mode']}" if modes_in_grid else "")


def _f(x: Any) -> float:
    """A float column value: a missing or non-numeric metric is NaN, never a failed write."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return float("nan")
    return v


def _test_columns(metric: str, last: dict[str, Any]) -> dict[str, Any]:
    return {
        "test_metric": _f(last.get(f"test_{metric}")),
        "test_miou": _f(last.get("test_miou")),
        "test_accuracy": _f(last.get("test_accuracy")),
        "test_macro_f1": _f(last.get("test_macro_f1")),
        "test_boundary_miou": _f(last.get("test_boundary_miou")),
        "test_map": _f(last.get("test_map")),
        "test_per_class": str(last.get("test_per_class", "{}")),
    }


def trial_row(
    rc: RowContext,
    trial_id: str,
    config: dict[str, Any],
    last: dict[str, Any],
    checkpoint: str | None,
    error: str | None,
) -> dict[str, Any]:
    """The row of one trial from its config and last reported metrics (``selected`` False)."""
    frac, seed = float(config["fraction"]), int(config["seed"])
    n, set_id, ids = rc.label_sets.get(f"{frac:g}|{seed}", (0, "", []))
    kind, path, method = rc.inits.get(config["init"], ("?", "", "?"))
    # our own evaluation count: Tune's training_iteration also counts a re-reported final result
    iters = int(last.get("evals", last.get("training_iteration", 0)) or 0)
    steps = int(last.get("step", 0) or 0)
    status = "error" if error else ("finished" if steps >= rc.max_steps else "stopped")
    return {
        "sweep": rc.sweep,
        "trial_id": trial_id,
        "cell": cell_key(config, rc.modes_in_grid),
        "task": rc.task,
        "init": str(config["init"]),
        "init_kind": kind,
        "init_path": path or "",
        "init_method": method,
        "backbone": rc.backbone,
        "bands": list(rc.bands),
        "mode": str(config["mode"]),
        "fraction": frac,
        "seed": seed,
        "lr": _f(config["lr"]),
        "weight_decay": _f(config["weight_decay"]),
        "encoder_lr_mult": _f(config["encoder_lr_mult"]),
        "n_labelled": int(n),
        "label_set_id": set_id,
        "label_chip_ids": list(ids),
        "chips_table": rc.chips_table,
        "chips_table_version": int(rc.chips_version),
        "labels_source": rc.labels_source,
        "status": status,
        "iterations": iters,
        "steps": steps,
        "stopped_early": status == "stopped",
        "metric": rc.metric,
        "val_metric": _f(last.get("val_metric")),
        "best_val_metric": _f(last.get("best_val_metric")),
        "best_iteration": int(last.get("best_iteration", 0) or 0),
        **_test_columns(rc.metric, last),
        "selected": False,
        "checkpoint": checkpoint or "",
        "config": json.dumps({k: config[k] for k in sorted(config)}, default=str),
        "error": (error or "")[:2000],
        "finished_at": datetime.now(UTC),
    }


def result_rows(rc: RowContext, results: Iterable[Any]) -> list[dict[str, Any]]:
    """Rows of Tune's final results (``ResultGrid`` entries), the per-cell selection marked."""
    rows = []
    for res in results:
        metrics = dict(res.metrics or {})
        trial_id = str(metrics.get("trial_id") or Path(res.path).name)
        err = None if res.error is None else f"{type(res.error).__name__}: {res.error}"
        ckpt = checkpoint_uri(res.checkpoint)
        rows.append(trial_row(rc, trial_id, dict(res.config or {}), metrics, ckpt, err))
    return mark_selected(rows)


def checkpoint_uri(checkpoint: Any) -> str | None:
    """A Ray checkpoint as a URI a user can pass back (``s3://…`` on S3, else a local path)."""
    if checkpoint is None:
        return None
    return as_uri(getattr(checkpoint, "filesystem", None), str(checkpoint.path))


def write_rows(uri: str, rows: list[dict[str, Any]]) -> None:
    """Upsert ``rows`` by (sweep, trial_id): a re-run or restored trial replaces its old row."""
    if rows:
        merge_rows(uri, pa.Table.from_pylist(rows, schema=TRIAL_SCHEMA), TRIAL_KEY)


def mark_selected(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flag, per cell, the trial with the best validation score (ties: lowest trial id)."""
    best: dict[str, dict[str, Any]] = {}
    for r in rows:
        r["selected"] = False
        if r["status"] == "error" or math.isnan(r["best_val_metric"]):
            continue
        cur = best.get(r["cell"])
        if cur is None or (r["best_val_metric"], cur["trial_id"]) > (
            cur["best_val_metric"],
            r["trial_id"],
        ):
            best[r["cell"]] = r
    for r in best.values():
        r["selected"] = True
    return rows
