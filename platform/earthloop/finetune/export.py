"""Task models out of a sweep: the trial a sweep selected, as one file and a ``task_models`` row.

A sweep's trial checkpoint is a *training* state (optimiser, RNG, stream position) that only the
sweep's code can interpret, and it says nothing of the bands, normalisation or classes the model
expects. What the labeling loop, prediction maps and users need is the model and its input/output
contract in one file, plus a row saying where it came from (sweep, trial, chip-index and label
versions), so that every prediction can be traced to the data the model was trained on.

Each selected trial (the best validation score of its fraction/init/seed cell, see
:func:`earthloop.finetune.rows.mark_selected`) is exported at the end of
:func:`~earthloop.finetune.sweep.run_sweep`; :func:`export_trial` exports one named by trial id.
The file is loaded with :func:`earthloop.inference.load_task_model`.

The weights are those of the trial's last checkpoint: the training loop keeps no copy of the
best-validation weights, so for a trial stopped early by ASHA the export is its state at that
checkpoint, and ``checkpoint_step`` in the file says which step it is.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import posixpath
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import torch

from earthloop.checkpoints import STATE_FILE
from earthloop.config import EarthloopConfig
from earthloop.errors import EarthloopError
from earthloop.finetune.plan import SweepPlan, plan_sweep
from earthloop.inference import TASK_MODEL_FORMAT, TASK_MODEL_FORMAT_VERSION
from earthloop.models.backbones import build_backbone
from earthloop.models.task import TaskModel
from earthloop.store.delta import merge_rows, read_table, table_exists
from earthloop.store.fs import read_bytes, write_bytes
from earthloop.store.tables import FINETUNE_TRIALS, TASK_MODELS

log = logging.getLogger("earthloop.finetune")

__all__ = [
    "MODEL_FILE",
    "ExportContext",
    "ExportedModel",
    "TaskModelExportError",
    "export_rows",
    "export_selected",
    "export_trial",
    "model_payload",
    "model_version",
]

MODEL_FILE = "model.pt"
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


class TaskModelExportError(EarthloopError, RuntimeError):
    """A trial that cannot be exported (no checkpoint, unreadable state, unknown trial)."""


@dataclass
class ExportContext:
    """What an export needs from the sweep's plan: small, so a caller can build it without one."""

    arch: str
    bands: list[str]
    task: str
    num_outputs: int
    class_ids: list[int]
    class_names: dict[int, str]
    norms: dict[str, tuple[list[float], list[float]]]  # init name -> (mean, std) it trained with
    chips_table: str
    chips_version: int
    labels_source: str
    labels_version: int | None  # a Delta labels table's version; None for label rasters
    models_root: str  # <workdir>/models/task
    table_uri: str  # the task_models table

    @classmethod
    def from_plan(cls, plan: SweepPlan) -> ExportContext:
        pool = plan.pool
        norms = {
            name: (
                (list(init.mean), list(init.std))
                if init.mean is not None and init.std is not None
                else (list(plan.train_stats[0]), list(plan.train_stats[1]))
            )
            for name, init in plan.inits.items()
        }
        return cls(
            arch=plan.fc.backbone,
            bands=list(plan.bands),
            task=plan.fc.task,
            num_outputs=pool.num_outputs,
            class_ids=list(pool.class_ids),
            class_names=dict(pool.class_names),
            norms=norms,
            chips_table=pool.chips.uri if pool.chips else "",
            chips_version=pool.chips.version if pool.chips else -1,
            labels_source=pool.labels_source,
            labels_version=None,
            models_root=plan.cfg.path("models", "task"),
            table_uri=plan.cfg.table_uri(TASK_MODELS),
        )


@dataclass(frozen=True)
class ExportedModel:
    model_version: str
    path: str
    trial_id: str
    cell: str


