"""Typed recorders jobs call to record the catalogue's metrics: one class per stage.

Why recorders and not raw backend calls: a recorder fixes the label set of each metric, passes
every label value through :mod:`earthloop.observe.labels`, heartbeats on progress so stall
alerts work, and swallows (and logs once) exporter failures, so telemetry can never take a job
down. All share :class:`JobMetrics`'s constructor; a stage only names its default job kind.

Without an initialised Ray and without an explicit backend every call is a no-op (see
:func:`earthloop.observe.backends.default_backend`), so plain-torch unit tests and scripts can
call the same recorders.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from types import TracebackType
from typing import ClassVar, Literal

from earthloop.observe.backends import MetricsBackend, default_backend
from earthloop.observe.catalogue import SPECS
from earthloop.observe.labels import (
    bounded,
    check_job_name,
    ingest_reject_reason,
    loss_term,
    tune_trial_status,
)

__all__ = [
    "IngestMetrics",
    "JobMetrics",
    "LabelMetrics",
    "StreamMetrics",
    "TrainMetrics",
    "TuneMetrics",
]

_log = logging.getLogger("earthloop.observe")


class JobMetrics:
    """Heartbeat and run state of one job; the base of the per-stage helpers.

    ``job_name`` names the kind of job ("ingest", "pretrain", "finetune", "tune", "label"), never
    a per-run id: it is a label on every series.

    Metrics must never take a job down: a failing backend call is logged once per metric and
    otherwise ignored.
    """

    #: Job kind used when the caller names none; ``None`` means the caller must name it.
    default_job_name: ClassVar[str | None] = None

    def __init__(
        self,
        job_name: str | None = None,
        *,
        backend: MetricsBackend | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        name = job_name if job_name is not None else self.default_job_name
        if name is None:
            raise TypeError(f"{type(self).__name__} needs a job_name")
        self.job_name = check_job_name(name)
        self._backend: MetricsBackend = backend if backend is not None else default_backend()
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

    default_job_name = "ingest"

    def item_processed(self, n: int = 1) -> None:
        self._inc("earthloop_ingest_items_total", n)
        self.heartbeat()

    def chips_processed(self, n: int = 1) -> None:
        """Chips accepted and written."""
        self._inc("earthloop_ingest_chips_total", n)
        self.heartbeat()

    def chip_rejected(self, reason: str, n: int = 1) -> None:
        """A chip dropped; an unknown ``reason`` counts as ``other`` (see :mod:`.labels`)."""
        reason = ingest_reject_reason(reason)
        self._inc("earthloop_ingest_chips_rejected_total", n, reason=reason)
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

    default_job_name = "pretrain"

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

    default_job_name = "pretrain"

    def __init__(
        self,
        job_name: str | None = None,
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

    default_job_name = "tune"

    def trials_running(self, n: int) -> None:
        self._set("earthloop_tune_trials_running", n)
        self.heartbeat()

    def trial_done(self, status: Literal["terminated", "error"] = "terminated") -> None:
        self._inc("earthloop_tune_trials_done_total", 1, status=tune_trial_status(status))
        self.heartbeat()

    def best_metric(self, metric: str, value: float) -> None:
        """Best value so far of ``metric`` (its name is a label value: keep it a fixed name)."""
        self._set("earthloop_tune_best_metric", value, metric=bounded(metric))


class LabelMetrics(JobMetrics):
    """Active learning and labeling: the queue, pushes, pulls, rejections and label totals."""

    default_job_name = "label"

    def queue_size(self, n: int) -> None:
        self._set("earthloop_label_queue_size", n)

    def tasks_pushed(self, n: int, method: str = "random") -> None:
        """Tasks sent to Label Studio, by acquisition method (e.g. entropy, random)."""
        self._inc("earthloop_label_tasks_pushed_total", n, method=bounded(method))
        self.heartbeat()

    def annotations_pulled(self, n: int = 1) -> None:
        self._inc("earthloop_label_annotations_pulled_total", n)
        self.heartbeat()

    def annotation_rejected(self, reason: str, n: int = 1) -> None:
        self._inc("earthloop_label_annotations_rejected_total", n, reason=bounded(reason))
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
