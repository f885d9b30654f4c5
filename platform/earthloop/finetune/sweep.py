"""Label-efficiency sweeps on Ray Tune: grid over label fraction x initialisation x seed, a small
hyper-parameter search per grid cell with ASHA early stopping, results in Delta, a report.

Order of work, so that mistakes cost seconds and not a cluster allocation:

1. :func:`plan_sweep` (driver, no Ray): validate the section, read the label pool, check every
   initialisation against bands/architecture, build every label subset and check no class is
   lost. Any problem raises here, naming the fraction/class/init/file.
2. :func:`run_sweep`: start (or, when the sweep's folder exists, ``Tuner.restore``) the Tuner.
   Each trial reads its own labelled subset into memory (see :mod:`earthloop.finetune.data`) and
   runs :func:`earthloop.finetune.train.fit`; a callback upserts one Delta row per finished
   trial, so a killed sweep keeps what it finished.
3. The report (markdown + PNGs) is written from the Delta rows of the sweep.

Per-cell selection: within a (fraction, init, seed) cell the trial with the best *validation*
score is the cell's result and its *test* score is what the report plots. The search draws the
same hyper-parameter candidates for every cell (``constant_grid_search``), so an initialisation
never wins by having been offered a luckier learning rate.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import posixpath
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch

from earthloop.checkpoints import (
    STATE_FILE,
    Candidate,
    CheckpointError,
    filesystem_for,
    list_candidates,
    load_newest,
    merge_candidates,
    save_checkpoint,
    with_siblings,
)
from earthloop.config import ConfigError, EarthloopConfig, resolve_path
from earthloop.finetune.config import FinetuneConfig, finetune_config
from earthloop.finetune.data import Pool, build_pool, materialise, train_statistics
from earthloop.finetune.model import (
    FinetuneModel,
    IncompatibleCheckpointError,
    ResolvedInit,
    build_encoder,
    resolve_init,
    set_threads,
)
from earthloop.finetune.subsets import EmptyClassError
from earthloop.finetune.train import EvalSpec, TrainParams, fit

log = logging.getLogger("earthloop.finetune")

__all__ = [
    "SweepPlan",
    "SweepResult",
    "TrialContext",
    "execute_trial",
    "plan_sweep",
    "run_sweep",
    "trial_configs",
]

FINGERPRINT_FILE = "earthloop_sweep.json"


# --------------------------------------------------------------------------------------------
# Planning (driver, no Ray)
# --------------------------------------------------------------------------------------------


@dataclass
class LabelSet:
    fraction: float
    seed: int
    indices: list[int]
    ids: list[str]

    @property
    def set_id(self) -> str:
        return hashlib.sha1("\n".join(sorted(self.ids)).encode()).hexdigest()[:16]


@dataclass
class TrialContext:
    """What every trial needs, shipped once through the object store (``tune.with_parameters``)."""

    pool: Pool
    inits: dict[str, ResolvedInit]
    train_stats: tuple[list[float], list[float]]
    task: str
    primary: str
    max_steps: int
    eval_every: int
    batch_size: int
    augment: bool
    boundary_px: int
    checkpoint_every: int
    cpus: float
    attempts_dir: str | None = None
    experiment_path: str | None = None  # where trial directories (and their checkpoints) live


@dataclass
class SweepPlan:
    cfg: EarthloopConfig
    fc: FinetuneConfig
    name: str
    storage_path: str
    bands: list[str]
    pool: Pool
    inits: dict[str, ResolvedInit]
    train_stats: tuple[list[float], list[float]]
    label_sets: dict[tuple[float, int], LabelSet]
    fingerprint: dict[str, Any]
    report_dir: str
    table_uri: str

    @property
    def experiment_path(self) -> str:
        return os.path.join(self.storage_path, self.name)

    @property
    def n_cells(self) -> int:
        modes = len(self.fc.search.modes) if self.fc.search.modes_in_grid else 1
        return len(self.fc.fractions) * len(self.inits) * len(self.fc.seeds) * modes

    @property
    def n_trials(self) -> int:
        return self.n_cells * self.fc.search.num_samples

    def context(self) -> TrialContext:
        fc = self.fc
        return TrialContext(
            pool=self.pool,
            inits=self.inits,
            train_stats=self.train_stats,
            task=fc.task,
            primary=fc.primary_metric,
            max_steps=fc.max_steps,
            eval_every=fc.eval_every,
            batch_size=fc.batch_size,
            augment=fc.augment,
            boundary_px=fc.boundary_px,
            checkpoint_every=fc.checkpoint_every,
            cpus=fc.resources.cpu,
            attempts_dir=os.path.join(self.experiment_path, "attempts"),
            experiment_path=self.experiment_path,
        )


def _bands(cfg: EarthloopConfig, fc: FinetuneConfig) -> list[str]:
    from earthloop.s2.bands import resolve_bands

    if fc.source == "bigearthnet":
        from earthloop.finetune.bigearthnet import BANDS

        names = fc.bands or list(BANDS)
    else:
        names = fc.bands or cfg.ingest.bands
    try:
        return [b.name for b in resolve_bands(list(names))]
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"finetune.bands: {exc.args[0]}") from None


def _stored_fingerprint(path: str) -> dict[str, Any] | None:
    f = Path(path) / FINGERPRINT_FILE
    return json.loads(f.read_text()) if f.exists() else None


def _fingerprint(
    fc: FinetuneConfig, bands: list[str], pool: Pool, inits: dict[str, ResolvedInit]
) -> dict[str, Any]:
    """What defines the sweep's trials: a restore under a changed definition would mix runs."""
    # chips_version is recorded (resolved) under "chips"; the rest only changes logging/placement
    shaping = fc.model_dump(
        exclude={
            "name",
            "log_every_s",
            "verbose",
            "resources",
            "storage_path",
            "max_failures",
            "chips_version",
            "keep_checkpoints",
        }
    )
    return {
        "finetune": shaping,
        "bands": bands,
        "chips": pool.chips.as_dict() if pool.chips else None,
        "labels": pool.labels_source,
        "pool": pool.summary(),
        "inits": {k: [v.kind, v.path] for k, v in inits.items()},
    }


