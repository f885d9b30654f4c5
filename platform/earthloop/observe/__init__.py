"""earthloop.observe: metrics, progress lines and redacted logging for every job.

Importing this package is cheap: neither Ray nor prometheus-client is imported until used.
"""

from earthloop.observe.logs import RedactingFilter, SecretRedactor, setup_logging
from earthloop.observe.metrics import (
    SPECS,
    IngestMetrics,
    JobMetrics,
    LabelMetrics,
    MetricSpec,
    MetricsServer,
    NoopBackend,
    PrometheusBackend,
    RayBackend,
    StreamMetrics,
    TrainMetrics,
    TuneMetrics,
    exported_name,
    serve_prometheus,
)
from earthloop.observe.progress import Progress, format_duration

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
