"""The sweep's Tune callbacks, driven with minimal fake trials (no Tune run, no cluster).

TrialRecorder's row building and Delta write are replaced by fakes: what is tested is when it
writes, what it passes on (config, last result, checkpoint, error text) and that a failing
write never reaches Tune.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from earthloop.finetune import callbacks
from earthloop.finetune.callbacks import SweepProgress, TrialRecorder
from earthloop.observe.catalogue import MetricSpec
from earthloop.observe.recorders import TuneMetrics


@dataclass
class FakeTrial:
    trial_id: str
    status: str = "PENDING"
    config: dict[str, Any] = field(default_factory=dict)
    last_result: dict[str, Any] | None = None
    checkpoint: Any = None
    error_file: str | None = None


class Recorder:
    """Metrics backend keeping (operation, metric, value, labels) of every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, float, dict[str, str]]] = []

    def inc(self, spec: MetricSpec, value: float, labels: Mapping[str, str]) -> None:
        self.calls.append(("inc", spec.name, value, dict(labels)))

    def set(self, spec: MetricSpec, value: float, labels: Mapping[str, str]) -> None:
        self.calls.append(("set", spec.name, value, dict(labels)))

    def observe(self, spec: MetricSpec, value: float, labels: Mapping[str, str]) -> None:
        self.calls.append(("observe", spec.name, value, dict(labels)))

    def named(self, name: str) -> list[tuple[float, dict[str, str]]]:
        return [(v, lab) for _, n, v, lab in self.calls if n == name]


# -- TrialRecorder --------------------------------------------------------------------------------


@pytest.fixture
def written(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[dict[str, Any]]]]:
    """Replace the row builder and the Delta write; return what would have been written."""
    out: list[tuple[str, list[dict[str, Any]]]] = []

    def fake_row(rc: Any, trial_id: str, config: Any, result: Any, ckpt: Any, error: Any) -> dict:
        return {
            "rc": rc,
            "trial_id": trial_id,
            "config": config,
            "result": result,
            "checkpoint": ckpt,
            "error": error,
        }

    monkeypatch.setattr(callbacks, "trial_row", fake_row)
    monkeypatch.setattr(callbacks, "write_rows", lambda uri, rows: out.append((uri, rows)))
    return out


def test_a_completed_trial_is_written_at_once_with_its_checkpoint(
    written: list[tuple[str, list[dict[str, Any]]]],
) -> None:
    rc = SimpleNamespace(table_uri="file:///tmp/trials")
    trial = FakeTrial(
        "t1",
        config={"fraction": 0.1},
        last_result={"best_val_miou": 0.4},
        checkpoint=SimpleNamespace(path="/ckpt/t1"),
    )
    TrialRecorder(rc).on_trial_complete(3, [trial], trial)
    assert len(written) == 1
    uri, rows = written[0]
    assert uri == "file:///tmp/trials" and len(rows) == 1
    row = rows[0]
    assert row["rc"] is rc and row["trial_id"] == "t1" and row["config"] == {"fraction": 0.1}
    assert row["result"] == {"best_val_miou": 0.4} and row["checkpoint"] == "/ckpt/t1"
    assert row["error"] is None


def test_a_failed_trial_carries_the_tail_of_its_error_file(
    tmp_path: Path, written: list[tuple[str, list[dict[str, Any]]]]
) -> None:
    error_file = tmp_path / "error.txt"
    error_file.write_text("x" * 5000 + "ValueError: bad lr")
    trial = FakeTrial("t2", error_file=str(error_file))
    recorder = TrialRecorder(SimpleNamespace(table_uri="u"))
    recorder.on_trial_error(1, [trial], trial)
    row = written[0][1][0]
    assert row["error"].endswith("ValueError: bad lr") and len(row["error"]) == 2000
    assert row["result"] == {} and row["checkpoint"] is None  # no result, no checkpoint yet

    lost = FakeTrial("t3", error_file=str(tmp_path / "gone.txt"))
    recorder.on_trial_error(1, [lost], lost)
    assert written[1][1][0]["error"] == "trial failed (no error file)"


