"""Label-efficiency sweeps on Ray Tune: the Tuner's wiring and the run, rows and report after it.

Order of work, so that mistakes cost seconds and not a cluster allocation:

1. :func:`~earthloop.finetune.plan.plan_sweep` (driver, no Ray) checks and prepares everything.
2. :func:`run_sweep` starts (or, when the sweep's folder exists, ``Tuner.restore``) the Tuner.
   Each trial (:func:`~earthloop.finetune.trial.tune_trial`) reads its own labelled subset into
   memory and trains; a callback upserts one Delta row per finished trial
   (:mod:`~earthloop.finetune.rows`), so a killed sweep keeps what it finished.
3. The report (markdown + PNGs) is written from the Delta rows of the sweep.

Per-cell selection: within a (fraction, init, seed) cell the trial with the best *validation*
score is the cell's result and its *test* score is what the report plots. The search draws the
same hyper-parameter candidates for every cell (``constant_grid_search``), so an initialisation
never wins by having been offered a luckier learning rate.

Ray is imported inside the functions that need it: :func:`plain_loop` runs the same trials
without Ray, and importing this module must not cost a Ray import.
"""

from __future__ import annotations

import json
import logging
import posixpath
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from earthloop.config import EarthloopConfig, FinetuneConfig
from earthloop.finetune.export import export_selected
from earthloop.finetune.plan import FINGERPRINT_FILE, SweepPlan, plan_summary, plan_sweep
from earthloop.finetune.plan import trial_configs as grid_configs
from earthloop.finetune.report import write_report
from earthloop.finetune.rows import result_rows, write_rows
from earthloop.finetune.trial import TrialContext, execute_trial, trial_dirname, tune_trial
from earthloop.observe.progress import Progress
from earthloop.store.fs import ray_storage, write_bytes

log = logging.getLogger("earthloop.finetune")

__all__ = ["SweepResult", "make_trainable", "param_space", "plain_loop", "run_sweep"]


# --------------------------------------------------------------------------------------------
# Tune setup
# --------------------------------------------------------------------------------------------


def _dim(value: float | tuple[float, float]) -> Any:
    from ray import tune  # heavy: only a Tune run needs it

    if isinstance(value, tuple):
        lo, hi = value
        return lo if lo == hi else tune.loguniform(lo, hi)
    return value


def param_space(fc: FinetuneConfig, init_names: Sequence[str]) -> dict[str, Any]:
    """The Tune search space: the grid (fraction x init x seed [x mode]) and sampled values."""
    from ray import tune  # heavy: only a Tune run needs it

    s = fc.search
    modes: Any
    if s.modes_in_grid and len(s.modes) > 1:
        modes = tune.grid_search(list(s.modes))
    else:
        modes = tune.choice(list(s.modes)) if len(s.modes) > 1 else s.modes[0]
    return {
        "fraction": tune.grid_search(list(fc.fractions)),
        "init": tune.grid_search(list(init_names)),
        "seed": tune.grid_search(list(fc.seeds)),
        "mode": modes,
        "lr": _dim(s.lr),
        "weight_decay": _dim(s.weight_decay),
        "encoder_lr_mult": _dim(s.encoder_lr_mult),
    }


def _scheduler(fc: FinetuneConfig) -> Any:
    # heavy: only a Tune run needs Ray's schedulers (and PerCellASHA, which imports them)
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from earthloop.finetune.schedulers import PerCellASHA

    if not fc.asha.enabled:
        return FIFOScheduler()
    kwargs: dict[str, Any] = {
        "time_attr": "training_iteration",
        "max_t": fc.iterations,
        "grace_period": min(fc.asha.grace_period, fc.iterations),
        "reduction_factor": fc.asha.reduction_factor,
    }
    if fc.asha.scope == "global":
        return ASHAScheduler(**kwargs)
    return PerCellASHA(fc.search.modes_in_grid, **kwargs)


def _trial_name(trial: Any) -> str:
    return trial_dirname(trial.config, trial.trial_id)


def make_trainable(plan: SweepPlan) -> Any:
    """:func:`tune_trial` with the plan's trial context and per-trial resources attached."""
    from ray import tune  # heavy: only a Tune run needs it

    res: dict[str, float] = {"cpu": plan.fc.resources.cpu}
    if plan.fc.resources.gpu:
        res["gpu"] = plan.fc.resources.gpu
    return tune.with_resources(tune.with_parameters(tune_trial, context=plan.context()), res)


