"""Push selected chips to Label Studio as tasks: preview, chip id, strategy, score, pre-annotation.

Why keyed on the chip id in task data: Label Studio's task ids are reused after deletes (SQLite),
so they cannot identify a chip across rounds. Before creating anything push lists the project's
tasks and skips chips already there, so re-running a round (or a round killed after some tasks
were created) never makes a second task for a chip. Two pushes into one project at the same
instant could still both create one; rounds run one at a time (the webhook service's rule).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from earthloop.labelstudio.client import LabelStudio
from earthloop.labelstudio.configs import SEGMENTATION
from earthloop.labelstudio.preview import write_previews
from earthloop.labelstudio.project import ProjectSpec, open_project
from earthloop.labelstudio.results import brush_result, choices_result

log = logging.getLogger("earthloop.labelstudio")

Json = dict[str, Any]


@dataclass(frozen=True)
class Selected:
    """One chip chosen by a selection strategy (a row of ``al_rounds``)."""

    chip_id: str
    strategy: str
    score: float  # the strategy's score: higher = more worth labelling
    al_round: int = 0


@dataclass(frozen=True)
class Prediction:
    """A task model's output for a chip, shown to the annotator as a pre-annotation.

    ``score`` is the model's confidence in [0, 1]: Label Studio's uncertainty sampling serves
    the task with the *lowest* prediction score of the project's model version first.
    """

    model_version: str
    score: float
    mask: np.ndarray | None = None  # (H, W) class ids, segmentation
    classes: tuple[str, ...] = ()  # scene labels, classification


@dataclass
class PushReport:
    project_id: int
    created: int = 0
    already_queued: int = 0
    no_preview: dict[str, str] = field(default_factory=dict)  # chip id → reason
    task_ids: dict[str, int] = field(default_factory=dict)  # chip id → new task id


def queued_chips(client: LabelStudio, project_id: int) -> dict[str, int]:
    """Chip id → task id of every task already in the project."""
    return {
        str(t["data"]["chip_id"]): int(t["id"])
        for t in client.tasks(project_id)
        if "chip_id" in (t.get("data") or {})
    }


def _prediction_json(spec: ProjectSpec, pred: Prediction) -> Json:
    if spec.kind == SEGMENTATION:
        if pred.mask is None:
            raise ValueError("a segmentation prediction needs a mask")
        result = brush_result(pred.mask, spec.classes)
    else:
        result = choices_result(pred.classes)
    return {"model_version": pred.model_version, "score": float(pred.score), "result": result}


def _task(spec: ProjectSpec, sel: Selected, row: Mapping[str, Any], rel: str) -> Json:
    size = int(row["chip_size"])
    return {
        "data": {
            "image": "/data/local-files/?d=" + quote(rel),
            "chip_id": sel.chip_id,
            "strategy": sel.strategy,
            "score": float(sel.score),
            "al_round": int(sel.al_round),
            "height": size,
            "width": size,
        }
    }


def push_chips(
    client: LabelStudio,
    spec: ProjectSpec,
    selected: Sequence[Selected],
    chip_rows: Mapping[str, Mapping[str, Any]],
    predictions: Mapping[str, Prediction] | None = None,
) -> PushReport:
    """Create one task per selected chip that the project does not hold yet.

    Args:
        client: a connected Label Studio client.
        spec: the project (created on first use, sampling set to uncertainty).
        selected: the chips to queue, best first; repeats of a chip id are ignored.
        chip_rows: chip id → its row of the chips table (for the preview window and size).
        predictions: chip id → the task model's pre-annotation, optional per chip.

    Returns:
        Counts, chips whose preview could not be read (not pushed), and the new task ids.

    Raises:
        KeyError: a selected chip has no row in ``chip_rows``.
        LabelStudioError: the server refused a call.
    """
    version = _model_version(predictions)
    pid = open_project(client, spec)
    report = PushReport(pid)
    queued = queued_chips(client, pid)
    todo: dict[str, Selected] = {}
    for sel in selected:
        if sel.chip_id in queued:
            report.already_queued += 1
        elif sel.chip_id not in todo:
            todo[sel.chip_id] = sel
    missing = [c for c in todo if c not in chip_rows]
    if missing:
        raise KeyError(f"{len(missing)} selected chip(s) are not in the chip rows: {missing[:5]}")
    folder = spec.preview_dir(pid)
    written, report.no_preview = write_previews([dict(chip_rows[c]) for c in todo], folder)
    root = spec.files_root.resolve()
    tasks: list[Json] = []
    for chip_id, path in written.items():
        task = _task(spec, todo[chip_id], chip_rows[chip_id], str(Path(path).relative_to(root)))
        pred = (predictions or {}).get(chip_id)
        if pred is not None:
            task["predictions"] = [_prediction_json(spec, pred)]
        tasks.append(task)
    ids = client.import_tasks(pid, tasks)
    report.task_ids = {t["data"]["chip_id"]: i for t, i in zip(tasks, ids, strict=True)}
    report.created = len(ids)
    if version is not None:
        # Uncertainty sampling ranks only predictions of the project's model version.
        client.update_project(pid, model_version=version)
    log.info(
        "pushed %d task(s) to project %d (%d already queued, %d without preview)",
        report.created,
        pid,
        report.already_queued,
        len(report.no_preview),
    )
    return report


def _model_version(predictions: Mapping[str, Prediction] | None) -> str | None:
    """The one model version of a push's predictions (None without predictions)."""
    versions = sorted({p.model_version for p in (predictions or {}).values()})
    if len(versions) > 1:
        raise ValueError(f"one push carries one model version, got {versions}")
    return versions[0] if versions else None
