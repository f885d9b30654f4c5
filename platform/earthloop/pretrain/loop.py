"""The Ray Train worker function: the pretraining engine fed by a dataset shard.

Everything about training lives in :mod:`earthloop.pretrain.engine`; this module only connects
it to Ray Train: the rank and device, the checkpoint Ray hands back on a restart, DDP, the
dataset shard, and ``ray.train.report``. Every rank reports at the same steps (Train V2 requires
it); rank 0 attaches the checkpoint, after every rank's RNG states were gathered into it.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import chain, islice
from typing import Any, Generic, TypeVar

import pyarrow as pa
import torch

from earthloop.checkpoints import save_checkpoint
from earthloop.config import PretrainConfig
from earthloop.pretrain.engine import (
    CHECKPOINT_FORMAT,
    Engine,
    Hooks,
    Schedule,
    gather_rng,
    resume_state,
)
from earthloop.pretrain.methods import build_method
from earthloop.store.delta import merge_rows

log = logging.getLogger("earthloop.pretrain")

__all__ = ["EpochSlices", "WorkerSetup", "train_loop"]

T = TypeVar("T")


@dataclass(frozen=True)
class WorkerSetup:
    """What every worker needs, decided on the driver (typed; travels pickled to the workers)."""

    pretrain: PretrainConfig
    mean: list[float]
    std: list[float]
    run_name: str
    job_name: str = "pretrain"
    probe_ref: Any = None  # a Ray object reference to the kNN probe set, or None
    cpus_per_worker: float = 1.0
    metrics_table: str | None = None
    prefetch: int = 4
    # the shard carries every epoch in one stream, cut into epochs of this many batches per
    # rank (runner.batches_per_epoch); None: the shard is one epoch, iterated once per epoch
    batches_per_epoch: int | None = None


class EpochSlices(Generic[T]):
    """``epoch → batches`` for :meth:`Engine.run`, cut by count from one stream of every epoch.

    Re-iterating a Ray dataset shard restarts its whole pipeline (the split coordinator shuts
    the executor down and builds a new one), so a per-epoch iterator pays the pipeline start at
    every epoch boundary (~60 % data wait over short demo epochs, issue 11). The stream here is
    started once; epoch e is its batches ``[e * per_epoch, (e + 1) * per_epoch)``, so the next
    epoch's first batch is already being read, and prefetched, while the current one drains.

    Resuming at epoch e (a fresh stream in a restarted worker) reads and discards the earlier
    epochs' batches, as the engine already does for the batches of the epoch in progress.
    """

    def __init__(self, stream: Callable[[], Iterable[T]], per_epoch: int) -> None:
        if per_epoch < 1:
            raise ValueError(f"per_epoch must be at least 1, got {per_epoch}")
        self._stream, self.per_epoch = stream, per_epoch
        self._it: Iterator[T] | None = None
        self._next = 0
        self.streams_started = 0
        self._warm: threading.Thread | None = None
        self._head: list[T] = []
        self._warm_error: BaseException | None = None

    def start(self) -> None:
        """Start the stream now and read its first batch in a background thread.

        Called before the model is built and wrapped for DDP, so the pipeline's start (reader
        processes, first COG opens: most of the first epoch's data wait, issue 11) overlaps the
        set-up instead of following it. A failure of that read is raised where the first batch
        is asked for, not here.
        """
        if self._it is not None:
            return
        it = iter(self._stream())
        self._it = it
        self.streams_started += 1

        def first() -> None:
            try:
                self._head = list(islice(it, 1))
            except BaseException as exc:  # re-raised in the training thread by __call__
                self._warm_error = exc

        self._warm = threading.Thread(target=first, name="earthloop-first-batch", daemon=True)
        self._warm.start()

    def _joined(self) -> Iterator[T]:
        if self._it is None:
            self.start()
        assert self._it is not None
        if self._warm is not None:
            self._warm.join()
            self._warm = None
            if self._warm_error is not None:
                raise self._warm_error
            self._it = chain(self._head, self._it)
            self._head = []
        return self._it

    def __call__(self, epoch: int) -> Iterator[T]:
        fresh = self._warm is not None or self._it is None
        it = self._joined()
        if fresh:
            skipped = sum(1 for _ in islice(it, epoch * self.per_epoch))
            if skipped:
                log.info("stream resumed at epoch %d: %d earlier batches skipped", epoch, skipped)
            self._next = epoch
        if epoch != self._next:
            raise ValueError(
                f"epoch {epoch} asked for after epoch {self._next - 1}: epochs run in order"
            )
        self._next = epoch + 1
        return islice(it, self.per_epoch)


class RayHooks(Hooks):
    """Checkpoints become ``ray.train.report`` calls; epoch metrics a ``pretrain_metrics`` row."""

    def __init__(self, train: Any, checkpoint_cls: Any, setup: WorkerSetup) -> None:
        self.train, self.checkpoint_cls, self.setup = train, checkpoint_cls, setup

    def checkpoint(self, engine: Engine, state: Any, metrics: dict[str, Any]) -> None:
        rngs = gather_rng(engine.method)  # a collective: every rank, before rank 0 saves
        if engine.rank != 0:
            self.train.report(metrics)
            return
        full = state(rngs)
        meta = {
            "step": full["step"],
            "epoch": full["epoch"],
            "batch_in_epoch": full["batch_in_epoch"],
        }
        with tempfile.TemporaryDirectory() as d:
            save_checkpoint(d, full, {**meta, "format": CHECKPOINT_FORMAT})
            self.train.report(metrics, checkpoint=self.checkpoint_cls.from_directory(d))
        engine.metrics.checkpoint_saved()

    def epoch_end(self, engine: Engine, metrics: dict[str, Any]) -> None:
        if self.setup.metrics_table:
            record_epoch(self.setup.metrics_table, self.setup.run_name, metrics)


def train_loop(config: dict[str, Any]) -> None:
    """``train_loop_per_worker`` for :class:`ray.train.torch.TorchTrainer`.

    ``config`` is ``{"setup": WorkerSetup}`` (Ray passes the trainer's config dict through).
    """
    # Ray is a heavy optional dependency of the library: imported only where a worker runs
    import ray
    import ray.train
    import ray.train.torch

    setup: WorkerSetup = config["setup"]
    pc = setup.pretrain
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(pc.seed + rank)
    # one intra-op thread per reserved CPU: more threads fight the Ray Data readers for cores
    torch.set_num_threads(max(1, int(setup.cpus_per_worker)))
    device = ray.train.torch.get_device()
    shard = ray.train.get_dataset_shard("train")
    # on a GPU, Ray pins each batch in its collate threads and moves it to the device without
    # blocking (device="auto"), so the step's upload finds it there (earthloop.models.on_device)
    pin = device.type == "cuda"
    slices: EpochSlices[dict[str, torch.Tensor]] | None = None
    if setup.batches_per_epoch:
        # the stream starts reading while the model is built and wrapped for DDP
        slices = EpochSlices(
            lambda: shard.iter_torch_batches(
                batch_size=max(1, pc.batch_size // world),
                drop_last=True,
                prefetch_batches=setup.prefetch,
                pin_memory=pin,
            ),
            setup.batches_per_epoch,
        )
        slices.start()
    # each rank draws its own dates/augmentations; the same seed everywhere would duplicate views
    method = build_method(pc, len(setup.mean), seed=pc.seed + 1000 * rank)
    if device.type == "cuda" and pc.amp:
        method.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    engine = Engine(
        method,
        Schedule.from_config(pc),
        mean=torch.tensor(setup.mean, dtype=torch.float32),
        std=torch.tensor(setup.std, dtype=torch.float32),
        device=device,
        batch_size=max(1, pc.batch_size // world),
        rank=rank,
        world=world,
        probe=ray.get(setup.probe_ref) if setup.probe_ref is not None else None,
        probe_k=pc.probe.k,
        job_name=setup.job_name,
        hooks=RayHooks(ray.train, ray.train.Checkpoint, setup),
    )
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        loaded = resume_state(ckpt.path, ckpt.filesystem, quiet=rank != 0)
        engine.restore(loaded.state)
        if rank == 0:
            p = engine.pos
            log.info(
                "resuming from checkpoint %s at step %d (epoch %d, %d batches of it consumed)",
                loaded.source.path,
                p.step,
                p.epoch,
                p.batch,
            )
    # broadcast_buffers=False: MoCo queues are all-gathered, hence already equal on every rank.
    method.distribute(
        lambda m: ray.train.torch.prepare_model(
            m, parallel_strategy_kwargs={"broadcast_buffers": False}
        )
    )
    if slices is not None:
        engine.run(slices)
    else:
        engine.run(
            lambda epoch: shard.iter_torch_batches(
                batch_size=engine.batch_size,
                drop_last=True,
                prefetch_batches=setup.prefetch,
                pin_memory=pin,
            )
        )


def record_epoch(uri: str, run_name: str, m: dict[str, Any]) -> None:
    """Upsert one row per (run, epoch): a resumed epoch overwrites, never duplicates."""
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
