"""The Ray Train worker loop shared by the three methods.

Design choices that matter to users:
- checkpoints every ``checkpoint_every`` steps and at each epoch's end, so a killed worker or node
  costs at most that many steps: Ray restarts the group and we resume from the last reported
  checkpoint, keeping the global step counter. A checkpoint holds exactly what an identical
  continuation needs: the model (for SeCo the query encoder, its momentum key encoder and the
  negative queues), the optimiser state (SGD momentum), the position in the data (epoch and
  batches consumed in it), the epoch's running loss sums and every rank's RNG states;
- resume continues *inside* the epoch: the batches the checkpoint already consumed are skipped
  (read, not trained on; the per-epoch order is deterministic, see ``runner.data_config``), so a
  resumed run takes exactly as many steps as an uninterrupted one and each epoch ends at the same
  step;
- checkpoints load with ``torch.load(weights_only=True)`` (plain values only) and a broken newest
  one falls back to the newest that loads (:mod:`earthloop.checkpoints`), naming the broken file;
- every rank calls ``ray.train.report`` at the same steps (Train V2 requires it), rank 0 attaches
  the checkpoint;
- the step time is split into data wait and compute, so a starving input pipeline is visible;
- each epoch ends with the collapse watch (embedding std, alignment/uniformity, kNN probe).
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from earthloop.checkpoints import (
    STATE_FILE,
    CheckpointError,
    Loaded,
    load_newest,
    load_state_file,
    save_checkpoint,
    with_siblings,
)
from earthloop.models.metrics import embedding_std, is_collapsed, knn_accuracy, uniformity
from earthloop.models.normalise import normalise
from earthloop.pretrain.methods import build_method, build_optimizer, method_inputs

log = logging.getLogger("earthloop.pretrain")

CHECKPOINT_FORMAT = 2  # 1: no data position (resume replayed the epoch), pickled loading

__all__ = [
    "CHECKPOINT_FORMAT",
    "STATE_FILE",
    "CheckpointError",
    "Position",
    "load_state",
    "probe_accuracy",
    "resume_state",
    "train_loop",
    "training_state",
]


def _unwrap(model: nn.Module) -> Any:
    """The method module inside a DDP wrapper (typed loosely: methods differ in attributes)."""
    return model.module if hasattr(model, "module") else model


def probe_accuracy(
    backbone: nn.Module,
    probe: dict[str, np.ndarray],
    mean: Tensor,
    std: Tensor,
    k: int,
    device: torch.device,
) -> tuple[float, float, float]:
    """kNN accuracy of pooled features on the probe set (half reference, half query).

    Also returns the std and uniformity of those normalised features (collapse watch).
    """
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        x = torch.tensor(probe["images"], dtype=torch.float32)
        valid = torch.tensor(probe["valid"], dtype=torch.bool)
        x = normalise(x, mean, std, valid).to(device)
        feats = torch.cat([backbone(x[i : i + 64]) for i in range(0, len(x), 64)]).float().cpu()
    backbone.train(was_training)
    labels = torch.tensor(probe["labels"], dtype=torch.long)
    n = len(labels)
    ref, qry = torch.arange(0, n, 2), torch.arange(1, n, 2)
    z = F.normalize(feats, dim=1)
    acc = knn_accuracy(z[ref], labels[ref], z[qry], labels[qry], k=k)
    return float(acc), float(embedding_std(z)), float(uniformity(z))


@dataclass
class Position:
    """Where training stands: global step, epoch in progress and batches consumed in it.

    At an epoch's end the position is ``(step, epoch + 1, 0)``: the next epoch, nothing consumed.
    """

    step: int = 0
    epoch: int = 0
    batch: int = 0


def rng_state(model: nn.Module) -> dict[str, Any]:
    """This process's RNG states: torch's global one and the method's private generator."""
    gen = getattr(_unwrap(model), "generator", None)
    return {
        "torch": torch.get_rng_state(),
        "method": gen.get_state() if isinstance(gen, torch.Generator) else None,
    }


def set_rng_state(model: nn.Module, state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    gen = getattr(_unwrap(model), "generator", None)
    if isinstance(gen, torch.Generator) and state.get("method") is not None:
        gen.set_state(state["method"])


def _gather_rng(model: nn.Module) -> list[dict[str, Any]]:
    """Every rank's RNG states, in rank order (a collective: all ranks call it together)."""
    import torch.distributed as dist

    mine = rng_state(model)
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [mine]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, mine)
    return out


