"""The one catalogue of earthloop metrics, and the typed helpers jobs record them through.

Why one module: dashboards, alert rules and docs refer to metric names as strings. Keeping every
name, type, label set and help text in :data:`SPECS` lets the tests check the conventions
(``_total`` counters, ``_seconds`` base units, low-cardinality labels) and check that every
dashboard/rule query names a metric that really exists.

Two exporters share these specs:

* inside Ray (jobs, tasks, actors, Ray Train workers) the helpers record through
  :mod:`ray.util.metrics`. Each node's metrics agent serves them on ``--metrics-export-port``
  with a ``ray_`` prefix: ``earthloop_ingest_chips_total`` is scraped as
  ``ray_earthloop_ingest_chips_total``, with Ray's own labels (``SessionName``, ``WorkerId``,
  ``NodeAddress``, ...) added. Dashboards aggregate those away with ``sum by (job_name)`` or
  ``max by (job_name)``;
* our own long-running services (the labeling webhook) use :class:`PrometheusBackend`, which
  exports the catalogue name unchanged (``earthloop_label_labels_total``).

Without an initialised Ray and without an explicit backend every call is a no-op, so plain-torch
unit tests and scripts can call the same helpers.

The label meant to carry the job is ``job_name``, not ``job``: Prometheus attaches its own
``job`` label (the scrape job) to every series and would rename ours to ``exported_job``.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Literal, Protocol

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

_log = logging.getLogger("earthloop.observe")

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
    out: dict[str, MetricSpec] = {}
    for spec in specs:
        if spec.name in out:
            raise ValueError(f"duplicate metric {spec.name}")
        out[spec.name] = spec
    return out


_J = ("job_name",)

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


# ------------------------------------------------------------------------------------------------
# Backends
# ------------------------------------------------------------------------------------------------


class MetricsBackend(Protocol):
    """Where recorded values go. Label values are already validated strings."""

    def inc(self, spec: MetricSpec, value: float, labels: Mapping[str, str]) -> None: ...

    def set(self, spec: MetricSpec, value: float, labels: Mapping[str, str]) -> None: ...

    def observe(self, spec: MetricSpec, value: float, labels: Mapping[str, str]) -> None: ...


class NoopBackend:
    """Drops everything: the default outside Ray, so helpers never need an ``if``."""

    def inc(self, spec: MetricSpec, value: float, labels: Mapping[str, str]) -> None:
        return None

    def set(self, spec: MetricSpec, value: float, labels: Mapping[str, str]) -> None:
        return None

    def observe(self, spec: MetricSpec, value: float, labels: Mapping[str, str]) -> None:
        return None


def _ray_is_initialized() -> bool:
    # Only look at Ray if the process already imported it: importing Ray costs ~1 s and plain
    # scripts that never use Ray should not pay it for a no-op.
    ray = sys.modules.get("ray")
    if ray is None:
        return False
    try:
        return bool(ray.is_initialized())
    except Exception:  # half-imported or shutting down
        return False


class RayBackend:
    """Records through :mod:`ray.util.metrics`; metric objects are created once per process.

    Ray creates a native metric per constructor call, so the objects are cached per process
    (workers are separate processes and build their own on first use).
    """

    _lock = threading.Lock()
    _objects: dict[str, Any] = {}

    def _get(self, spec: MetricSpec) -> Any:
        obj = self._objects.get(spec.name)
        if obj is not None:
            return obj
        with self._lock:
            obj = self._objects.get(spec.name)
            if obj is None:
                from ray.util import metrics as rm

                if spec.kind == "counter":
                    obj = rm.Counter(spec.name, spec.doc, tag_keys=spec.labels)
                elif spec.kind == "gauge":
                    obj = rm.Gauge(spec.name, spec.doc, tag_keys=spec.labels)
                else:
                    obj = rm.Histogram(
                        spec.name, spec.doc, boundaries=list(spec.buckets), tag_keys=spec.labels
                    )
                self._objects[spec.name] = obj
        return obj

    def inc(self, spec: MetricSpec, value: float, labels: Mapping[str, str]) -> None:
        self._get(spec).inc(value, tags=dict(labels))

    def set(self, spec: MetricSpec, value: float, labels: Mapping[str, str]) -> None:
        self._get(spec).set(value, tags=dict(labels))

    def observe(self, spec: MetricSpec, value: float, labels: Mapping[str, str]) -> None:
        self._get(spec).observe(value, tags=dict(labels))


class _AutoBackend:
    """Ray when Ray is initialised in this process at call time, otherwise nothing.

    Deciding per call (not at construction) lets a helper built before ``ray.init`` start
    exporting afterwards, and stop quietly after ``ray.shutdown``.
    """

    def __init__(self) -> None:
        self._ray = RayBackend()
        self._noop = NoopBackend()

    def _pick(self) -> MetricsBackend:
        return self._ray if _ray_is_initialized() else self._noop

    def inc(self, spec: MetricSpec, value: float, labels: Mapping[str, str]) -> None:
        self._pick().inc(spec, value, labels)

    def set(self, spec: MetricSpec, value: float, labels: Mapping[str, str]) -> None:
        self._pick().set(spec, value, labels)

    def observe(self, spec: MetricSpec, value: float, labels: Mapping[str, str]) -> None:
        self._pick().observe(spec, value, labels)


_DEFAULT_BACKEND: Final = _AutoBackend()


def default_backend() -> MetricsBackend:
    """The backend helpers use when given none: Ray if initialised, else a no-op."""
    return _DEFAULT_BACKEND


class PrometheusBackend:
    """prometheus-client exporter for our own long-running services (e.g. the labeling webhook).

    Series carry the catalogue names unchanged (no ``ray_`` prefix). Collectors are registered
    lazily, so a service only exposes the families it actually records. Create one backend per
    registry (per process for the default one): a second backend on the same registry would try
    to register the same names again, which prometheus-client refuses.
    """

    def __init__(self, registry: Any = None) -> None:
        from prometheus_client import REGISTRY

        self.registry = REGISTRY if registry is None else registry
        self._lock = threading.Lock()
        self._objects: dict[str, Any] = {}

    def _get(self, spec: MetricSpec) -> Any:
        obj = self._objects.get(spec.name)
        if obj is not None:
            return obj
        with self._lock:
            obj = self._objects.get(spec.name)
            if obj is None:
                import prometheus_client as pc

                if spec.kind == "counter":
                    obj = pc.Counter(spec.name, spec.doc, spec.labels, registry=self.registry)
                elif spec.kind == "gauge":
                    obj = pc.Gauge(spec.name, spec.doc, spec.labels, registry=self.registry)
                else:
                    obj = pc.Histogram(
                        spec.name,
                        spec.doc,
                        spec.labels,
                        buckets=spec.buckets,
                        registry=self.registry,
                    )
                self._objects[spec.name] = obj
        return obj

    def inc(self, spec: MetricSpec, value: float, labels: Mapping[str, str]) -> None:
        self._get(spec).labels(**labels).inc(value)

    def set(self, spec: MetricSpec, value: float, labels: Mapping[str, str]) -> None:
        self._get(spec).labels(**labels).set(value)

    def observe(self, spec: MetricSpec, value: float, labels: Mapping[str, str]) -> None:
        self._get(spec).labels(**labels).observe(value)


@dataclass
class MetricsServer:
    """A running ``/metrics`` endpoint; ``port`` is the bound port (useful with port=0)."""

    host: str
    port: int
    _stop: Callable[[], None]

    def stop(self) -> None:
        self._stop()


def serve_prometheus(
    backend: PrometheusBackend, port: int = 9108, host: str = "127.0.0.1"
) -> MetricsServer:
    """Serve ``backend``'s registry on ``http://host:port/metrics`` from a daemon thread.

    Binds to loopback by default: exposing metrics beyond the machine is an explicit choice.
    """
    from prometheus_client import start_http_server

    server, thread = start_http_server(port, addr=host, registry=backend.registry)
    bound_host, bound_port = server.server_address[:2]

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return MetricsServer(str(bound_host), int(bound_port), stop)


# ------------------------------------------------------------------------------------------------
# Typed helpers
# ------------------------------------------------------------------------------------------------

_JOB_NAME_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,47}$")
_LABEL_VALUE_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


def _bounded(value: str, fallback: str = "other") -> str:
    """Keep a label value short and identifier-like; anything else becomes ``fallback``.

    Why: a caller passing a chip id, a path or an exception message as a reason would create a
    new time series per value. Lower-case identifiers of at most 32 characters pass.
    """
    return value if _LABEL_VALUE_RE.match(value) else fallback


def loss_term(key: str) -> str:
    """Label value for a loss key: ``loss``/``total`` -> ``total``, ``loss_seco`` -> ``seco``."""
    if key in ("loss", "total"):
        return "total"
    return _bounded(key.removeprefix("loss_"))


class JobMetrics:
    """Heartbeat and run state of one job; the base of the per-stage helpers.

    ``job_name`` names the kind of job ("ingest", "pretrain", "finetune", "tune", "label"), never
    a per-run id: it is a label on every series.

    Metrics must never take a job down: a failing backend call is logged once per metric and
    otherwise ignored.
    """

    def __init__(
        self,
        job_name: str,
        *,
        backend: MetricsBackend | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not _JOB_NAME_RE.match(job_name):
            raise ValueError(
                f"job_name {job_name!r}: use a short lower-case job kind such as 'pretrain', "
                "not a run id (it becomes a Prometheus label)"
            )
        self.job_name = job_name
        self._backend: MetricsBackend = backend if backend is not None else _DEFAULT_BACKEND
        self._clock = clock
        self._warned: set[str] = set()

    # -- plumbing -------------------------------------------------------------------------------
    def _labels(self, **extra: str) -> dict[str, str]:
        return {"job_name": self.job_name, **extra}

    def _call(self, op: str, name: str, value: float, labels: Mapping[str, str]) -> None:
        spec = SPECS[name]
        try:
            getattr(self._backend, op)(spec, float(value), labels)
        except Exception as exc:  # never let telemetry break the job
            if name not in self._warned:
                self._warned.add(name)
                _log.warning("metric %s not recorded: %s", name, exc)

    def _inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        if value > 0:  # Ray refuses non-positive increments
            self._call("inc", name, value, self._labels(**labels))

    def _set(self, name: str, value: float, **labels: str) -> None:
        self._call("set", name, value, self._labels(**labels))

    def _observe(self, name: str, value: float, **labels: str) -> None:
        self._call("observe", name, value, self._labels(**labels))

    # -- public ---------------------------------------------------------------------------------
    def heartbeat(self) -> None:
        """Mark progress now. Every progress call of the subclasses does this too."""
        self._set("earthloop_job_last_progress_timestamp_seconds", self._clock())

    def start(self) -> None:
        """Mark the job running; stall alerts only consider running jobs."""
        now = self._clock()
        self._set("earthloop_job_started_timestamp_seconds", now)
        self._set("earthloop_job_running", 1.0)
        self._set("earthloop_job_last_progress_timestamp_seconds", now)

    def finish(self) -> None:
        """Mark the job finished, so a quiet but finished job does not look stalled."""
        self._set("earthloop_job_running", 0.0)

    def __enter__(self) -> JobMetrics:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.finish()


class IngestMetrics(JobMetrics):
    """Ingest: STAC items in, chips out (or rejected), raster read latency."""

    def __init__(
        self,
        job_name: str = "ingest",
        *,
        backend: MetricsBackend | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(job_name, backend=backend, clock=clock)

    def item_processed(self, n: int = 1) -> None:
        self._inc("earthloop_ingest_items_total", n)
        self.heartbeat()

    def chips_processed(self, n: int = 1) -> None:
        """Chips accepted and written."""
        self._inc("earthloop_ingest_chips_total", n)
        self.heartbeat()

    def chip_rejected(self, reason: str, n: int = 1) -> None:
        """A chip dropped; ``reason`` outside :data:`INGEST_REJECT_REASONS` counts as other."""
        r = reason if reason in INGEST_REJECT_REASONS else "other"
        self._inc("earthloop_ingest_chips_rejected_total", n, reason=r)
        self.heartbeat()

    def observe_read(self, seconds: float) -> None:
        self._observe("earthloop_ingest_read_seconds", seconds)

    @contextmanager
    def time_read(self) -> Iterator[None]:
        """Time a read; the latency is recorded even when the read raises."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.observe_read(time.perf_counter() - t0)