def plan_sweep(cfg: EarthloopConfig) -> SweepPlan:
    """Validate everything and prepare the label pool and subsets; raises before any training.

    Raises :class:`~earthloop.config.ConfigError` for configuration and data problems,
    :class:`EmptyClassError` when a fraction loses a class, and
    :class:`IncompatibleCheckpointError` for an initialisation that does not fit.
    """
    from earthloop.models.backbones import ARCHITECTURES
    from earthloop.store.delta import table_exists

    fc = finetune_config(cfg)
    if fc.backbone not in ARCHITECTURES:
        raise ConfigError(
            f"finetune.backbone: unknown {fc.backbone!r}; available {sorted(ARCHITECTURES)}"
        )
    name = fc.name or f"{cfg.name}-finetune"
    storage = resolve_path(fc.storage_path) if fc.storage_path else cfg.path("ray_results")
    bands = _bands(cfg, fc)
    stored = _stored_fingerprint(os.path.join(storage, name))
    if stored and stored.get("chips") and fc.chips_version is None:
        # a restored sweep keeps reading the index version it started on
        fc = fc.model_copy(update={"chips_version": int(stored["chips"]["version"])})
    inits = {spec.name: resolve_init(spec, fc.backbone, bands, cfg) for spec in fc.inits}
    if fc.source == "chips" and not table_exists(cfg.table_uri("chips")):
        raise ConfigError(
            f"no chip table at {cfg.table_uri('chips')}: run `earthloop ingest` first"
        )
    try:
        pool = build_pool(cfg, fc, bands)
    except (FileNotFoundError, KeyError) as exc:
        raise ConfigError(f"finetune data: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"finetune data: {exc}") from None
    label_sets: dict[tuple[float, int], LabelSet] = {}
    for seed in fc.seeds:
        for f in fc.fractions:
            if fc.allow_missing_classes:
                idx = pool.train_subset(f, seed)
            else:
                idx = pool.check_subset(
                    f, seed, fc.min_class_pixels if fc.task == "segmentation" else 1
                )
            label_sets[(f, seed)] = LabelSet(f, seed, idx, [pool.samples[i].id for i in idx])
    missing_eval = _eval_only_classes(pool)
    if missing_eval:
        log.warning(
            "classes in val/test but not in the train split (no init can learn them): %s",
            missing_eval,
        )
    needs_stats = any(i.mean is None for i in inits.values())
    stats = train_statistics(pool) if needs_stats else ([], [])
    fp = _fingerprint(fc, bands, pool, inits)
    if stored is not None and stored != json.loads(json.dumps(fp, default=str)):
        changed = sorted(
            k
            for k in fp
            if json.dumps(fp[k], default=str, sort_keys=True)
            != json.dumps(stored.get(k), default=str, sort_keys=True)
        )
        raise ConfigError(
            f"sweep {name!r} already exists at {os.path.join(storage, name)} with a different "
            f"definition (changed: {changed}); choose another finetune.name to start a new "
            "sweep, or delete that folder"
        )
    return SweepPlan(
        cfg,
        fc,
        name,
        storage,
        bands,
        pool,
        inits,
        stats,
        label_sets,
        fp,
        cfg.path("reports", name),
        cfg.table_uri("finetune_trials"),
    )


def _eval_only_classes(pool: Pool) -> list[str]:
    train = pool.class_counts(pool.indices("train"))
    ev = pool.class_counts(pool.indices("val") + pool.indices("test"))
    return [pool.class_names[c] for c in pool.class_ids if ev.get(c, 0) > 0 and not train.get(c)]


# --------------------------------------------------------------------------------------------
# One trial (worker, or a plain loop)
# --------------------------------------------------------------------------------------------


def trial_params(config: dict[str, Any], ctx: TrialContext) -> TrainParams:
    return TrainParams(
        lr=float(config["lr"]),
        weight_decay=float(config["weight_decay"]),
        encoder_lr_mult=float(config["encoder_lr_mult"]),
        mode=str(config["mode"]),
        batch_size=ctx.batch_size,
        max_steps=ctx.max_steps,
        eval_every=ctx.eval_every,
        seed=int(config["seed"]),
        augment=ctx.augment,
        checkpoint_every=ctx.checkpoint_every,
    )


def execute_trial(
    config: dict[str, Any],
    ctx: TrialContext,
    *,
    report: Callable[[dict[str, Any], Callable[[], dict[str, Any]] | None], None] | None = None,
    state: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Materialise the trial's data, build its model and train it; returns the last metrics."""
    set_threads(ctx.cpus)
    init = ctx.inits[config["init"]]
    mean, std = (
        (init.mean, init.std) if init.mean is not None and init.std is not None else ctx.train_stats
    )
    pool = ctx.pool
    t0 = time.perf_counter()
    idx = pool.train_subset(float(config["fraction"]), int(config["seed"]))
    train = materialise(pool, idx, mean, std, boundary_px=ctx.boundary_px)
    val = materialise(pool, pool.indices("val"), mean, std, boundary_px=ctx.boundary_px)
    test = materialise(pool, pool.indices("test"), mean, std, boundary_px=ctx.boundary_px)
    data_s = time.perf_counter() - t0
    inner = report

    def timed(metrics: dict[str, Any], state_fn: Callable[[], dict[str, Any]] | None) -> None:
        if inner is not None:
            inner({**metrics, "data_s": data_s}, state_fn)

    # the trial's seed fixes its initial weights too: with reused actors the global RNG would
    # otherwise carry over from the previous trial, and a restarted trial would differ
    torch.manual_seed(int(config["seed"]))
    model = FinetuneModel(
        ctx.task, build_encoder(init), pool.num_outputs, frozen=config["mode"] == "linear"
    )
    spec = EvalSpec(
        ctx.task,
        pool.num_outputs,
        pool.class_ids,
        pool.class_names,
        pool.ignore_index,
        ctx.boundary_px,
        ctx.primary,
    )
    last = fit(model, train, val, test, trial_params(config, ctx), spec, report=timed, state=state)
    return {**last, "data_s": data_s}


def _log_attempt(ctx: TrialContext, trial_id: str, entry: dict[str, Any]) -> None:
    """One line per start of a trial: how a test (and a person) sees what was re-run."""
    if not ctx.attempts_dir:
        return
    os.makedirs(ctx.attempts_dir, exist_ok=True)
    with open(os.path.join(ctx.attempts_dir, f"{trial_id}.log"), "a") as fh:
        fh.write(json.dumps({**entry, "time": time.time()}) + "\n")


def trial_dirname(config: dict[str, Any], trial_id: str) -> str:
    """A trial's directory name under the experiment (Tune's ``trial_dirname_creator``)."""
    return f"{config['init']}-f{float(config['fraction']):g}-s{config['seed']}-{trial_id}"


def _resume_state(
    config: dict[str, Any], context: TrialContext, trial_id: str, ckpt: Any
) -> dict[str, Any] | None:
    """The newest checkpoint of this trial that loads, or None to start at step 0.

    Tune hands a restored trial the checkpoint named in the experiment state it last synced,
    which lags the trial by up to its sync period: a driver killed seconds after a checkpoint
    restored the trial from an older one, or from step 0 when none had been synced yet. The
    trial's own directory is the truth, so every ``checkpoint_*`` in it is a candidate, newest
    step first; a truncated or corrupt one is skipped with its file named. When none loads the
    trial starts over (a warning names the files): a trial is minutes of work, and an error
    here would fail it again on every restore.
    """
    candidates: list[Candidate] = []
    if ckpt is not None:
        candidates = with_siblings(ckpt.path, ckpt.filesystem)
    if context.experiment_path:
        fs, exp = filesystem_for(context.experiment_path)
        trial_dir = posixpath.join(exp, trial_dirname(config, trial_id))
        candidates = merge_candidates(candidates, list_candidates(fs, trial_dir))
    if not candidates:
        return None

    def check(state: dict[str, Any]) -> None:
        if "step" not in state or "model" not in state:
            raise CheckpointError(f"{STATE_FILE} of trial {trial_id}: not a fine-tuning state")

    try:
        loaded = load_newest(candidates, what=f"trial {trial_id}", logger=log, check=check)
    except CheckpointError as exc:
        log.warning("%s; trial %s starts from step 0", exc, trial_id)
        return None
    if ckpt is None or loaded.source.path.rstrip("/") != str(ckpt.path).rstrip("/"):
        log.info(
            "trial %s resumes from %s, not the checkpoint Tune restored (%s)",
            trial_id,
            loaded.source.describe(),
            getattr(ckpt, "path", "none"),
        )
    return loaded.state


def tune_trial(config: dict[str, Any], context: TrialContext) -> None:
    """The Tune function trainable: resume from the trial's checkpoint, report every evaluation.

    A trial that already finished is never trained again. Tune syncs its experiment state to
    storage with a lag, so a driver killed just after a trial ended may restore that trial as
    still running; the ``.done.json`` marker written at its end then short-circuits it: the
    final metrics are reported once more (so Tune records the right result) and nothing is
    trained.
    """
    from ray import tune

    trial_id = tune.get_context().get_trial_id()
    attempt = uuid.uuid4().hex[:8]
    done = (
        os.path.join(context.attempts_dir, f"{trial_id}.done.json")
        if context.attempts_dir
        else None
    )
    if done and os.path.exists(done):
        with open(done) as fh:
            final = json.load(fh)
        _log_attempt(context, trial_id, {"attempt": attempt, "skipped": "finished"})
        tune.report(final)
        return
    state = _resume_state(config, context, trial_id, tune.get_checkpoint())
    if state is not None and int(state["step"]) >= context.max_steps:
        return  # finished before the sweep was interrupted: nothing left to do
    _log_attempt(
        context, trial_id, {"attempt": attempt, "resumed_step": int(state["step"]) if state else 0}
    )

    def report(metrics: dict[str, Any], state_fn: Callable[[], dict[str, Any]] | None) -> None:
        metrics = {**metrics, "attempt": attempt}
        if done and int(metrics.get("step", 0)) >= context.max_steps:
            # mark the trial finished *before* its final report: the driver writes the trial's
            # row on that report, and a kill between row and marker made a restore train again
            _write_done(done, metrics, attempt)
        if state_fn is None:
            tune.report(metrics)
            return
        snap = state_fn()
        with tempfile.TemporaryDirectory() as d:
            save_checkpoint(
                d, snap, {"step": int(snap["step"]), "iteration": int(snap["iteration"])}
            )
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))

    last = execute_trial(config, context, report=report, state=state)
    if done and last and not os.path.exists(done):
        _write_done(done, last, attempt)


