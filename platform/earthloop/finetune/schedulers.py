"""ASHA per grid cell.

One ASHA over a whole label-efficiency sweep compares trials that differ in their *label budget*
and initialisation: a 1 % trial scores below a 10 % trial at every rung, so a global ASHA stops
the low-budget trials first and the curve's left end is trained for fewer steps than its right
end — a bias in exactly the quantity the sweep measures. Here each (fraction, init, seed) cell
has its own :class:`~ray.tune.schedulers.ASHAScheduler`, so only hyper-parameter samples of the
same cell compete. Delegation keeps Ray's ASHA logic unchanged.
"""

from __future__ import annotations

from typing import Any

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from earthloop.finetune.rows import cell_key

__all__ = ["PerCellASHA"]


class PerCellASHA(FIFOScheduler):
    """An :class:`ASHAScheduler` per grid cell (see the module docstring)."""

    def __init__(self, modes_in_grid: bool = False, **asha_kwargs: Any) -> None:
        super().__init__()
        self.modes_in_grid = modes_in_grid
        self.asha_kwargs = dict(asha_kwargs)
        self._metric: str | None = asha_kwargs.get("metric")
        self._mode: str | None = asha_kwargs.get("mode")
        self._cells: dict[str, ASHAScheduler] = {}
        self._trial_cell: dict[str, str] = {}

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        if (self._metric and metric) or (self._mode and mode):
            return False
        self._metric = metric or self._metric
        self._mode = mode or self._mode
        for sched in self._cells.values():
            sched.set_search_properties(metric, mode, **spec)
        return True

    def _cell_of(self, trial: Any) -> ASHAScheduler:
        key = cell_key(trial.config, self.modes_in_grid)
        if key not in self._cells:
            kw = {**self.asha_kwargs, "metric": self._metric, "mode": self._mode}
            self._cells[key] = ASHAScheduler(**kw)
        self._trial_cell[trial.trial_id] = key
        return self._cells[key]

    def _known(self, trial: Any) -> ASHAScheduler | None:
        key = self._trial_cell.get(trial.trial_id)
        return self._cells.get(key) if key is not None else None

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self._cell_of(trial).on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        sched = self._known(trial) or self._cell_of(trial)
        if trial.trial_id not in sched._trial_info:  # restored trial: re-register it
            sched.on_trial_add(tune_controller, trial)
        return str(sched.on_trial_result(tune_controller, trial, result))

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> None:
        sched = self._known(trial)
        if sched is not None and trial.trial_id in sched._trial_info:
            sched.on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        sched = self._known(trial)
        if sched is not None and trial.trial_id in sched._trial_info:
            sched.on_trial_remove(tune_controller, trial)

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        self.on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        stopped = sum(s._num_stopped for s in self._cells.values())
        return f"Using ASHA per cell: {len(self._cells)} cells, {stopped} trials stopped early"