class StreamMetrics(JobMetrics):
    """Streaming of chips into training: delivered chips and time spent waiting for data."""

    def __init__(
        self,
        job_name: str = "pretrain",
        *,
        backend: MetricsBackend | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(job_name, backend=backend, clock=clock)

    def chips_delivered(self, n: int) -> None:
        self._inc("earthloop_stream_chips_total", n)
        self.heartbeat()

    def data_wait(self, ratio: float) -> None:
        """Fraction (0-1) of recent step time spent waiting for the next batch."""
        self._set("earthloop_stream_data_wait_ratio", min(max(ratio, 0.0), 1.0))


class TrainMetrics(JobMetrics):
    """Training loop metrics, safe to call from every Ray Train worker.

    Counters and the step-time histogram are recorded on every rank (they add up across
    workers). Gauges (loss, embedding std, kNN accuracy, collapse, checkpoint time) are only
    recorded where ``rank`` is None or 0: the same value from N ranks would make N series that
    differ only by Ray's ``WorkerId``.
    """

    def __init__(
        self,
        job_name: str = "pretrain",
        *,
        rank: int | None = None,
        backend: MetricsBackend | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(job_name, backend=backend, clock=clock)
        self.rank = rank

    @property
    def is_reporting_rank(self) -> bool:
        return self.rank is None or self.rank == 0

    def step(
        self,
        *,
        seconds: float,
        samples: int,
        losses: Mapping[str, float] | None = None,
    ) -> None:
        """Record one optimiser step: count, samples, wall time, throughput and loss terms."""
        self._inc("earthloop_train_steps_total", 1)
        self._inc("earthloop_train_samples_total", samples)
        self._observe("earthloop_train_step_seconds", seconds)
        if self.is_reporting_rank:
            if seconds > 0:
                self._set("earthloop_train_samples_per_second", samples / seconds)
            if losses:
                self.loss(losses)
        self.heartbeat()

    def loss(self, terms: Mapping[str, float]) -> None:
        """Last value per loss term; term names become label values, so keep them few.

        Method outputs name the backpropagated loss ``"loss"`` and its parts ``"loss_<term>"``;
        they are recorded as ``term="total"`` and ``term="<term>"`` so dashboards can select the
        total the same way for every method.
        """
        if not self.is_reporting_rank:
            return
        for key, value in terms.items():
            self._set("earthloop_train_loss", float(value), term=loss_term(key))

    def embedding_std(self, value: float) -> None:
        if self.is_reporting_rank:
            self._set("earthloop_train_embedding_std", value)

    def knn_accuracy(self, value: float) -> None:
        if self.is_reporting_rank:
            self._set("earthloop_train_knn_accuracy_ratio", value)

    def collapsed(self, flag: bool) -> None:
        if self.is_reporting_rank:
            self._set("earthloop_train_collapsed", 1.0 if flag else 0.0)

    def checkpoint_saved(self, timestamp: float | None = None) -> None:
        if self.is_reporting_rank:
            when = self._clock() if timestamp is None else timestamp
            self._set("earthloop_train_last_checkpoint_timestamp_seconds", when)

    def epoch(self, epoch: int) -> None:
        if self.is_reporting_rank:
            self._set("earthloop_train_epoch", epoch)


class TuneMetrics(JobMetrics):
    """Ray Tune sweep state, recorded from the driver (e.g. from a Tune callback)."""

    def __init__(
        self,
        job_name: str = "tune",
        *,
        backend: MetricsBackend | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(job_name, backend=backend, clock=clock)

    def trials_running(self, n: int) -> None:
        self._set("earthloop_tune_trials_running", n)
        self.heartbeat()

    def trial_done(self, status: Literal["terminated", "error"] = "terminated") -> None:
        s = status if status in TUNE_TRIAL_STATUSES else "error"
        self._inc("earthloop_tune_trials_done_total", 1, status=s)
        self.heartbeat()

    def best_metric(self, metric: str, value: float) -> None:
        """Best value so far of ``metric`` (its name is a label value: keep it a fixed name)."""
        self._set("earthloop_tune_best_metric", value, metric=_bounded(metric))


class LabelMetrics(JobMetrics):
    """Active learning and labeling: the queue, pushes, pulls, rejections and label totals."""

    def __init__(
        self,
        job_name: str = "label",
        *,
        backend: MetricsBackend | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(job_name, backend=backend, clock=clock)

    def queue_size(self, n: int) -> None:
        self._set("earthloop_label_queue_size", n)

    def tasks_pushed(self, n: int, method: str = "random") -> None:
        """Tasks sent to Label Studio, by acquisition method (e.g. entropy, random)."""
        self._inc("earthloop_label_tasks_pushed_total", n, method=_bounded(method))
        self.heartbeat()

    def annotations_pulled(self, n: int = 1) -> None:
        self._inc("earthloop_label_annotations_pulled_total", n)
        self.heartbeat()

    def annotation_rejected(self, reason: str, n: int = 1) -> None:
        self._inc("earthloop_label_annotations_rejected_total", n, reason=_bounded(reason))
        self.heartbeat()

    def labels_written(self, n: int = 1, *, timestamp: float | None = None) -> None:
        """Labels written to the store; also moves the last-label timestamp."""
        self._inc("earthloop_label_labels_total", n)
        if n > 0:
            when = self._clock() if timestamp is None else timestamp
            self._set("earthloop_label_last_label_timestamp_seconds", when)
        self.heartbeat()

    def labeled_chips(self, n: int) -> None:
        """Chips with a label in the store (a level, so it survives process restarts)."""
        self._set("earthloop_label_labeled_chips", n)