def _write_done(done: str, final: dict[str, Any], attempt: str) -> None:
    tmp = f"{done}.{attempt}.tmp"
    with open(tmp, "w") as fh:
        json.dump({**final, "attempt": attempt}, fh, default=float)
    os.replace(tmp, done)


# --------------------------------------------------------------------------------------------
# Tune setup
# --------------------------------------------------------------------------------------------


def _dim(value: float | tuple[float, float]) -> Any:
    from ray import tune

    if isinstance(value, tuple):
        lo, hi = value
        return lo if lo == hi else tune.loguniform(lo, hi)
    return value


def param_space(fc: FinetuneConfig, init_names: Sequence[str]) -> dict[str, Any]:
    from ray import tune

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


def trial_configs(plan: SweepPlan) -> list[dict[str, Any]]:
    """The grid's concrete configs when nothing is searched (plain-loop runs and benchmarks)."""
    s = plan.fc.search
    for v in (s.lr, s.weight_decay, s.encoder_lr_mult):
        if isinstance(v, tuple) and v[0] != v[1]:
            raise ValueError("trial_configs needs fixed lr/weight_decay/encoder_lr_mult")
    fixed = lambda v: v[0] if isinstance(v, tuple) else v  # noqa: E731
    modes = list(s.modes) if s.modes_in_grid or len(s.modes) == 1 else [s.modes[0]]
    return [
        {
            "fraction": f,
            "init": i,
            "seed": seed,
            "mode": m,
            "lr": fixed(s.lr),
            "weight_decay": fixed(s.weight_decay),
            "encoder_lr_mult": fixed(s.encoder_lr_mult),
        }
        for f in plan.fc.fractions
        for i in plan.inits
        for seed in plan.fc.seeds
        for m in modes
    ]


