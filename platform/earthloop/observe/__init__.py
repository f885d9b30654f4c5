"""earthloop.observe: metrics, progress lines and redacted logging for every job.

Metrics are split by concern: :mod:`.catalogue` (what exists), :mod:`.labels` (label-value rules),
:mod:`.backends` (where values go) and :mod:`.recorders` (what jobs call).

Importing this package is cheap: neither Ray nor prometheus-client is imported until used.
"""

from earthloop.observe.backends import (
    MetricsServer,
    NoopBackend,
    PrometheusBackend,
    RayBackend,
    serve_prometheus,
)
from earthloop.observe.catalogue import SPECS, MetricSpec, exported_name
from earthloop.observe.logs import RedactingFilter, SecretRedactor, setup_logging
from earthloop.observe.progress import Progress, format_duration
from earthloop.observe.recorders import (
    IngestMetrics,
    JobMetrics,
    LabelMetrics,
    StreamMetrics,
    TrainMetrics,
    TuneMetrics,
)

__all__ = [
    "SPECS",
    "IngestMetrics",
    "JobMetrics",
    "LabelMetrics",
    "MetricSpec",
    "MetricsServer",
    "NoopBackend",
    "Progress",
    "PrometheusBackend",
    "RayBackend",
    "RedactingFilter",
    "SecretRedactor",
    "StreamMetrics",
    "TrainMetrics",
    "TuneMetrics",
    "exported_name",
    "format_duration",
    "serve_prometheus",
    "setup_logging",
]
