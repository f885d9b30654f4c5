"""Metric catalogue conventions and helper behaviour, without Ray (Ray export is covered by
tests/integration/test_prometheus_integration.py)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import pytest
from earthloop.observe import backends, catalogue, recorders
from prometheus_client import CollectorRegistry, generate_latest

ROOT = Path(__file__).resolve().parents[2]

# Label keys that would carry unbounded values, and `job`, which Prometheus owns.
FORBIDDEN_LABELS = {
    "job",
    "chip",
    "chip_id",
    "item",
    "item_id",
    "scene",
    "scene_id",
    "path",
    "uri",
    "url",
    "file",
    "trial",
    "trial_id",
    "run_id",
    "task_id",
    "annotation_id",
    "worker_id",
    "node_id",
}


class Recorder:
    """Backend that keeps every call, to assert exactly what the helpers record."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, float, dict[str, str]]] = []

    def inc(self, spec: catalogue.MetricSpec, value: float, labels: Mapping[str, str]) -> None:
        self.calls.append(("inc", spec.name, value, dict(labels)))

    def set(self, spec: catalogue.MetricSpec, value: float, labels: Mapping[str, str]) -> None:
        self.calls.append(("set", spec.name, value, dict(labels)))

    def observe(self, spec: catalogue.MetricSpec, value: float, labels: Mapping[str, str]) -> None:
        self.calls.append(("observe", spec.name, value, dict(labels)))

    def names(self) -> set[str]:
        return {c[1] for c in self.calls}

    def last(self, name: str) -> tuple[str, str, float, dict[str, str]]:
        return [c for c in self.calls if c[1] == name][-1]


def exercise_all(backend: backends.MetricsBackend) -> None:
    """Call every public recording method once (shared with the catalogue-coverage test)."""
    ing = recorders.IngestMetrics(backend=backend)
    ing.start()
    ing.item_processed()
    ing.chips_processed(4)
    ing.chip_rejected("cloud")
    ing.observe_read(0.02)
    with ing.time_read():
        pass
    ing.finish()
    st = recorders.StreamMetrics(backend=backend)
    st.chips_delivered(64)
    st.data_wait(0.25)
    tr = recorders.TrainMetrics(backend=backend, rank=0)
    tr.step(seconds=0.5, samples=32, losses={"total": 1.0, "seco": 0.5})
    tr.embedding_std(0.05)
    tr.knn_accuracy(0.7)
    tr.collapsed(False)
    tr.checkpoint_saved()
    tr.epoch(3)
    tu = recorders.TuneMetrics(backend=backend)
    tu.trials_running(2)
    tu.trial_done("terminated")
    tu.best_metric("val_miou", 0.4)
    lb = recorders.LabelMetrics(backend=backend)
    lb.queue_size(7)
    lb.tasks_pushed(5, method="entropy")
    lb.annotations_pulled(2)
    lb.annotation_rejected("empty")
    lb.labels_written(2)
    lb.labeled_chips(12)


# -- conventions ---------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", list(catalogue.SPECS.values()), ids=lambda s: s.name)
def test_metric_names_follow_prometheus_conventions(spec: catalogue.MetricSpec) -> None:
    assert re.fullmatch(r"earthloop_[a-z]+_[a-z0-9_]+", spec.name)
    assert spec.doc.strip()
    if spec.kind == "counter":
        assert spec.name.endswith("_total")
    else:
        assert not spec.name.endswith("_total"), "only counters end in _total"
    if spec.kind == "histogram":
        assert spec.name.endswith("_seconds"), "histograms here are durations, in seconds"
        assert list(spec.buckets) == sorted(spec.buckets) and spec.buckets[0] > 0
    if any(w in spec.name for w in ("timestamp", "latency", "duration", "seconds", "time")):
        assert spec.name.endswith(("_seconds", "_seconds_total")), "time in base unit seconds"
    if "timestamp" in spec.name:
        assert spec.name.endswith("_timestamp_seconds")
    assert not re.search(r"_(ms|millis|minutes|hours|bytes_kb)\b", spec.name)


@pytest.mark.parametrize("spec", list(catalogue.SPECS.values()), ids=lambda s: s.name)
def test_metric_labels_are_low_cardinality(spec: catalogue.MetricSpec) -> None:
    assert spec.labels[0] == "job_name"
    assert set(spec.labels) <= catalogue.ALLOWED_LABELS
    assert not set(spec.labels) & FORBIDDEN_LABELS
    assert not catalogue.ALLOWED_LABELS & FORBIDDEN_LABELS