def _new_tuner(plan: SweepPlan, trainable: Any, extra_callbacks: Sequence[Any]) -> Any:
    """A fresh Tuner for the plan; the fingerprint is written first, so a restore can check it."""
    # heavy: Ray Tune, and the callbacks module that subclasses its Callback
    from ray.tune import CheckpointConfig, FailureConfig, RunConfig, TuneConfig, Tuner
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from earthloop.finetune.callbacks import SweepProgress, TrialRecorder

    fc = plan.fc
    write_bytes(
        posixpath.join(plan.experiment_path, FINGERPRINT_FILE),
        json.dumps(plan.fingerprint, default=str, indent=1).encode(),
    )
    # s3:// storage: Tune gets our filesystem (endpoint and http consent as for Delta, no keys
    # pickled into tuner.pkl); a local path stays Tune's default
    storage_path, storage_fs = ray_storage(plan.storage_path)
    return Tuner(
        trainable,
        param_space=param_space(fc, list(plan.inits)),
        tune_config=TuneConfig(
            metric="val_metric",
            mode="max",
            num_samples=fc.search.num_samples,
            scheduler=_scheduler(fc),
            # Tune ignores max_concurrent_trials for an explicit variant generator: give
            # the limit to the generator itself
            search_alg=BasicVariantGenerator(
                constant_grid_search=True,
                random_state=fc.seeds[0],
                max_concurrent=fc.resources.max_concurrent_trials or 0,
            ),
            reuse_actors=True,  # one worker start (torch + ray imports) per slot, not per trial
            trial_name_creator=_trial_name,
            trial_dirname_creator=_trial_name,
        ),
        run_config=RunConfig(
            name=plan.name,
            storage_path=storage_path,
            storage_filesystem=storage_fs,
            callbacks=[
                TrialRecorder(plan.row_context()),
                SweepProgress(plan.n_trials, fc.log_every_s, fc.primary_metric),
                *extra_callbacks,
            ],
            failure_config=FailureConfig(max_failures=fc.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=fc.keep_checkpoints),
            verbose=fc.verbose,
        ),
    )


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------


@dataclass
class SweepResult:
    name: str
    experiment_path: str
    restored: bool
    trials: int
    errors: int
    table_uri: str
    report: str
    plots: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    fit_s: float = 0.0  # Tuner.fit wall time
    report_s: float = 0.0  # Delta rows + markdown + PNGs
    task_models: list[str] = field(default_factory=list)  # model versions exported


def run_sweep(
    cfg: EarthloopConfig,
    *,
    plan: SweepPlan | None = None,
    extra_callbacks: Sequence[Any] = (),
) -> SweepResult:
    """Run (or resume) the sweep on the connected Ray cluster, then record and report it."""
    from ray.tune import Tuner  # heavy: only a Tune run needs it

    plan = plan or plan_sweep(cfg)
    fc = plan.fc
    trainable = make_trainable(plan)
    path = plan.experiment_path
    storage_path, storage_fs = ray_storage(plan.storage_path)
    tune_path = posixpath.join(storage_path, plan.name)  # inside storage_fs when on S3
    restored = Tuner.can_restore(tune_path, storage_filesystem=storage_fs)
    log.info(
        "finetune sweep %s: %d trials (%d cells x %d samples) of %s on %s; pool %s; %s",
        plan.name,
        plan.n_trials,
        plan.n_cells,
        fc.search.num_samples,
        fc.task,
        plan.pool.labels_source,
        plan.pool.summary(),
        "restoring unfinished trials" if restored else "starting",
    )
    if restored:
        tuner = Tuner.restore(
            tune_path, trainable=trainable, resume_errored=True, storage_filesystem=storage_fs
        )
    else:
        tuner = _new_tuner(plan, trainable, extra_callbacks)
    t_fit = time.perf_counter()
    grid = tuner.fit()
    t_rows = time.perf_counter()
    rows = result_rows(plan.row_context(), (grid[k] for k in range(len(grid))))
    write_rows(plan.table_uri, rows)
    report = write_report(rows, plan.report_dir, plan_summary(plan))
    exported = export_selected(plan, rows)  # each cell's selected trial as a task model
    t_end = time.perf_counter()
    log.info("sweep %s: Tune %.1fs, rows + report %.1fs", plan.name, t_rows - t_fit, t_end - t_rows)
    return SweepResult(
        plan.name,
        path,
        restored,
        len(rows),
        sum(1 for r in rows if r["status"] == "error"),
        plan.table_uri,
        report.markdown,
        report.plots,
        rows,
        fit_s=t_rows - t_fit,
        report_s=t_end - t_rows,
        task_models=[m.model_version for m in exported],
    )


