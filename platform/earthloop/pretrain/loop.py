"""The Ray Train worker loop shared by the three methods.

Design choices that matter to users:
- checkpoints (model, optimiser, MoCo queues, step, epoch) every ``checkpoint_every`` steps, so a
  killed worker or node costs at most that many steps: Ray restarts the group and we resume from
  the last reported checkpoint, keeping the global step counter;
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
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from earthloop.models.metrics import embedding_std, is_collapsed, knn_accuracy, uniformity
from earthloop.pretrain.methods import build_method, build_optimizer, method_inputs, normalise

log = logging.getLogger("earthloop.pretrain")

STATE_FILE = "state.pt"


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


def _save_state(
    path: Path, model: nn.Module, opt: torch.optim.Optimizer, step: int, epoch: int
) -> None:
    torch.save(
        {
            "model": _unwrap(model).state_dict(),
            "optimizer": opt.state_dict(),
            "step": step,
            "epoch": epoch,
        },
        path / STATE_FILE,
    )


def train_loop(config: dict[str, Any]) -> None:
    """``train_loop_per_worker`` for :class:`ray.train.torch.TorchTrainer`."""
    import ray
    import ray.train
    import ray.train.torch
    from ray.train import Checkpoint

    from earthloop.observe.metrics import StreamMetrics, TrainMetrics

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
    start_step, start_epoch, resumed_from = 0, 0, 0
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state = torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start_step, start_epoch = int(state["step"]), int(state["epoch"])
        resumed_from = start_step
        if rank == 0:
            log.info("resuming from checkpoint at step %d (epoch %d)", start_step, start_epoch)
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
    step = start_step
    t_start = time.perf_counter()
    steps_done_here = 0
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if on_gpu and pc.get("amp", True)
        else torch.autocast("cpu", enabled=False)
    )
    last_log = time.perf_counter()
    for epoch in range(start_epoch, pc["epochs"]):
        if step >= max_steps:
            break
        wait_s = compute_s = first_wait_s = 0.0
        losses_sum: dict[str, float] = {}
        n_batches = 0
        t_prev = time.perf_counter()
        batches = shard.iter_torch_batches(
            batch_size=per_worker, drop_last=True, prefetch_batches=config.get("prefetch", 4)
        )
        for batch in batches:
            t_got = time.perf_counter()
            wait_s += t_got - t_prev
            if n_batches == 0:
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
            steps_done_here += 1
            n_batches += 1
            terms = {
                k: float(v.detach()) for k, v in out.items() if k.startswith("loss") and v.ndim == 0
            }
            for k, v in terms.items():
                losses_sum[k] = losses_sum.get(k, 0.0) + v
            t_prev = time.perf_counter()
            compute_s += t_prev - t_got
            bs = int(next(iter(inputs.values())).shape[0])
            metrics.step(seconds=t_prev - t_got, samples=bs, losses=terms)
            stream_metrics.data_wait(wait_s / max(wait_s + compute_s, 1e-9))
            if rank == 0 and (t_prev - last_log >= pc["log_every_s"]):
                last_log = t_prev
                rate = steps_done_here * per_worker * world / max(t_prev - t_start, 1e-9)
                total = pc["max_steps"] or (step if not n_batches else None)
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
                    step,
                    epoch,
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
                break
        # ---- end of epoch: collapse watch and a checkpoint at the epoch boundary ----
        mean_losses = {k: v / max(n_batches, 1) for k, v in losses_sum.items()}
        epoch_metrics: dict[str, Any] = {
            "step": step,
            "epoch": epoch + 1,
            "kind": "epoch",
            "resumed_from_step": resumed_from,
            "world_size": world,
            "batches": n_batches,
            "data_wait_fraction": wait_s / max(wait_s + compute_s, 1e-9),
            "data_wait_steady_fraction": (wait_s - first_wait_s)
            / max(wait_s - first_wait_s + compute_s, 1e-9),
            "samples_per_s": n_batches * per_worker * world / max(wait_s + compute_s, 1e-9),
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
        _report(ray.train, Checkpoint, model, opt, step, epoch + 1, rank, epoch_metrics)
        if rank == 0:
            metrics.checkpoint_saved()


def _report(
    train: Any,
    checkpoint_cls: Any,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    step: int,
    epoch: int,
    rank: int,
    metrics: dict[str, Any],
) -> None:
    clean = {k: (float(v) if isinstance(v, (bool, np.floating)) else v) for k, v in metrics.items()}
    if rank == 0:
        with tempfile.TemporaryDirectory() as d:
            _save_state(Path(d), model, opt, step, epoch)
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
    """The saved training state of a checkpoint directory."""
    return dict(
        torch.load(Path(checkpoint_dir) / STATE_FILE, map_location="cpu", weights_only=False)
    )