def test_required_metric_families_exist() -> None:
    required = {
        "earthloop_ingest_items_total",
        "earthloop_ingest_chips_total",
        "earthloop_ingest_chips_rejected_total",
        "earthloop_ingest_read_seconds",
        "earthloop_stream_chips_total",
        "earthloop_stream_data_wait_ratio",
        "earthloop_train_loss",
        "earthloop_train_samples_per_second",
        "earthloop_train_step_seconds",
        "earthloop_train_steps_total",
        "earthloop_train_embedding_std",
        "earthloop_train_knn_accuracy_ratio",
        "earthloop_train_collapsed",
        "earthloop_train_last_checkpoint_timestamp_seconds",
        "earthloop_tune_trials_running",
        "earthloop_tune_trials_done_total",
        "earthloop_tune_best_metric",
        "earthloop_label_queue_size",
        "earthloop_label_tasks_pushed_total",
        "earthloop_label_annotations_pulled_total",
        "earthloop_label_annotations_rejected_total",
        "earthloop_label_labels_total",
        "earthloop_label_last_label_timestamp_seconds",
        "earthloop_job_last_progress_timestamp_seconds",
    }
    assert required <= set(catalogue.SPECS)
    assert catalogue.SPECS["earthloop_train_loss"].labels == ("job_name", "term")
    assert {
        "cloud",
        "nodata",
        "read_error",
        "missing_asset",
        "crs",
    } <= catalogue.INGEST_REJECT_REASONS


def test_ray_exported_names_have_ray_prefix() -> None:
    assert catalogue.exported_name("earthloop_train_loss") == "ray_earthloop_train_loss"
    assert (
        catalogue.exported_name("earthloop_label_labels_total", "prometheus_client")
        == "earthloop_label_labels_total"
    )


def test_every_metric_is_documented() -> None:
    doc = (ROOT / "docs" / "observability.md").read_text()
    missing = [name for name in catalogue.SPECS if name not in doc]
    assert not missing, f"docs/observability.md lacks {missing}"


# -- helpers -------------------------------------------------------------------------------------


def test_every_catalogue_metric_has_a_helper() -> None:
    rec = Recorder()
    exercise_all(rec)
    assert rec.names() == set(catalogue.SPECS)
    for _, name, _, labels in rec.calls:
        assert tuple(labels) == catalogue.SPECS[name].labels, name


def test_ingest_helper_values_and_bounded_reasons() -> None:
    rec = Recorder()
    clock_values = iter([100.0, 101.0, 102.0, 103.0])
    ing = recorders.IngestMetrics("ingest", backend=rec, clock=lambda: next(clock_values))
    ing.chips_processed(5)
    ing.chip_rejected("nodata", 2)
    ing.chip_rejected("s3://bucket/29RKH/chip_000123.tif")  # must not become a label value
    assert rec.calls[0] == ("inc", "earthloop_ingest_chips_total", 5.0, {"job_name": "ingest"})
    assert rec.calls[1] == (
        "set",
        "earthloop_job_last_progress_timestamp_seconds",
        100.0,
        {"job_name": "ingest"},
    )
    rejected = [c for c in rec.calls if c[1] == "earthloop_ingest_chips_rejected_total"]
    assert [(c[2], c[3]["reason"]) for c in rejected] == [(2.0, "nodata"), (1.0, "other")]


def test_zero_increments_are_skipped() -> None:
    rec = Recorder()
    recorders.IngestMetrics(backend=rec).chips_processed(0)
    assert "earthloop_ingest_chips_total" not in rec.names()


def test_train_gauges_only_on_rank_zero_but_counters_on_all_ranks() -> None:
    rec0, rec1 = Recorder(), Recorder()
    for rank, rec in ((0, rec0), (1, rec1)):
        t = recorders.TrainMetrics("pretrain", rank=rank, backend=rec)
        t.step(seconds=0.25, samples=16, losses={"total": 2.0, "Dense Loss!": 1.0})
        t.embedding_std(0.1)
        t.checkpoint_saved(timestamp=1234.0)
    for rec in (rec0, rec1):
        assert rec.last("earthloop_train_samples_total")[2] == 16.0
        assert rec.last("earthloop_train_step_seconds")[2] == 0.25
        assert rec.last("earthloop_train_steps_total")[2] == 1.0
    assert rec0.last("earthloop_train_samples_per_second")[2] == 64.0
    assert rec0.last("earthloop_train_last_checkpoint_timestamp_seconds")[2] == 1234.0
    terms = {c[3]["term"]: c[2] for c in rec0.calls if c[1] == "earthloop_train_loss"}
    assert terms == {"total": 2.0, "other": 1.0}  # a non-identifier term is bounded
    gauges = {
        "earthloop_train_loss",
        "earthloop_train_embedding_std",
        "earthloop_train_samples_per_second",
        "earthloop_train_last_checkpoint_timestamp_seconds",
    }
    assert not gauges & rec1.names()