def plain_loop(
    plan: SweepPlan,
    configs: Sequence[dict[str, Any]] | None = None,
    *,
    every_s: float = 30.0,
    workers: int = 1,
    deadline_s: float | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run trials in this process, or in ``workers`` spawned processes (no Ray): benchmarks
    and evidence.

    Results keep the order of ``configs``. With ``deadline_s`` a trial starts only if the
    longest trial so far would still end before the deadline; trials not run are left out of
    the result (and counted in the log), so a time-boxed run (a lent GPU) returns what finished
    instead of being killed with nothing. Small trials leave a GPU mostly idle, which is why
    several processes share one. ``on_result`` is called in this process with each result as
    it finishes (e.g. to append it to a file a re-run resumes from).
    """
    ctx = plan.context()
    ctx.attempts_dir = None
    todo = list(configs) if configs is not None else grid_configs(plan)
    t_start = time.perf_counter()
    longest = [0.0]

    def late() -> bool:
        if deadline_s is None:
            return False
        return time.perf_counter() - t_start + longest[0] > deadline_s

    out: list[dict[str, Any] | None] = [None] * len(todo)
    with Progress(
        "finetune plain loop", len(todo), unit="trials", every_s=every_s, logger=log
    ) as progress:
        if workers <= 1:
            for n, c in enumerate(todo):
                if late():
                    break
                res = out[n] = _timed_trial(c, ctx)
                if on_result is not None:
                    on_result(res)
                longest[0] = max(longest[0], res["seconds"])
                progress.update(1, **{f"last_test_{ctx.primary}": _primary(res, ctx)})
        else:
            import multiprocessing as mp
            from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

            with ProcessPoolExecutor(
                workers,
                mp_context=mp.get_context("spawn"),  # CUDA cannot be forked
                initializer=_init_worker,
                initargs=(ctx,),
            ) as pool:
                pending: dict[Future[dict[str, Any]], int] = {}
                nxt = 0
                while nxt < len(todo) or pending:
                    # one trial per worker, none queued: a submitted trial starts at once, so
                    # the deadline check above is made when it really starts
                    while nxt < len(todo) and len(pending) < workers and not late():
                        pending[pool.submit(_worker_trial, todo[nxt])] = nxt
                        nxt += 1
                    if not pending:
                        break
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for f in done:
                        n = pending.pop(f)
                        res = out[n] = f.result()
                        if on_result is not None:
                            on_result(res)
                        longest[0] = max(longest[0], res["seconds"])
                        progress.update(1, **{f"last_test_{ctx.primary}": _primary(res, ctx)})
                    if late():
                        nxt = len(todo)
    ran = [r for r in out if r is not None]
    if len(ran) < len(todo):
        log.warning(
            "deadline of %.0f s: %d of %d trials ran, %d were not started",
            deadline_s or 0.0,
            len(ran),
            len(todo),
            len(todo) - len(ran),
        )
    return ran


def _timed_trial(c: dict[str, Any], ctx: TrialContext) -> dict[str, Any]:
    t0 = time.perf_counter()
    last = execute_trial(c, ctx)
    return {"config": c, "metrics": last, "seconds": time.perf_counter() - t0}


def _primary(res: dict[str, Any] | None, ctx: TrialContext) -> Any:
    return (res or {}).get("metrics", {}).get(f"test_{ctx.primary}")


_WORKER_CTX: list[TrialContext] = []


def _init_worker(ctx: TrialContext) -> None:
    """A worker process receives the context (pool, inits) once, not with every trial."""
    _WORKER_CTX[:] = [ctx]


def _worker_trial(c: dict[str, Any]) -> dict[str, Any]:
    return _timed_trial(c, _WORKER_CTX[0])
