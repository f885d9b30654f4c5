"""The one catalogue of earthloop metrics: names, kinds, label keys, help text and buckets.

Why one module, holding only data: dashboards, alert rules and docs refer to metric names as
strings. Keeping every name, type, label set and help text in :data:`SPECS` lets the tests check
the conventions (``_total`` counters, ``_seconds`` base units, low-cardinality labels) and check
that every dashboard/rule query names a metric that really exists, without importing any
exporter. How values are exported lives in :mod:`earthloop.observe.backends`; how jobs record
them in :mod:`earthloop.observe.recorders`.

Series exported through Ray carry a ``ray_`` prefix (``earthloop_ingest_chips_total`` is
scraped as ``ray_earthloop_ingest_chips_total``); series from our own services use the catalogue
name unchanged. :func:`exported_name` gives either form.

The label meant to carry the job is ``job_name``, not ``job``: Prometheus attaches its own
``job`` label (the scrape job) to every series and would rename ours to ``exported_job``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "ALLOWED_LABELS",
    "INGEST_REJECT_REASONS",
    "SPECS",
    "TUNE_TRIAL_STATUSES",
    "MetricKind",
    "MetricSpec",
    "exported_name",
]

MetricKind = Literal["counter", "gauge", "histogram"]

#: Label keys a metric may carry. Anything unbounded (chip ids, paths, URLs, trial ids, run ids)
#: would create one time series per value; such detail belongs in logs and tables, not labels.
ALLOWED_LABELS: Final[frozenset[str]] = frozenset(
    {"job_name", "method", "reason", "term", "stage", "metric", "status"}
)

#: Why ingest drops a chip. Unknown reasons are recorded as ``other`` rather than raising, so a
#: new failure mode in a long ingest does not crash it through its metrics.
INGEST_REJECT_REASONS: Final[frozenset[str]] = frozenset(
    {"cloud", "nodata", "read_error", "missing_asset", "crs", "other"}
)

#: How a Tune trial ended.
TUNE_TRIAL_STATUSES: Final[frozenset[str]] = frozenset({"terminated", "error"})

_LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_STEP_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass(frozen=True)
class MetricSpec:
    """Name, type, labels and help text of one metric, as defined once for every exporter."""

    name: str
    kind: MetricKind
    doc: str
    labels: tuple[str, ...] = ("job_name",)
    buckets: tuple[float, ...] = ()

    @property
    def ray_name(self) -> str:
        """The name Prometheus stores when Ray's metrics agent exported the series."""
        return "ray_" + self.name


def _specs(*specs: MetricSpec) -> dict[str, MetricSpec]:
    """Key specs by name, refusing duplicates so two definitions of one name cannot diverge."""
    out: dict[str, MetricSpec] = {}
    for spec in specs:
        if spec.name in out:
            raise ValueError(f"duplicate metric {spec.name}")
        out[spec.name] = spec
    return out