def test_a_failing_write_is_logged_and_never_raised(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(callbacks, "trial_row", lambda *args: {})

    def broken(uri: str, rows: list[dict[str, Any]]) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(callbacks, "write_rows", broken)
    trial = FakeTrial("t4")
    with caplog.at_level(logging.WARNING, logger="earthloop.finetune"):
        TrialRecorder(SimpleNamespace(table_uri="u")).on_trial_complete(1, [trial], trial)
    assert any("t4" in r.getMessage() and "disk full" in r.getMessage() for r in caplog.records)


# -- SweepProgress --------------------------------------------------------------------------------


def _progress(total: int) -> tuple[SweepProgress, Recorder]:
    """A set-up SweepProgress logging on every step, its metrics going to a Recorder."""
    cb = SweepProgress(total=total, every_s=1e-9, metric="miou")
    cb.setup()
    assert isinstance(cb.metrics, TuneMetrics)  # the real recorder by default
    rec = Recorder()
    cb.metrics = TuneMetrics("finetune", backend=rec)
    return cb, rec


def _trials(*specs: tuple[str, float | None]) -> list[FakeTrial]:
    return [
        FakeTrial(f"t{i}", status, last_result=None if v is None else {"best_val_metric": v})
        for i, (status, v) in enumerate(specs)
    ]


def test_progress_counts_finished_trials_and_reports_the_best(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cb, rec = _progress(total=4)
    with caplog.at_level(logging.INFO, logger="earthloop.finetune"):
        cb.on_step_end(1, _trials(("RUNNING", None), ("RUNNING", None), ("PENDING", None)))
        cb.on_step_end(2, _trials(("TERMINATED", 0.3), ("ERROR", None), ("RUNNING", 0.5)))
        cb.on_experiment_end([])
    assert cb.progress is not None and cb.progress.done == 2
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("finetune sweep: 0/4") and "running=2" in lines[0]
    assert "best_val_miou=nan" in lines[0]
    assert lines[1].startswith("finetune sweep: 2/4 50.0%") and "best_val_miou=0.5" in lines[1]
    assert lines[-1].startswith("finetune sweep: 2/4 50.0% done")
    assert [v for v, _ in rec.named("earthloop_tune_trials_running")] == [2.0, 1.0]
    best = rec.named("earthloop_tune_best_metric")
    assert best == [(0.5, {"job_name": "finetune", "metric": "miou"})]  # NaN is not recorded


def test_a_restored_sweep_counts_only_this_runs_trials() -> None:
    cb, _ = _progress(total=5)
    cb.on_step_end(1, _trials(("TERMINATED", 0.2), ("TERMINATED", 0.4), ("RUNNING", None)))
    assert cb.progress is not None
    assert cb.progress.total == 3 and cb.progress.done == 0  # the 2 earlier trials are not rate
    cb.on_step_end(2, _trials(("TERMINATED", 0.2), ("TERMINATED", 0.4), ("TERMINATED", 0.1)))
    assert cb.progress.done == 1


def test_best_ignores_nan_and_missing_results() -> None:
    cb, rec = _progress(total=3)
    trials = _trials(("TERMINATED", math.nan), ("TERMINATED", None), ("TERMINATED", 0.25))
    trials[1].last_result = {"best_val_metric": "n/a"}
    cb.on_step_end(1, trials)
    assert cb.progress is not None and cb.progress.fields["best_val_miou"] == 0.25
    assert [v for v, _ in rec.named("earthloop_tune_best_metric")] == [0.25]


def test_trial_ends_are_counted_by_status() -> None:
    cb, rec = _progress(total=2)
    t = FakeTrial("t")
    cb.on_trial_complete(1, [t], t)
    cb.on_trial_error(1, [t], t)
    done = rec.named("earthloop_tune_trials_done_total")
    assert [lab["status"] for _, lab in done] == ["terminated", "error"]


def test_broken_metrics_are_dropped_without_breaking_the_sweep() -> None:
    cb = SweepProgress(total=2, every_s=60.0, metric="miou")
    cb.setup()

    class Broken:
        def __getattr__(self, name: str) -> Any:
            def fail(*args: Any) -> None:
                raise RuntimeError("exporter down")

            return fail

    cb.metrics = Broken()
    cb.on_step_end(1, _trials(("RUNNING", 0.1)))
    assert cb.metrics is None
    cb.on_trial_complete(1, [], FakeTrial("t"))  # and later calls are no-ops


def test_step_before_setup_sets_itself_up() -> None:
    cb = SweepProgress(total=1, every_s=60.0, metric="miou")
    cb.on_step_end(1, _trials(("RUNNING", None)))
    cb.on_step_end(2, _trials(("TERMINATED", 0.9)))
    assert cb.progress is not None and cb.progress.done == 1 and cb.progress.total == 1