def training_state(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    pos: Position,
    *,
    epoch_losses: dict[str, float],
    epoch_batches: int,
    rngs: list[dict[str, Any]],
) -> dict[str, Any]:
    """Everything an identical continuation needs, as tensors and plain values.

    Nothing is stored twice: the model's state dict (for SeCo: query encoder, momentum key
    encoder, queues) and the optimiser's own state (SGD momentum: one buffer per trainable
    parameter). The key encoder is an average over ~1/(1-momentum) steps and cannot be rebuilt
    from the query encoder, and dropping the optimiser momentum would change the next steps, so
    both stay (docs/methods.md, "Checkpoints and resume").
    """
    return {
        "format": CHECKPOINT_FORMAT,
        "model": _unwrap(model).state_dict(),
        "optimizer": opt.state_dict(),
        "step": pos.step,
        "epoch": pos.epoch,
        "batch_in_epoch": pos.batch,
        "epoch_losses": {k: float(v) for k, v in epoch_losses.items()},
        "epoch_batches": int(epoch_batches),
        "rng": rngs,
    }


def resume_state(path: str, filesystem: Any = None, *, quiet: bool = False) -> Loaded:
    """The newest loadable checkpoint among ``path`` (Ray's latest) and its siblings.

    A truncated or corrupt newest checkpoint is logged with its file name and skipped; the run
    continues from the newest one that loads. Raises :class:`CheckpointError` (naming the files)
    when none does.
    """

    def check(state: dict[str, Any]) -> None:
        missing = [k for k in ("model", "optimizer", "step", "epoch") if k not in state]
        if missing:
            raise CheckpointError(f"{path}: not a pretraining checkpoint (no {missing})")

    return load_newest(
        with_siblings(path, filesystem),
        what="pretraining resume",
        logger=None if quiet else log,
        check=check,
    )