def cell_key(config: dict[str, Any], modes_in_grid: bool) -> str:
    """The grid cell of a trial: hyper-parameter samples of one cell compete with each other."""
    key = f"f={float(config['fraction']):g}|init={config['init']}|seed={int(config['seed'])}"
    return key + (f"|mode={config['mode']}" if modes_in_grid else "")


def _scheduler(fc: FinetuneConfig) -> Any:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

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
    from earthloop.finetune.schedulers import PerCellASHA

    return PerCellASHA(fc.search.modes_in_grid, **kwargs)


def _trial_name(trial: Any) -> str:
    return trial_dirname(trial.config, trial.trial_id)


def make_trainable(plan: SweepPlan) -> Any:
    from ray import tune

    res: dict[str, float] = {"cpu": plan.fc.resources.cpu}
    if plan.fc.resources.gpu:
        res["gpu"] = plan.fc.resources.gpu
    return tune.with_resources(tune.with_parameters(tune_trial, context=plan.context()), res)


# --------------------------------------------------------------------------------------------
# Rows, callbacks
# --------------------------------------------------------------------------------------------

TRIAL_SCHEMA = pa.schema(
    [
        ("sweep", pa.string()),
        ("trial_id", pa.string()),
        ("cell", pa.string()),
        ("task", pa.string()),
        ("init", pa.string()),
        ("init_kind", pa.string()),
        ("init_path", pa.string()),
        ("init_method", pa.string()),
        ("backbone", pa.string()),
        ("bands", pa.list_(pa.string())),
        ("mode", pa.string()),
        ("fraction", pa.float64()),
        ("seed", pa.int64()),
        ("lr", pa.float64()),
        ("weight_decay", pa.float64()),
        ("encoder_lr_mult", pa.float64()),
        ("n_labelled", pa.int64()),
        ("label_set_id", pa.string()),
        ("label_chip_ids", pa.list_(pa.string())),
        ("chips_table", pa.string()),
        ("chips_table_version", pa.int64()),
        ("labels_source", pa.string()),
        ("status", pa.string()),
        ("iterations", pa.int64()),
        ("steps", pa.int64()),
        ("stopped_early", pa.bool_()),
        ("metric", pa.string()),
        ("val_metric", pa.float64()),
        ("best_val_metric", pa.float64()),
        ("best_iteration", pa.int64()),
        ("test_metric", pa.float64()),
        ("test_miou", pa.float64()),
        ("test_accuracy", pa.float64()),
        ("test_macro_f1", pa.float64()),
        ("test_boundary_miou", pa.float64()),
        ("test_map", pa.float64()),
        ("test_per_class", pa.string()),
        ("selected", pa.bool_()),
        ("checkpoint", pa.string()),
        ("config", pa.string()),
        ("error", pa.string()),
        ("finished_at", pa.timestamp("us", tz="UTC")),
    ]
)


