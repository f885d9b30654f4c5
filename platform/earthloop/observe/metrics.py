"""Compatibility re-exports of the metrics API that used to live in this one module.

Why it still exists: the catalogue, the backends, label sanitising and the recorders now live in
:mod:`~earthloop.observe.catalogue`, :mod:`~earthloop.observe.backends`,
:mod:`~earthloop.observe.labels` and :mod:`~earthloop.observe.recorders`. A few call sites owned
by other work in progress still import from here and are switched separately:
``earthloop/finetune/callbacks.py`` (``TuneMetrics``) and ``earthloop/pretrain/loop.py``
(``StreamMetrics``, ``TrainMetrics``). Delete this module once they import the new modules; new
code must not import it.
"""

from __future__ import annotations

from earthloop.observe.backends import (
    MetricsBackend,
    MetricsServer,
    NoopBackend,
    PrometheusBackend,
    RayBackend,
    default_backend,
    serve_prometheus,
)
from earthloop.observe.catalogue import (
    ALLOWED_LABELS,
    INGEST_REJECT_REASONS,
    SPECS,
    TUNE_TRIAL_STATUSES,
    MetricKind,
    MetricSpec,
    exported_name,
)
from earthloop.observe.labels import loss_term
from earthloop.observe.recorders import (
    IngestMetrics,
    JobMetrics,
    LabelMetrics,
    StreamMetrics,
    TrainMetrics,
    TuneMetrics,
)

__all__ = [
    "ALLOWED_LABELS",
    "INGEST_REJECT_REASONS",
    "SPECS",
    "TUNE_TRIAL_STATUSES",
    "IngestMetrics",
    "JobMetrics",
    "LabelMetrics",
    "MetricKind",
    "MetricSpec",
    "MetricsBackend",
    "MetricsServer",
    "NoopBackend",
    "PrometheusBackend",
    "RayBackend",
    "StreamMetrics",
    "TrainMetrics",
    "TuneMetrics",
    "default_backend",
    "exported_name",
    "loss_term",
    "serve_prometheus",
]