def train_loop(config: dict[str, Any]) -> None:
    """``train_loop_per_worker`` for :class:`ray.train.torch.TorchTrainer`."""
    import ray
    import ray.train
    import ray.train.torch
    from ray.train import Checkpoint

    from earthloop.observe.recorders import StreamMetrics, TrainMetrics

    pc: dict[str, Any] = config["pretrain"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(pc["seed"] + rank)
    # one intra-op thread per reserved CPU: more threads fight the Ray Data readers for cores
    torch.set_num_threads(max(1, int(config.get("cpus_per_worker", 1))))
    device = ray.train.torch.get_device()
    on_gpu = device.type == "cuda"
    mean = torch.tensor(config["mean"], dtype=torch.float32)
    std = torch.tensor(config["std"], dtype=torch.float32)
    # each rank draws its own dates/augmentations; the same seed everywhere would duplicate views
    model = build_method({**pc, "seed": pc["seed"] + 1000 * rank}, len(config["mean"]))
    if on_gpu and pc.get("amp", True):
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    opt = build_optimizer(model, pc)
    start = Position()
    resumed_from = 0
    epoch_losses: dict[str, float] = {}
    epoch_batches = 0
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        loaded = resume_state(ckpt.path, ckpt.filesystem, quiet=rank != 0)
        start, epoch_losses, epoch_batches = restore(model, opt, loaded.state, rank, world)
        resumed_from = start.step
        if rank == 0:
            log.info(
                "resuming from checkpoint %s at step %d (epoch %d, %d batches of it consumed)",
                loaded.source.path,
                start.step,
                start.epoch,
                start.batch,
            )
    # broadcast_buffers=False: MoCo queues are all-gathered, hence already equal on every rank.
    model = ray.train.torch.prepare_model(
        model, parallel_strategy_kwargs={"broadcast_buffers": False}
    )
    probe = ray.get(config["probe_ref"]) if config.get("probe_ref") is not None else None
    metrics = TrainMetrics(config["job_name"], rank=rank)
    stream_metrics = StreamMetrics(config["job_name"])
    shard = ray.train.get_dataset_shard("train")
    per_worker = max(1, pc["batch_size"] // world)
    max_steps = pc.get("max_steps") or math.inf
    step = start.step
    t_start = time.perf_counter()
    steps_done_here = 0
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if on_gpu and pc.get("amp", True)
        else torch.autocast("cpu", enabled=False)
    )
    last_log = time.perf_counter()
    for epoch in range(start.epoch, pc["epochs"]):
        if step >= max_steps:
            break
        skip = start.batch if epoch == start.epoch else 0
        if epoch != start.epoch:
            epoch_losses, epoch_batches = {}, 0
        if skip and rank == 0:
            log.info(
                "epoch %d: skipping the %d batches the checkpoint already trained on", epoch, skip
            )
        wait_s = compute_s = first_wait_s = 0.0
        timed = 0  # batches trained in this process (throughput), unlike epoch_batches
        consumed = 0  # position in this epoch's (deterministic) batch order
        complete = True
        t_prev = time.perf_counter()
        batches = shard.iter_torch_batches(
            batch_size=per_worker, drop_last=True, prefetch_batches=config.get("prefetch", 4)
        )
        for batch in batches:
            if consumed < skip:
                consumed += 1
                t_prev = time.perf_counter()
                continue
            t_got = time.perf_counter()
            wait_s += t_got - t_prev
            if timed == 0:
                first_wait_s = t_got - t_prev  # pipeline start-up, reported apart
            inputs = {
                k: v.to(device) for k, v in method_inputs(pc["method"], batch, mean, std).items()
            }
            with autocast:
                out = model(inputs)
            opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            opt.step()
            step += 1
            consumed += 1
            steps_done_here += 1
            timed += 1
            epoch_batches += 1
            terms = {
                k: float(v.detach()) for k, v in out.items() if k.startswith("loss") and v.ndim == 0
            }
            for k, v in terms.items():
                epoch_losses[k] = epoch_losses.get(k, 0.0) + v
            t_prev = time.perf_counter()
            compute_s += t_prev - t_got
            bs = int(next(iter(inputs.values())).shape[0])
            metrics.step(seconds=t_prev - t_got, samples=bs, losses=terms)
            stream_metrics.data_wait(wait_s / max(wait_s + compute_s, 1e-9))
            if rank == 0 and (t_prev - last_log >= pc["log_every_s"]):
                last_log = t_prev
                rate = steps_done_here * per_worker * world / max(t_prev - t_start, 1e-9)
                total = pc["max_steps"]
                eta = ((total - step) * (t_prev - t_start) / steps_done_here) if total else None
                log.info(
                    "step %d epoch %d loss %.4f %.1f samples/s data-wait %.0f%% ETA %s",
                    step,
                    epoch,
                    terms.get("loss", float("nan")),
                    rate,
                    100 * wait_s / max(wait_s + compute_s, 1e-9),
                    f"{eta:.0f}s" if eta is not None else "?",
                )
            if step % pc["checkpoint_every"] == 0:
                _report(
                    ray.train,
                    Checkpoint,
                    model,
                    opt,
                    Position(step, epoch, consumed),
                    epoch_losses,
                    epoch_batches,
                    rank,
                    {
                        "step": step,
                        "epoch": epoch,
                        "loss": terms.get("loss", float("nan")),
                        "resumed_from_step": resumed_from,
                        "kind": "step",
                    },
                )
                if rank == 0:
                    metrics.checkpoint_saved()
            if step >= max_steps:
                complete = False
                break
        # ---- end of epoch: collapse watch and a checkpoint at the epoch boundary ----
        mean_losses = {k: v / max(epoch_batches, 1) for k, v in epoch_losses.items()}
        epoch_metrics: dict[str, Any] = {
            "step": step,
            "epoch": epoch + 1,
            "kind": "epoch",
            "resumed_from_step": resumed_from,
            "world_size": world,
            "batches": epoch_batches,
            "data_wait_fraction": wait_s / max(wait_s + compute_s, 1e-9),
            "data_wait_steady_fraction": (wait_s - first_wait_s)
            / max(wait_s - first_wait_s + compute_s, 1e-9),
            "samples_per_s": timed * per_worker * world / max(wait_s + compute_s, 1e-9),
            **mean_losses,
        }
        if probe is not None and rank == 0:
            acc, estd, unif = probe_accuracy(
                _unwrap(model).backbone, probe, mean, std, config["probe_k"], device
            )
            dim = int(_unwrap(model).backbone.num_features)
            collapsed = is_collapsed(estd, dim)
            epoch_metrics.update(
                knn_accuracy=acc, embedding_std=estd, uniformity=unif, collapsed=collapsed
            )
            metrics.knn_accuracy(acc)
            metrics.embedding_std(estd)
            metrics.collapsed(collapsed)
            if collapsed:
                log.warning("embedding collapse: std %.4f (≈0 means every chip maps alike)", estd)
        metrics.epoch(epoch + 1)
        if rank == 0:
            log.info(
                "epoch %d done: %s",
                epoch + 1,
                {k: round(v, 4) if isinstance(v, float) else v for k, v in epoch_metrics.items()},
            )
            if config.get("metrics_table"):
                _record_epoch(config["metrics_table"], config["run_name"], epoch_metrics)
        # stopped by max_steps inside the epoch: the position stays inside it, so a later run
        # with a larger max_steps continues the epoch instead of skipping its rest
        pos = Position(step, epoch + 1, 0) if complete else Position(step, epoch, consumed)
        _report(
            ray.train,
            Checkpoint,
            model,
            opt,
            pos,
            {} if complete else epoch_losses,
            0 if complete else epoch_batches,
            rank,
            epoch_metrics,
        )
        if rank == 0:
            metrics.checkpoint_saved()


def restore(
    model: nn.Module, opt: torch.optim.Optimizer, state: dict[str, Any], rank: int, world: int
) -> tuple[Position, dict[str, float], int]:
    """Load a checkpoint's state into ``model``/``opt`` (unwrapped); returns the data position.

    Checkpoints of format 1 (no data position) resume at their epoch's start, as they always did.
    RNG states are restored when the checkpoint was written by as many ranks as there are now.
    """
    _unwrap(model).load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    pos = Position(int(state["step"]), int(state["epoch"]), int(state.get("batch_in_epoch", 0)))
    rngs = state.get("rng") or []
    if len(rngs) == world:
        set_rng_state(model, rngs[rank])
    elif rngs and rank == 0:
        log.info(
            "checkpoint has RNG states of %d ranks, now %d: fresh RNG streams", len(rngs), world
        )
    losses = {str(k): float(v) for k, v in dict(state.get("epoch_losses", {})).items()}
    return pos, losses, int(state.get("epoch_batches", 0))


def _report(
    train: Any,
    checkpoint_cls: Any,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    pos: Position,
    epoch_losses: dict[str, float],
    epoch_batches: int,
    rank: int,
    metrics: dict[str, Any],
) -> None:
    clean = {k: (float(v) if isinstance(v, (bool, np.floating)) else v) for k, v in metrics.items()}
    rngs = _gather_rng(model)  # every rank, before rank 0 saves
    if rank == 0:
        state = training_state(
            model, opt, pos, epoch_losses=epoch_losses, epoch_batches=epoch_batches, rngs=rngs
        )
        meta = {"step": pos.step, "epoch": pos.epoch, "batch_in_epoch": pos.batch}
        with tempfile.TemporaryDirectory() as d:
            save_checkpoint(d, state, {**meta, "format": CHECKPOINT_FORMAT})
            train.report(clean, checkpoint=checkpoint_cls.from_directory(d))
    else:
        train.report(clean)


def _record_epoch(uri: str, run_name: str, m: dict[str, Any]) -> None:
    """Upsert one row per (run, epoch): a resumed epoch overwrites, never duplicates."""
    import json

    import pyarrow as pa

    from earthloop.store.delta import merge_rows

    row = {
        "run_name": run_name,
        "epoch": int(m["epoch"]),
        "step": int(m["step"]),
        "loss": float(m.get("loss", float("nan"))),
        "knn_accuracy": float(m.get("knn_accuracy", float("nan"))),
        "embedding_std": float(m.get("embedding_std", float("nan"))),
        "data_wait_fraction": float(m["data_wait_fraction"]),
        "samples_per_s": float(m["samples_per_s"]),
        "collapsed": bool(m.get("collapsed", False)),
        "metrics": json.dumps({k: v for k, v in m.items()}, default=float),
    }
    try:
        merge_rows(uri, pa.Table.from_pylist([row]), ["run_name", "epoch"])
    except Exception as exc:  # a metrics write must not kill training
        log.warning("could not record epoch metrics in %s: %s", uri, exc)


def load_state(checkpoint_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The saved training state of a local checkpoint directory (``weights_only=True``)."""
    return load_state_file(Path(checkpoint_dir) / STATE_FILE)
