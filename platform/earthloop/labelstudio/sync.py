"""The label sync job: pull the loop's Label Studio project into the Delta ``labels`` table.

Why a job of its own, apart from the round: annotators label at their own pace, and labels
should reach the table (and the metrics) whenever they arrive — after a webhook, on a timer,
or by hand — without selecting or pushing anything. The project and its class set are those
of the round (:func:`earthloop.active.round.project_spec`), so push and pull always agree on
the project title and the label config. Pulling is idempotent (see :mod:`.pull`), so running
it twice, or concurrently with a webhook-triggered pull, changes nothing twice.

Run as ``earthloop sync-labels`` or ``jobs/sync_labels.py``. It exits non-zero only when Label
Studio (or the configuration) fails; rejected annotations are counted and reported, not fatal.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pyarrow.compute as pc

from earthloop.active.round import pick_task_model, project_spec
from earthloop.config import ConfigError, EarthloopConfig, parse_job_args
from earthloop.errors import fail
from earthloop.labelstudio.client import Connection, LabelStudio, LabelStudioError
from earthloop.labelstudio.project import ProjectSpec, open_project
from earthloop.labelstudio.pull import PullReport, pull_labels
from earthloop.labelstudio.push import queued_chips
from earthloop.observe.logs import setup_logging
from earthloop.observe.recorders import LabelMetrics
from earthloop.store.delta import read_table, table_exists
from earthloop.store.tables import CHIPS, LABELS

__all__ = ["SyncReport", "loop_project", "main", "record_pull", "sync_labels"]


@dataclass
class SyncReport:
    pull: PullReport
    queue: int  # tasks in the project without an annotation
    labeled_chips: int  # distinct chips in the labels table


def loop_project(
    cfg: EarthloopConfig,
    *,
    model_version: str | None = None,
    init: str | None = None,
    title: str | None = None,
    files_root: str | None = None,
) -> ProjectSpec:
    """The loop's project, derived exactly as the round derives it."""
    model = pick_task_model(cfg, model_version, init)
    return project_spec(cfg, model, title=title, files_root=files_root)


def _labeled_chips(uri: str) -> int:
    if not table_exists(uri):
        return 0
    return len(pc.unique(read_table(uri, columns=["chip_id"])["chip_id"]))


def sync_labels(cfg: EarthloopConfig, spec: ProjectSpec, client: LabelStudio) -> SyncReport:
    """Pull every annotation of ``spec``'s project into ``labels`` (MERGE) and count the queue.

    Raises:
        LabelStudioError: Label Studio failed. StoreWriteError: the MERGE kept conflicting.
    """
    labels_uri = cfg.table_uri(LABELS)
    report = pull_labels(
        client,
        spec,
        chips_uri=cfg.table_uri(CHIPS),
        labels_uri=labels_uri,
        masks_root=cfg.path("label_masks"),
    )
    queued = len(queued_chips(client, open_project(client, spec)))
    return SyncReport(report, max(queued - report.tasks, 0), _labeled_chips(labels_uri))


def record_pull(metrics: LabelMetrics, rep: SyncReport, *, rejected: bool = True) -> None:
    """Export one sync as the ``earthloop_label_*`` metrics.

    ``rejected=False`` leaves the rejection counter alone: a periodic re-pull meets the same
    malformed annotation every time, and a service counts each one once itself.
    """
    new = rep.pull.inserted + rep.pull.updated
    metrics.annotations_pulled(new)
    metrics.labels_written(new)
    if rejected:
        for reason, n in rep.pull.rejected.items():
            metrics.annotation_rejected(reason, n)
    metrics.queue_size(rep.queue)
    metrics.labeled_chips(rep.labeled_chips)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False, prog="earthloop sync-labels")
    p.add_argument("--model-version", default=None, help="task model naming the class set")
    p.add_argument("--init", default=None, help="pick among task models of this init")
    p.add_argument("--project", default=None, help="Label Studio project title")
    p.add_argument("--files-root", default=None, help="Label Studio local-files root")
    return p


def main(argv: list[str] | None = None) -> int:
    """``earthloop sync-labels [flags] [--config FILE] [section.key=value ...]``."""
    cfg, ns = parse_job_args(
        argv, "Pull Label Studio annotations into the labels table.", _parser()
    )
    setup_logging()
    try:
        client = LabelStudio(Connection.from_env())
        spec = loop_project(
            cfg, model_version=ns.model_version, init=ns.init, title=ns.project,
            files_root=ns.files_root,
        )  # fmt: skip
        rep = sync_labels(cfg, spec, client)
    except (ConfigError, LabelStudioError) as exc:
        return fail("earthloop sync-labels", exc)
    record_pull(LabelMetrics("label"), rep)
    p = rep.pull
    bad = ", ".join(f"{k}={v}" for k, v in sorted(p.rejected.items())) or "none"
    print(f"project:     {spec.title}")
    print(f"annotations: {p.annotations} on {p.tasks} task(s), {p.cancelled} skipped")
    print(
        f"labels:      {p.inserted} new, {p.updated} updated, {p.unchanged} unchanged, "
        f"{p.removed} removed"
    )
    print(f"rejected:    {sum(p.rejected.values())} ({bad})")
    print(f"queue:       {rep.queue} task(s) waiting; {rep.labeled_chips} chip(s) labelled")
    print(f"table:       {cfg.table_uri(LABELS)} v{p.version}")
    return 0