def test_loss_keys_of_method_outputs_map_to_terms() -> None:
    rec = Recorder()
    recorders.TrainMetrics(backend=rec).loss({"loss": 3.0, "loss_seco": 1.0, "loss_dense": 2.0})
    terms = {c[3]["term"]: c[2] for c in rec.calls}
    assert terms == {"total": 3.0, "seco": 1.0, "dense": 2.0}


def test_label_helper_moves_last_label_timestamp() -> None:
    rec = Recorder()
    lb = recorders.LabelMetrics(backend=rec, clock=lambda: 500.0)
    lb.labels_written(3)
    assert rec.last("earthloop_label_labels_total")[2] == 3.0
    assert rec.last("earthloop_label_last_label_timestamp_seconds")[2] == 500.0
    lb.tasks_pushed(4, method="entropy")
    assert rec.last("earthloop_label_tasks_pushed_total")[3] == {
        "job_name": "label",
        "method": "entropy",
    }


def test_job_context_manager_marks_running_then_finished() -> None:
    rec = Recorder()
    with recorders.JobMetrics("pretrain", backend=rec, clock=lambda: 42.0):
        assert rec.last("earthloop_job_running")[2] == 1.0
        assert rec.last("earthloop_job_started_timestamp_seconds")[2] == 42.0
    assert rec.last("earthloop_job_running")[2] == 0.0


@pytest.mark.parametrize("bad", ["runs/2024-06-01/pretrain", "Pretrain", "", "x" * 60, "a b"])
def test_job_name_must_be_a_short_kind(bad: str) -> None:
    with pytest.raises(ValueError):
        recorders.JobMetrics(bad)


def test_failing_backend_never_breaks_the_job(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(Recorder):
        def inc(self, spec: catalogue.MetricSpec, value: float, labels: Mapping[str, str]) -> None:
            raise RuntimeError("exporter down")

    ing = recorders.IngestMetrics(backend=Broken())
    with caplog.at_level("WARNING", logger="earthloop.observe"):
        for _ in range(3):
            ing.chips_processed(1)
    warnings = [r for r in caplog.records if "earthloop_ingest_chips_total" in r.getMessage()]
    assert len(warnings) == 1  # logged once, not per call


def test_helpers_are_noops_without_ray_and_do_not_import_it() -> None:
    code = textwrap.dedent(
        """
        import sys
        from earthloop.observe import backends, recorders
        assert isinstance(backends.default_backend(), backends._AutoBackend)
        t = recorders.TrainMetrics(rank=0)
        t.start()
        t.step(seconds=0.1, samples=8, losses={"total": 1.0})
        t.collapsed(True)
        recorders.IngestMetrics().chip_rejected("cloud")
        recorders.LabelMetrics().labels_written(1)
        recorders.TuneMetrics().best_metric("val_miou", 0.3)
        assert "ray" not in sys.modules, "no-op path imported ray"
        assert "prometheus_client" not in sys.modules
        print("ok")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_auto_backend_is_noop_when_ray_imported_but_not_initialised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class FakeRay:
        @staticmethod
        def is_initialized() -> bool:
            return False

    monkeypatch.setitem(sys.modules, "ray", FakeRay)
    auto = backends._AutoBackend()
    assert isinstance(auto._pick(), backends.NoopBackend)
    monkeypatch.setattr(FakeRay, "is_initialized", staticmethod(lambda: True))
    assert isinstance(auto._pick(), backends.RayBackend)


# -- prometheus-client variant -------------------------------------------------------------------


def test_prometheus_backend_exports_catalogue_names() -> None:
    registry = CollectorRegistry()
    be = backends.PrometheusBackend(registry)
    exercise_all(be)
    text = generate_latest(registry).decode()
    assert 'earthloop_ingest_chips_total{job_name="ingest"} 4.0' in text
    assert 'earthloop_ingest_chips_rejected_total{job_name="ingest",reason="cloud"} 1.0' in text
    assert 'earthloop_train_loss{job_name="pretrain",term="seco"} 0.5' in text
    assert 'earthloop_train_step_seconds_bucket{job_name="pretrain",le="0.5"} 1.0' in text
    assert "# TYPE earthloop_label_labels_total counter" in text
    assert "ray_earthloop" not in text
    for spec in catalogue.SPECS.values():
        assert f"# HELP {spec.name} {spec.doc}" in text, spec.name


def test_serve_prometheus_binds_loopback_and_serves() -> None:
    registry = CollectorRegistry()
    be = backends.PrometheusBackend(registry)
    recorders.LabelMetrics("label-webhook", backend=be).annotations_pulled(3)
    server = backends.serve_prometheus(be, port=0)
    try:
        assert server.host == "127.0.0.1" and server.port > 0
        url = f"http://127.0.0.1:{server.port}/metrics"
        body = urllib.request.urlopen(url, timeout=5).read()
        assert b'earthloop_label_annotations_pulled_total{job_name="label-webhook"} 3.0' in body
    finally:
        server.stop()