#: Every earthloop metric, keyed by its catalogue name (without Ray's ``ray_`` prefix).
SPECS: Final[Mapping[str, MetricSpec]] = _specs(
    # -- every job ------------------------------------------------------------------------------
    MetricSpec(
        "earthloop_job_last_progress_timestamp_seconds",
        "gauge",
        "Unix time of the job's last progress (heartbeat); stall alerts compare it with time().",
    ),
    MetricSpec("earthloop_job_running", "gauge", "1 while the job runs, 0 once it has finished."),
    MetricSpec("earthloop_job_started_timestamp_seconds", "gauge", "Unix time the job started."),
    # -- ingest ---------------------------------------------------------------------------------
    MetricSpec("earthloop_ingest_items_total", "counter", "STAC items (scenes) processed."),
    MetricSpec("earthloop_ingest_chips_total", "counter", "Chips accepted and written."),
    MetricSpec(
        "earthloop_ingest_chips_rejected_total",
        "counter",
        "Chips dropped, by reason (cloud, nodata, read_error, missing_asset, crs, other).",
        ("job_name", "reason"),
    ),
    MetricSpec(
        "earthloop_ingest_read_seconds",
        "histogram",
        "Latency of one raster window read.",
        buckets=_LATENCY_BUCKETS,
    ),
    # -- streaming ------------------------------------------------------------------------------
    MetricSpec("earthloop_stream_chips_total", "counter", "Chips delivered to the training loop."),
    MetricSpec(
        "earthloop_stream_data_wait_ratio",
        "gauge",
        "Fraction (0-1) of recent step time the training loop spent waiting for data.",
    ),
    # -- training -------------------------------------------------------------------------------
    MetricSpec("earthloop_train_steps_total", "counter", "Optimiser steps taken."),
    MetricSpec("earthloop_train_samples_total", "counter", "Training samples consumed."),
    MetricSpec(
        "earthloop_train_samples_per_second",
        "gauge",
        "Throughput of the last step as measured by the worker.",
    ),
    MetricSpec(
        "earthloop_train_step_seconds",
        "histogram",
        "Wall time of one optimiser step, data wait included.",
        buckets=_STEP_BUCKETS,
    ),
    MetricSpec(
        "earthloop_train_loss",
        "gauge",
        "Last loss value per term ('total' for the sum).",
        ("job_name", "term"),
    ),
    MetricSpec(
        "earthloop_train_embedding_std",
        "gauge",
        "Mean per-dimension std of L2-normalised embeddings; near 0 means collapse.",
    ),
    MetricSpec(
        "earthloop_train_knn_accuracy_ratio", "gauge", "kNN probe accuracy (0-1) on held-out chips."
    ),
    MetricSpec(
        "earthloop_train_collapsed", "gauge", "1 when the trainer judged the embedding collapsed."
    ),
    MetricSpec(
        "earthloop_train_last_checkpoint_timestamp_seconds",
        "gauge",
        "Unix time of the last checkpoint; its age is time() minus this.",
    ),
    MetricSpec("earthloop_train_epoch", "gauge", "Current epoch."),
    # -- tune -----------------------------------------------------------------------------------
    MetricSpec("earthloop_tune_trials_running", "gauge", "Trials running now."),
    MetricSpec(
        "earthloop_tune_trials_done_total",
        "counter",
        "Trials finished, by status (terminated, error).",
        ("job_name", "status"),
    ),
    MetricSpec(
        "earthloop_tune_best_metric",
        "gauge",
        "Best value so far of the tuned metric.",
        ("job_name", "metric"),
    ),
    # -- labeling / active learning -------------------------------------------------------------
    MetricSpec("earthloop_label_queue_size", "gauge", "Tasks waiting for an annotator."),
    MetricSpec(
        "earthloop_label_tasks_pushed_total",
        "counter",
        "Tasks pushed to Label Studio, by acquisition method.",
        ("job_name", "method"),
    ),
    MetricSpec(
        "earthloop_label_annotations_pulled_total",
        "counter",
        "Annotations received from Label Studio.",
    ),
    MetricSpec(
        "earthloop_label_annotations_rejected_total",
        "counter",
        "Annotations refused (invalid, empty, ...), by reason.",
        ("job_name", "reason"),
    ),
    MetricSpec("earthloop_label_labels_total", "counter", "Labels written to the label store."),
    MetricSpec("earthloop_label_labeled_chips", "gauge", "Chips with a label in the label store."),
    MetricSpec(
        "earthloop_label_last_label_timestamp_seconds",
        "gauge",
        "Unix time of the last label written; time() minus this is the time since the last label.",
    ),
)


def exported_name(name: str, exporter: Literal["ray", "prometheus_client"] = "ray") -> str:
    """Name of a catalogue metric as Prometheus stores it for the given exporter."""
    spec = SPECS[name]
    return spec.ray_name if exporter == "ray" else spec.name
