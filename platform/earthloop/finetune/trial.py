"""One fine-tuning trial: its data, model and training, resumed from the trial's newest checkpoint.

:func:`execute_trial` is the trial without Ray (plain loops, tests, benchmarks time exactly the
work a Tune trial does); :func:`tune_trial` is the Tune function trainable around it. Everything a
trial needs from the driver travels in one :class:`TrialContext`, shipped once through the object
store rather than once per trial.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
from earthloop.finetune.data import Pool, TrialArrays, materialise
from earthloop.finetune.model import ResolvedInit, build_encoder, set_threads
from earthloop.finetune.train import EvalSpec, TrainParams, fit
from earthloop.models.task import TaskModel
from earthloop.store.fs import append_line, exists, read_bytes, write_bytes

log = logging.getLogger("earthloop.finetune")

__all__ = ["TrialContext", "execute_trial", "trial_dirname", "trial_params", "tune_trial"]

Report = Callable[[dict[str, Any], Callable[[], dict[str, Any]] | None], None]


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
    class_weights: str = "none"
    train_crop: int | None = None
    gpus: float = 0.0  # finetune.resources.gpu: > 0 trains the trial on the GPU Ray assigned it
    attempts_dir: str | None = None
    experiment_path: str | None = None  # where trial directories (and their checkpoints) live


def trial_device(ctx: TrialContext) -> torch.device:
    """The GPU when the sweep asked for one (``finetune.resources.gpu``), else the CPU.

    Asking is explicit: a trial that silently fell back to the CPU would run for hours and be
    read as a GPU figure, so a GPU asked for but not visible (no CUDA build, or Ray gave the
    trial none) is an error that names the setting.
    """
    if ctx.gpus <= 0:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError(
            f"finetune.resources.gpu={ctx.gpus:g} but this trial sees no CUDA device "
            f"(torch {torch.__version__}, CUDA_VISIBLE_DEVICES="
            f"{os.environ.get('CUDA_VISIBLE_DEVICES')!r}); set it to 0 to train on the CPU"
        )
    return torch.device("cuda")


def trial_params(config: dict[str, Any], ctx: TrialContext) -> TrainParams:
    """The training parameters of one trial: its sampled config plus the sweep's fixed budget."""
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
        class_weights=ctx.class_weights,
        train_crop=ctx.train_crop,
    )


def _trial_data(
    config: dict[str, Any], ctx: TrialContext
) -> tuple[TrialArrays, TrialArrays, dict[str, TrialArrays]]:
    """Train (the trial's label subset), val and the scored sets (``test``, and ``heldout`` when
    the split holds a region out), normalised as the init expects."""
    init = ctx.inits[config["init"]]
    mean, std = (
        (init.mean, init.std) if init.mean is not None and init.std is not None else ctx.train_stats
    )
    pool = ctx.pool
    idx = pool.train_subset(float(config["fraction"]), int(config["seed"]))
    train = materialise(pool, idx, mean, std, boundary_px=ctx.boundary_px)
    val = materialise(pool, pool.indices("val"), mean, std, boundary_px=ctx.boundary_px)
    scored = {
        "test": materialise(pool, pool.indices("test"), mean, std, boundary_px=ctx.boundary_px)
    }
    held = pool.indices("heldout")
    if held:
        scored["heldout"] = materialise(pool, held, mean, std, boundary_px=ctx.boundary_px)
    return train, val, scored


def execute_trial(
    config: dict[str, Any],
    ctx: TrialContext,
    *,
    report: Report | None = None,
    state: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Materialise the trial's data, build its model and train it; returns the last metrics."""
    set_threads(ctx.cpus)
    t0 = time.perf_counter()
    train, val, test = _trial_data(config, ctx)
    data_s = time.perf_counter() - t0
    inner = report

    def timed(metrics: dict[str, Any], state_fn: Callable[[], dict[str, Any]] | None) -> None:
        if inner is not None:
            inner({**metrics, "data_s": data_s}, state_fn)

    # the trial's seed fixes its initial weights too: with reused actors the global RNG would
    # otherwise carry over from the previous trial, and a restarted trial would differ
    torch.manual_seed(int(config["seed"]))
    pool = ctx.pool
    model = TaskModel(
        ctx.task,
        build_encoder(ctx.inits[config["init"]]),
        pool.num_outputs,
        frozen=config["mode"] == "linear",
    ).to(trial_device(ctx))
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
    line = json.dumps({**entry, "time": time.time()})
    append_line(posixpath.join(ctx.attempts_dir, f"{trial_id}.log"), line)


def trial_dirname(config: dict[str, Any], trial_id: str) -> str:
    """A trial's directory name under the experiment (Tune's ``trial_dirname_creator``)."""
    return f"{config['init']}-f{float(config['fraction']):g}-s{config['seed']}-{trial_id}"


def _check_state(trial_id: str) -> Callable[[dict[str, Any]], None]:
    def check(state: dict[str, Any]) -> None:
        if "step" not in state or "model" not in state:
            raise CheckpointError(f"{STATE_FILE} of trial {trial_id}: not a fine-tuning state")

    return check


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
    try:
        loaded = load_newest(
            candidates, what=f"trial {trial_id}", logger=log, check=_check_state(trial_id)
        )
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


def _write_done(done: str, final: dict[str, Any], attempt: str) -> None:
    """The finished-marker, replaced in one step (a reader sees no half-written marker)."""
    write_bytes(done, json.dumps({**final, "attempt": attempt}, default=float).encode())


def _tune_report(done: str | None, max_steps: int, attempt: str) -> Report:
    """The ``report`` callback of a Tune trial: metrics to Tune, with a checkpoint when due."""
    from ray import tune  # heavy; only a Tune worker runs this

    def report(metrics: dict[str, Any], state_fn: Callable[[], dict[str, Any]] | None) -> None:
        metrics = {**metrics, "attempt": attempt}
        if done and int(metrics.get("step", 0)) >= max_steps:
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

    return report


def tune_trial(config: dict[str, Any], context: TrialContext) -> None:
    """The Tune function trainable: resume from the trial's checkpoint, report every evaluation.

    A trial that already finished is never trained again. Tune syncs its experiment state to
    storage with a lag, so a driver killed just after a trial ended may restore that trial as
    still running; the ``.done.json`` marker written at its end then short-circuits it: the
    final metrics are reported once more (so Tune records the right result) and nothing is
    trained.
    """
    from ray import tune  # heavy; only a Tune worker runs this

    trial_id = tune.get_context().get_trial_id()
    attempt = uuid.uuid4().hex[:8]
    done = (
        posixpath.join(context.attempts_dir, f"{trial_id}.done.json")
        if context.attempts_dir
        else None
    )
    if done and exists(done):
        final = json.loads(read_bytes(done))
        _log_attempt(context, trial_id, {"attempt": attempt, "skipped": "finished"})
        tune.report(final)
        return
    state = _resume_state(config, context, trial_id, tune.get_checkpoint())
    if state is not None and int(state["step"]) >= context.max_steps:
        return  # finished before the sweep was interrupted: nothing left to do
    _log_attempt(
        context, trial_id, {"attempt": attempt, "resumed_step": int(state["step"]) if state else 0}
    )
    report = _tune_report(done, context.max_steps, attempt)
    last = execute_trial(config, context, report=report, state=state)
    if done and last and not exists(done):
        _write_done(done, last, attempt)
