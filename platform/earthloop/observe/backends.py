"""Where recorded metric values go: Ray's metrics agent, prometheus-client, or nowhere.

Why separate from the catalogue and the recorders: exporters are the only part that touches Ray
or prometheus-client, and both are imported lazily here, so recording helpers stay importable
(and free) in plain-torch unit tests and scripts.

* inside Ray (jobs, tasks, actors, Ray Train workers) values go through :mod:`ray.util.metrics`.
  Each node's metrics agent serves them on ``--metrics-export-port`` with a ``ray_`` prefix and
  Ray's own labels (``SessionName``, ``WorkerId``, ``NodeAddress``, ...) added; dashboards
  aggregate those away with ``sum by (job_name)`` or ``max by (job_name)``;
* our own long-running services (the labeling webhook) use :class:`PrometheusBackend` and
  :func:`serve_prometheus`, which export the catalogue name unchanged;
* without an initialised Ray and without an explicit backend every call is a no-op.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from earthloop.observe.catalogue import MetricSpec

__all__ = [
    "MetricsBackend",
    "MetricsServer",
    "NoopBackend",
    "PrometheusBackend",
    "RayBackend",
    "default_backend",
    "serve_prometheus",
]


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
                from ray.util import metrics as rm  # heavy, and only present inside Ray jobs

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
        from prometheus_client import REGISTRY  # optional: only services that export use it

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
                import prometheus_client as pc  # optional, see __init__

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
    from prometheus_client import start_http_server  # optional, see PrometheusBackend

    server, thread = start_http_server(port, addr=host, registry=backend.registry)
    bound_host, bound_port = server.server_address[:2]

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return MetricsServer(str(bound_host), int(bound_port), stop)