def _weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """Content hash of the weights: the same checkpoint always gets the same model version."""
    h = hashlib.sha1()
    for key in sorted(state_dict):
        t = state_dict[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def model_version(sweep: str, trial_id: str, state_dict: dict[str, torch.Tensor]) -> str:
    """``<sweep>-<trial id>-<8 hex of the weights>``: readable, stable and path-safe."""
    stem = _SAFE.sub("_", f"{sweep}-{trial_id}").strip("_")
    return f"{stem}-{_weights_digest(state_dict)[:8]}"


def model_payload(
    model: TaskModel, ctx: ExportContext, row: dict[str, Any], version: str, step: int
) -> dict[str, Any]:
    """The file's content: the model's weights and everything needed to use it and trace it."""
    mean, std = ctx.norms[str(row["init"])]
    return {
        "format": TASK_MODEL_FORMAT,
        "format_version": TASK_MODEL_FORMAT_VERSION,
        "model_version": version,
        "task": ctx.task,
        "arch": ctx.arch,
        "in_channels": len(ctx.bands),
        "num_outputs": ctx.num_outputs,
        "class_ids": [int(c) for c in ctx.class_ids],
        "classes": [str(ctx.class_names[c]) for c in ctx.class_ids],
        "bands": list(ctx.bands),
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
        "source": {
            "sweep": str(row["sweep"]),
            "trial_id": str(row["trial_id"]),
            "cell": str(row["cell"]),
            "init": str(row["init"]),
            "mode": str(row["mode"]),
            "fraction": float(row["fraction"]),
            "seed": int(row["seed"]),
            "metric": str(row["metric"]),
            "val_metric": float(row["val_metric"]),
            "best_val_metric": float(row["best_val_metric"]),
            "checkpoint": str(row["checkpoint"]),
            "checkpoint_step": int(step),
        },
        "chips_table": ctx.chips_table,
        "chips_table_version": int(ctx.chips_version),
        "labels_source": ctx.labels_source,
        "labels_table_version": ctx.labels_version,
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
    }


def _trial_model(ctx: ExportContext, row: dict[str, Any]) -> tuple[TaskModel, int]:
    """The trial's model as of its checkpoint, and that checkpoint's step."""
    ckpt = str(row.get("checkpoint") or "")
    if not ckpt:
        raise TaskModelExportError(f"trial {row['trial_id']} has no checkpoint to export")
    uri = posixpath.join(ckpt, STATE_FILE)
    try:
        state = torch.load(io.BytesIO(read_bytes(uri)), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise TaskModelExportError(f"trial {row['trial_id']}: {uri} is missing") from None
    except Exception as exc:
        raise TaskModelExportError(
            f"trial {row['trial_id']}: {uri} unreadable ({type(exc).__name__}: {exc})"
        ) from None
    model = TaskModel(
        ctx.task, build_backbone(ctx.arch, len(ctx.bands)), ctx.num_outputs, frozen=False
    )
    model.load_state_dict(state["model"], strict=True)
    return model, int(state.get("step", -1))


def _task_model_row(payload: dict[str, Any], path: str) -> dict[str, Any]:
    src = payload["source"]
    return {
        "model_version": payload["model_version"],
        "task": payload["task"],
        "arch": payload["arch"],
        "path": path,
        "classes": list(payload["classes"]),
        "bands": list(payload["bands"]),
        "source_sweep": src["sweep"],
        "source_trial": src["trial_id"],
        "checkpoint_step": int(src["checkpoint_step"]),
        "chips_table": payload["chips_table"],
        "chips_table_version": int(payload["chips_table_version"]),
        "labels_source": payload["labels_source"],
        "labels_table_version": payload["labels_table_version"],
        "val_metric": float(src["val_metric"]),
        "created_at": datetime.now(UTC),
    }


def _export_row(ctx: ExportContext, row: dict[str, Any]) -> tuple[ExportedModel, dict[str, Any]]:
    model, step = _trial_model(ctx, row)
    version = model_version(str(row["sweep"]), str(row["trial_id"]), model.state_dict())
    payload = model_payload(model, ctx, row, version, step)
    base = posixpath.join(ctx.models_root, version)
    path = posixpath.join(base, MODEL_FILE)
    buf = io.BytesIO()
    torch.save(payload, buf)
    write_bytes(path, buf.getvalue())
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    write_bytes(posixpath.join(base, "meta.json"), json.dumps(meta, indent=1, default=str).encode())
    return ExportedModel(version, path, str(row["trial_id"]), str(row["cell"])), _task_model_row(
        payload, path
    )


def export_rows(ctx: ExportContext, rows: Iterable[dict[str, Any]]) -> list[ExportedModel]:
    """Export ``rows`` (trial rows) and register them in ``task_models`` in one MERGE.

    A trial that cannot be exported is logged and skipped: the sweep's rows and report are
    already written, and one missing checkpoint must not hide the other cells' models.
    """
    done: list[ExportedModel] = []
    table_rows: list[dict[str, Any]] = []
    for row in rows:
        try:
            exported, trow = _export_row(ctx, row)
        except TaskModelExportError as exc:
            log.warning("task model export skipped: %s", exc)
            continue
        done.append(exported)
        table_rows.append(trow)
        log.info("task model %s (%s) -> %s", exported.model_version, exported.cell, exported.path)
    if table_rows:
        merge_rows(
            ctx.table_uri,
            pa.Table.from_pylist(table_rows, schema=TASK_MODELS.schema),
            TASK_MODELS.keys,
        )
    return done


def export_selected(plan: SweepPlan, rows: Sequence[dict[str, Any]]) -> list[ExportedModel]:
    """Export the selected trial of every cell of a finished sweep (the end of ``run_sweep``)."""
    return export_rows(ExportContext.from_plan(plan), [r for r in rows if r.get("selected")])


def export_trial(
    cfg: EarthloopConfig, trial_id: str, *, plan: SweepPlan | None = None
) -> ExportedModel:
    """Export one trial a user names, from the sweep of ``cfg`` (``finetune.name``).

    The plan is rebuilt (driver-side, no training) when not given: the export needs the
    normalisation the trial trained with, which for a random initialisation is the sweep's
    train-split statistics.
    """
    plan = plan or plan_sweep(cfg)
    uri = plan.cfg.table_uri(FINETUNE_TRIALS)
    rows = (
        [r for r in read_table(uri).to_pylist() if r["sweep"] == plan.name]
        if table_exists(uri)
        else []
    )
    match = [r for r in rows if r["trial_id"] == trial_id]
    if not match:
        known = sorted(r["trial_id"] for r in rows)[:10]
        raise TaskModelExportError(
            f"no trial {trial_id!r} in sweep {plan.name!r} ({uri}); known: {known}"
        )
    ctx = ExportContext.from_plan(plan)
    exported, trow = _export_row(ctx, match[0])
    merge_rows(
        ctx.table_uri, pa.Table.from_pylist([trow], schema=TASK_MODELS.schema), TASK_MODELS.keys
    )
    return exported