@dataclass
class RowContext:
    """Driver-side facts a trial row needs (picklable: it rides in the Tune callbacks)."""

    sweep: str
    task: str
    metric: str
    backbone: str
    bands: list[str]
    iterations: int
    max_steps: int
    modes_in_grid: bool
    chips_table: str
    chips_version: int
    labels_source: str
    inits: dict[str, tuple[str, str, str]]  # name -> (kind, path, method)
    label_sets: dict[str, tuple[int, str, list[str]]]  # "fraction|seed" -> (n, set id, ids)
    table_uri: str


def _f(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return float("nan")
    return v


def trial_row(
    rc: RowContext,
    trial_id: str,
    config: dict[str, Any],
    last: dict[str, Any],
    checkpoint: str | None,
    error: str | None,
) -> dict[str, Any]:
    frac, seed = float(config["fraction"]), int(config["seed"])
    n, set_id, ids = rc.label_sets.get(f"{frac:g}|{seed}", (0, "", []))
    kind, path, method = rc.inits.get(config["init"], ("?", "", "?"))
    # our own evaluation count: Tune's training_iteration also counts a re-reported final result
    iters = int(last.get("evals", last.get("training_iteration", 0)) or 0)
    steps = int(last.get("step", 0) or 0)
    status = "error" if error else ("finished" if steps >= rc.max_steps else "stopped")
    m = rc.metric
    return {
        "sweep": rc.sweep,
        "trial_id": trial_id,
        "cell": cell_key(config, rc.modes_in_grid),
        "task": rc.task,
        "init": str(config["init"]),
        "init_kind": kind,
        "init_path": path or "",
        "init_method": method,
        "backbone": rc.backbone,
        "bands": list(rc.bands),
        "mode": str(config["mode"]),
        "fraction": frac,
        "seed": seed,
        "lr": _f(config["lr"]),
        "weight_decay": _f(config["weight_decay"]),
        "encoder_lr_mult": _f(config["encoder_lr_mult"]),
        "n_labelled": int(n),
        "label_set_id": set_id,
        "label_chip_ids": list(ids),
        "chips_table": rc.chips_table,
        "chips_table_version": int(rc.chips_version),
        "labels_source": rc.labels_source,
        "status": status,
        "iterations": iters,
        "steps": steps,
        "stopped_early": status == "stopped",
        "metric": m,
        "val_metric": _f(last.get("val_metric")),
        "best_val_metric": _f(last.get("best_val_metric")),
        "best_iteration": int(last.get("best_iteration", 0) or 0),
        "test_metric": _f(last.get(f"test_{m}")),
        "test_miou": _f(last.get("test_miou")),
        "test_accuracy": _f(last.get("test_accuracy")),
        "test_macro_f1": _f(last.get("test_macro_f1")),
        "test_boundary_miou": _f(last.get("test_boundary_miou")),
        "test_map": _f(last.get("test_map")),
        "test_per_class": str(last.get("test_per_class", "{}")),
        "selected": False,
        "checkpoint": checkpoint or "",
        "config": json.dumps({k: config[k] for k in sorted(config)}, default=str),
        "error": (error or "")[:2000],
        "finished_at": datetime.now(UTC),
    }


def write_rows(uri: str, rows: list[dict[str, Any]]) -> None:
    from earthloop.store.delta import merge_rows

    if rows:
        merge_rows(uri, pa.Table.from_pylist(rows, schema=TRIAL_SCHEMA), ["sweep", "trial_id"])


def row_context(plan: SweepPlan) -> RowContext:
    return RowContext(
        sweep=plan.name,
        task=plan.fc.task,
        metric=plan.fc.primary_metric,
        backbone=plan.fc.backbone,
        bands=plan.bands,
        iterations=plan.fc.iterations,
        max_steps=plan.fc.max_steps,
        modes_in_grid=plan.fc.search.modes_in_grid,
        chips_table=plan.pool.chips.uri if plan.pool.chips else plan.pool.labels_source,
        chips_version=plan.pool.chips.version if plan.pool.chips else -1,
        labels_source=plan.pool.labels_source,
        inits={k: (v.kind, v.path or "", v.method) for k, v in plan.inits.items()},
        label_sets={
            f"{k[0]:g}|{k[1]}": (len(v.ids), v.set_id, v.ids) for k, v in plan.label_sets.items()
        },
        table_uri=plan.table_uri,
    )


def mark_selected(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flag, per cell, the trial with the best validation score (ties: lowest trial id)."""
    best: dict[str, dict[str, Any]] = {}
    for r in rows:
        r["selected"] = False
        if r["status"] == "error" or math.isnan(r["best_val_metric"]):
            continue
        cur = best.get(r["cell"])
        if cur is None or (r["best_val_metric"], cur["trial_id"]) > (
            cur["best_val_metric"],
            r["trial_id"],
        ):
            best[r["cell"]] = r
    for r in best.values():
        r["selected"] = True
    return rows


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


def run_sweep(
    cfg: EarthloopConfig,
    *,
    plan: SweepPlan | None = None,
    extra_callbacks: Sequence[Any] = (),
) -> SweepResult:
    """Run (or resume) the sweep on the connected Ray cluster, then record and report it."""
    from ray.tune import CheckpointConfig, FailureConfig, RunConfig, TuneConfig, Tuner
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from earthloop.finetune.callbacks import SweepProgress, TrialRecorder
    from earthloop.finetune.report import write_report

    plan = plan or plan_sweep(cfg)
    fc = plan.fc
    rc = row_context(plan)
    trainable = make_trainable(plan)
    path = plan.experiment_path
    restored = Tuner.can_restore(path)
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
        tuner = Tuner.restore(path, trainable=trainable, resume_errored=True)
    else:
        os.makedirs(path, exist_ok=True)
        Path(path, FINGERPRINT_FILE).write_text(json.dumps(plan.fingerprint, default=str, indent=1))
        tuner = Tuner(
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
                storage_path=plan.storage_path,
                callbacks=[
                    TrialRecorder(rc),
                    SweepProgress(plan.n_trials, fc.log_every_s, fc.primary_metric),
                    *extra_callbacks,
                ],
                failure_config=FailureConfig(max_failures=fc.max_failures),
                checkpoint_config=CheckpointConfig(num_to_keep=fc.keep_checkpoints),
                verbose=fc.verbose,
            ),
        )
    t_fit = time.perf_counter()
    grid = tuner.fit()
    t_rows = time.perf_counter()
    rows = []
    for k in range(len(grid)):
        res = grid[k]
        metrics = dict(res.metrics or {})
        trial_id = str(metrics.get("trial_id") or Path(res.path).name)
        err = None if res.error is None else f"{type(res.error).__name__}: {res.error}"
        ckpt = res.checkpoint.path if res.checkpoint is not None else None
        rows.append(trial_row(rc, trial_id, dict(res.config or {}), metrics, ckpt, err))
    rows = mark_selected(rows)
    write_rows(plan.table_uri, rows)
    report = write_report(rows, plan.report_dir, plan_summary(plan))
    errors = sum(1 for r in rows if r["status"] == "error")
    t_end = time.perf_counter()
    log.info("sweep %s: Tune %.1fs, rows + report %.1fs", plan.name, t_rows - t_fit, t_end - t_rows)
    return SweepResult(
        plan.name,
        path,
        restored,
        len(rows),
        errors,
        plan.table_uri,
        report.markdown,
        report.plots,
        rows,
        fit_s=t_rows - t_fit,
        report_s=t_end - t_rows,
    )


def plan_summary(plan: SweepPlan) -> dict[str, Any]:
    """What the report says about the setup (data version, split sizes, subsets)."""
    pool = plan.pool
    return {
        "sweep": plan.name,
        "task": plan.fc.task,
        "metric": plan.fc.primary_metric,
        "backbone": plan.fc.backbone,
        "bands": plan.bands,
        "labels": pool.labels_source,
        "chips": pool.chips.as_dict() if pool.chips else None,
        "pool": pool.summary(),
        "dropped_overlap": pool.dropped_overlap,
        "split": plan.fc.split.model_dump(),
        "label_sets": {f"{k[0]:g}|{k[1]}": len(v.ids) for k, v in plan.label_sets.items()},
        "max_steps": plan.fc.max_steps,
        "search": plan.fc.search.model_dump(),
        "asha": plan.fc.asha.model_dump(),
        "inits": {
            k: {"kind": v.kind, "path": v.path, "method": v.method} for k, v in plan.inits.items()
        },
        "classes": {
            pool.class_names[c]: n
            for c, n in sorted(pool.class_counts(pool.indices("train")).items())
        },
    }


def plain_loop(
    plan: SweepPlan, configs: Sequence[dict[str, Any]] | None = None, *, every_s: float = 30.0
) -> list[dict[str, Any]]:
    """Run trials one after the other in this process (no Ray): benchmarks and evidence."""
    from earthloop.observe.progress import Progress

    ctx = plan.context()
    ctx.attempts_dir = None
    todo = list(configs) if configs is not None else trial_configs(plan)
    out = []
    with Progress(
        "finetune plain loop", len(todo), unit="trials", every_s=every_s, logger=log
    ) as progress:
        for c in todo:
            t0 = time.perf_counter()
            last = execute_trial(c, ctx)
            out.append({"config": c, "metrics": last, "seconds": time.perf_counter() - t0})
            progress.update(1, **{f"last_test_{ctx.primary}": last.get(f"test_{ctx.primary}")})
    return out


__all__ += ["EmptyClassError", "IncompatibleCheckpointError", "plain_loop"]
