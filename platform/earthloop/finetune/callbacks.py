"""Tune callbacks of the sweep driver: Delta rows as trials end, and a periodic progress line.

Module-level classes (not closures) because Tune pickles the run configuration, callbacks
included, into the experiment folder, and ``Tuner.restore`` unpickles them in a new driver.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

from ray.tune import Callback

from earthloop.finetune.rows import RowContext, checkpoint_uri, trial_row, write_rows
from earthloop.observe.progress import Progress

log = logging.getLogger("earthloop.finetune")

__all__ = ["SweepProgress", "TrialRecorder"]


def _trial_error(trial: Any) -> str:
    path = getattr(trial, "error_file", None)
    if path and os.path.exists(path):
        return Path(path).read_text()[-2000:]
    return "trial failed (no error file)"


class TrialRecorder(Callback):
    """Upserts a trial's Delta row as soon as it ends, so an interrupted sweep keeps them."""

    def __init__(self, rc: RowContext) -> None:
        self.rc = rc

    def _write(self, trial: Any, error: str | None) -> None:
        ckpt = checkpoint_uri(trial.checkpoint)
        row = trial_row(
            self.rc, trial.trial_id, trial.config, dict(trial.last_result or {}), ckpt, error
        )
        try:
            write_rows(self.rc.table_uri, [row])
        except Exception as exc:  # recording must never kill the sweep
            log.warning(
                "could not record trial %s in %s: %s", trial.trial_id, self.rc.table_uri, exc
            )

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._write(trial, None)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._write(trial, _trial_error(trial))


def _best(trials: list[Any]) -> float:
    vals = []
    for t in trials:
        v = (t.last_result or {}).get("best_val_metric")
        if isinstance(v, int | float) and not math.isnan(float(v)):
            vals.append(float(v))
    return max(vals) if vals else float("nan")


class SweepProgress(Callback):
    """A log line every ``every_s``: trials done/total, trials/s, ETA, running, best val score.

    Tune's own status table (``verbose``) shows per-trial detail; this line is the one that
    survives in a job log and answers "is it moving, when will it end".
    """

    def __init__(self, total: int, every_s: float, metric: str) -> None:
        self.total, self.every_s, self.metric = total, every_s, metric
        self.progress: Progress | None = None
        self.metrics: Any = None
        self._seeded = False
        self._base = 0

    def setup(
        self,
        stop: Any = None,
        num_samples: int | None = None,
        total_num_samples: int | None = None,
        **info: Any,
    ) -> None:
        self.progress = Progress(
            "finetune sweep", self.total, unit="trials", every_s=self.every_s, logger=log
        )
        self._seeded = False
        try:
            from earthloop.observe.recorders import TuneMetrics

            self.metrics = TuneMetrics("finetune")
        except Exception:
            self.metrics = None

    def _metric_call(self, name: str, *args: Any) -> None:
        if self.metrics is None:
            return
        try:
            getattr(self.metrics, name)(*args)
        except Exception:  # metrics are optional; never break the sweep for them
            self.metrics = None

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        if self.progress is None:
            self.setup()
        assert self.progress is not None
        done = sum(1 for t in trials if t.status in ("TERMINATED", "ERROR"))
        running = sum(1 for t in trials if t.status == "RUNNING")
        if not self._seeded:
            # a restored sweep: what finished before does not count towards this run's rate
            self._base = done
            self.progress.total = max(0, self.total - done)
            self._seeded = True
        best = _best(trials)
        self.progress.update(
            max(0, done - self._base - self.progress.done),
            running=running,
            **{f"best_val_{self.metric}": best},
        )
        self._metric_call("trials_running", running)
        if not math.isnan(best):
            self._metric_call("best_metric", self.metric, best)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._metric_call("trial_done", "terminated")

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._metric_call("trial_done", "error")

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        if self.progress is not None:
            self.progress.close()
