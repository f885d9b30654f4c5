"""The one pretraining engine: epochs of batches in, optimiser steps, checkpoints and metrics out.

It runs under Ray Train (:mod:`earthloop.pretrain.loop` feeds it a dataset shard and reports
its checkpoints) and in this process (:mod:`earthloop.pretrain.local`: random in-memory batches,
no checkpoints). What differs between the two is only where batches come from and what happens
to a checkpoint or an epoch's metrics, which is the :class:`Hooks` the caller passes; the
training itself, and so its numbers, is the same code.

Design choices that matter to users:
- checkpoints every ``checkpoint_every`` steps and at each epoch's end, so a killed worker or node
  costs at most that many steps. A checkpoint holds exactly what an identical continuation needs:
  the method's state (for SeCo the query encoder, its momentum key encoder and the negative
  queues), the optimiser state, the position in the data (epoch and batches consumed in it; the
  learning rate follows from it), the epoch's running loss sums and every rank's RNG states;
- resume continues *inside* the epoch: the batches the checkpoint already consumed are skipped
  (read, not trained on; the per-epoch order must be deterministic, see ``runner.data_config``),
  so a resumed run takes exactly as many steps as an uninterrupted one and each epoch ends at the
  same step;
- checkpoints load with ``torch.load(weights_only=True)`` (plain values only) and a broken newest
  one falls back to the newest that loads (:mod:`earthloop.checkpoints`), naming the broken file;
- the step time is split into data wait and compute, so a starving input pipeline is visible;
- a step never reads a value back from the device: loss terms stay there (:class:`LossTerms`)
  and are read every ``Schedule.loss_every_s`` seconds, at checkpoints and at the epoch's end, so
  on a GPU the host queues step n+1 while step n runs;
- each epoch ends with the collapse watch (embedding std, alignment/uniformity, kNN probe).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from earthloop.checkpoints import (
    STATE_FILE,
    CheckpointError,
    Loaded,
    load_newest,
    load_state_file,
    with_siblings,
)
from earthloop.config import PretrainConfig
from earthloop.models.metrics import embedding_std, is_collapsed, knn_accuracy, uniformity
from earthloop.models.normalise import normalise
from earthloop.models.on_device import upload
from earthloop.observe.progress import Progress
from earthloop.observe.recorders import StreamMetrics, TrainMetrics
from earthloop.pretrain.methods import Method

log = logging.getLogger("earthloop.pretrain")

CHECKPOINT_FORMAT = 2  # 1: no data position (resume replayed the epoch), pickled loading

__all__ = [
    "CHECKPOINT_FORMAT",
    "Engine",
    "Hooks",
    "Position",
    "Schedule",
    "load_state",
    "probe_accuracy",
    "resume_state",
]


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


@dataclass(frozen=True)
class Schedule:
    """How long to train and how often to checkpoint and log (``checkpoint_every=0``: never)."""

    epochs: int
    max_steps: int | None = None
    checkpoint_every: int = 0
    log_every_s: float = 10.0
    amp: bool = True
    # how often the loss terms are read back for the progress line and the Prometheus gauges;
    # each read waits for the device (LossTerms)
    loss_every_s: float = 5.0

    @classmethod
    def from_config(cls, cfg: PretrainConfig) -> Schedule:
        return cls(cfg.epochs, cfg.max_steps, cfg.checkpoint_every, cfg.log_every_s, cfg.amp)


def rng_state(method: Method) -> dict[str, Any]:
    """This process's RNG states: torch's global one and the method's private generator."""
    return {"torch": torch.get_rng_state(), "method": method.rng_state()}


def set_rng_state(method: Method, state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    method.set_rng_state(state.get("method"))


def gather_rng(method: Method) -> list[dict[str, Any]]:
    """Every rank's RNG states, in rank order (a collective: all ranks call it together)."""
    mine = rng_state(method)
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [mine]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, mine)
    return out


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


def load_state(checkpoint_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The saved training state of a local checkpoint directory (``weights_only=True``)."""
    return load_state_file(Path(checkpoint_dir) / STATE_FILE)


class LossTerms(Mapping[str, float]):
    """One step's scalar loss terms, left on the device until a value is read.

    Reading a CUDA tensor's value makes the host wait for every kernel queued so far. Done each
    step (the engine did: ``float()`` per term) it stops the host from queueing step n+1 (its
    batch copy, its augmentations) while the GPU runs step n: one of the causes of SeCo's 29 %
    GPU utilisation (docs/benchmarks.md). Reading any term reads them all, in one transfer; the
    values are then kept. ``in`` and iteration look at the names only and never read.
    """

    def __init__(self, tensors: Mapping[str, Tensor]) -> None:
        self.tensors = {k: v.detach() for k, v in tensors.items()}
        self._values: dict[str, float] | None = None

    @property
    def is_read(self) -> bool:
        return self._values is not None

    def read(self) -> dict[str, float]:
        if self._values is None:
            keys = list(self.tensors)
            values = torch.stack([self.tensors[k].float() for k in keys]).tolist() if keys else []
            self._values = dict(zip(keys, values, strict=True))
        return self._values

    def __getitem__(self, key: str) -> float:
        if key not in self.tensors:
            raise KeyError(key)
        return self.read()[key]

    def __contains__(self, key: object) -> bool:
        return key in self.tensors

    def __iter__(self) -> Iterator[str]:
        return iter(self.tensors)

    def __len__(self) -> int:
        return len(self.tensors)


class Hooks:
    """What the engine's host does with checkpoints and metrics; the defaults do nothing.

    ``checkpoint`` is called on every rank at the same steps (Ray Train requires every rank to
    report together); ``state`` builds the checkpoint's content from the RNG states the host
    gathered. ``after_step`` sees each step's loss terms; reading one waits for the device, so
    read them only on the steps that need a value. ``epoch_end`` sees the epoch's metrics.
    """

    def after_step(self, engine: Engine, terms: LossTerms) -> None:
        pass

    def checkpoint(
        self,
        engine: Engine,
        state: Callable[[list[dict[str, Any]]], dict[str, Any]],
        metrics: dict[str, Any],
    ) -> None:
        pass

    def epoch_end(self, engine: Engine, metrics: dict[str, Any]) -> None:
        pass


@dataclass
class _Clock:
    """One epoch's data-wait and compute time, and where in its batch order we are.

    ``wait_s`` is only the time spent blocked on the stream for the next batch. What happens
    between a step and the next fetch (hooks, progress, mid-epoch checkpoints, which wait on
    every rank) is ``bookkeeping_s``: counted as data wait, a checkpoint's upload showed as
    70-78 % data wait in the demo's epochs that held one, while the stream was ahead.
    """

    wait_s: float = 0.0
    compute_s: float = 0.0
    bookkeeping_s: float = 0.0
    first_wait_s: float = 0.0
    timed: int = 0  # batches trained in this process (throughput)
    consumed: int = 0  # position in this epoch's (deterministic) batch order
    t_prev: float = field(default_factory=time.perf_counter)

    def wait_fraction(self, steady: bool = False) -> float:
        wait = self.wait_s - (self.first_wait_s if steady else 0.0)
        return wait / max(wait + self.compute_s, 1e-9)


class Engine:
    """Trains one :class:`Method` on this rank: steps, epochs, resume, checkpoints, metrics."""

    def __init__(
        self,
        method: Method,
        schedule: Schedule,
        *,
        mean: Tensor,
        std: Tensor,
        device: torch.device,
        batch_size: int,
        rank: int = 0,
        world: int = 1,
        probe: dict[str, np.ndarray] | None = None,
        probe_k: int = 10,
        job_name: str = "pretrain",
        hooks: Hooks | None = None,
    ) -> None:
        self.method, self.schedule = method, schedule
        self.mean, self.std, self.device = mean, std, device
        # the batch is normalised where it trains (on a GPU: not by the host, per step)
        self._mean_on_device, self._std_on_device = upload(mean, device), upload(std, device)
        self.batch_size, self.rank, self.world = batch_size, rank, world
        self.probe, self.probe_k = probe, probe_k
        self.hooks = hooks or Hooks()
        self.opt = method.optimizer()
        self.pos = Position()
        self.resumed_from = 0
        # running sums of the epoch's loss terms, on the device (read at checkpoints)
        self._loss_sums: dict[str, Tensor | float] = {}
        self.epoch_batches = 0
        self._loss_read_t = time.perf_counter()
        self.metrics = TrainMetrics(job_name, rank=rank)
        self.stream_metrics = StreamMetrics(job_name)
        on_gpu = device.type == "cuda" and schedule.amp
        self.autocast: AbstractContextManager[Any] = (
            torch.autocast("cuda", dtype=torch.bfloat16)
            if on_gpu
            else torch.autocast("cpu", enabled=False)
        )
        # rank 0 speaks for the group: samples of every rank, one line per log_every_s
        self.progress = Progress(
            "pretrain",
            schedule.max_steps * batch_size * world if schedule.max_steps else None,
            unit="samples",
            every_s=schedule.log_every_s,
            logger=log,
            level=logging.INFO if rank == 0 else logging.DEBUG,
        )

    @property
    def epoch_losses(self) -> dict[str, float]:
        """The epoch's loss sums so far, read from the device (a sync each: at checkpoints and
        the epoch's end, never per step). Restored sums are host floats until a step adds to
        them, so the values may live on both sides."""
        return {k: float(v) for k, v in self._loss_sums.items()}

    @epoch_losses.setter
    def epoch_losses(self, sums: Mapping[str, float]) -> None:
        self._loss_sums = {str(k): float(v) for k, v in sums.items()}

    # -- checkpoint state ---------------------------------------------------------------------

    def training_state(
        self, pos: Position, losses: dict[str, float], batches: int, rngs: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """Everything an identical continuation needs, as tensors and plain values.

        Nothing is stored twice: the method's state (for SeCo: query encoder, momentum key
        encoder, queues) and the optimiser's own state (SGD momentum). The key encoder is an
        average over ~1/(1-momentum) steps and cannot be rebuilt from the query encoder, and
        dropping the optimiser momentum would change the next steps, so both stay
        (docs/methods.md, "Checkpoints and resume").
        """
        state: dict[str, Any] = {
            "format": CHECKPOINT_FORMAT,
            "model": self.method.state_dict(),
            "optimizer": self.opt.state_dict(),
            "step": pos.step,
            "epoch": pos.epoch,
            "batch_in_epoch": pos.batch,
            "epoch_losses": {k: float(v) for k, v in losses.items()},
            "epoch_batches": int(batches),
            "rng": rngs,
        }
        return state

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint's state (model, optimiser, data position, RNG, losses).

        Checkpoints of format 1 (no data position) resume at their epoch's start, as they always
        did. RNG states are restored when the checkpoint was written by as many ranks as now.
        """
        self.method.load_state_dict(state["model"])
        # the learning rate is a function of the position (Method.lr_at); a "scheduler" entry
        # of older checkpoints is not needed
        self.opt.load_state_dict(state["optimizer"])
        self.pos = Position(
            int(state["step"]), int(state["epoch"]), int(state.get("batch_in_epoch", 0))
        )
        self.resumed_from = self.pos.step
        rngs = state.get("rng") or []
        if len(rngs) == self.world:
            set_rng_state(self.method, rngs[self.rank])
        elif rngs and self.rank == 0:
            log.info(
                "checkpoint has RNG states of %d ranks, now %d: fresh RNG streams",
                len(rngs),
                self.world,
            )
        self.epoch_losses = dict(state.get("epoch_losses", {}))
        self.epoch_batches = int(state.get("epoch_batches", 0))

    def _checkpoint(self, pos: Position, metrics: dict[str, Any], *, fresh: bool = False) -> None:
        """Hand a checkpoint at ``pos`` to the hooks; ``fresh``: the next epoch starts at zero."""
        losses = {} if fresh else dict(self.epoch_losses)
        batches = 0 if fresh else self.epoch_batches

        def state(rngs: list[dict[str, Any]]) -> dict[str, Any]:
            return self.training_state(pos, losses, batches, rngs)

        clean = {
            k: (float(v) if isinstance(v, bool | np.floating) else v) for k, v in metrics.items()
        }
        self.hooks.checkpoint(self, state, clean)

    # -- training -----------------------------------------------------------------------------

    def run(self, epoch_batches: Callable[[int], Iterable[dict[str, Tensor]]]) -> Position:
        """Train from the current position to the schedule's end; returns where it stopped.

        ``epoch_batches(epoch)`` yields that epoch's batches, in the same order every time it is
        called for the same epoch (resume skips the ones already trained on).
        """
        max_steps = self.schedule.max_steps or math.inf
        start = self.pos
        for epoch in range(start.epoch, self.schedule.epochs):
            if self.pos.step >= max_steps:
                break
            skip = start.batch if epoch == start.epoch else 0
            if epoch != start.epoch:
                self.epoch_losses, self.epoch_batches = {}, 0
            if skip and self.rank == 0:
                log.info(
                    "epoch %d: skipping the %d batches the checkpoint already trained on",
                    epoch,
                    skip,
                )
            clock = _Clock()
            complete = self._epoch(epoch, epoch_batches(epoch), skip, clock, max_steps)
            self._end_epoch(epoch, clock, complete)
        return self.pos

    def _epoch(
        self,
        epoch: int,
        batches: Iterable[dict[str, Tensor]],
        skip: int,
        clock: _Clock,
        max_steps: float,
    ) -> bool:
        """Train one epoch's batches; ``False`` when ``max_steps`` stopped it part-way."""
        clock.t_prev = time.perf_counter()
        for batch in batches:
            if clock.consumed < skip:
                clock.consumed += 1
                clock.t_prev = time.perf_counter()
                continue
            t_got = time.perf_counter()
            clock.wait_s += t_got - clock.t_prev
            if clock.timed == 0:
                clock.first_wait_s = t_got - clock.t_prev  # pipeline start-up, reported apart
            terms, samples = self.step(batch)
            clock.consumed += 1
            clock.timed += 1
            clock.t_prev = time.perf_counter()
            clock.compute_s += clock.t_prev - t_got
            read = clock.t_prev - self._loss_read_t >= self.schedule.loss_every_s
            if read:
                self._loss_read_t = clock.t_prev
                self.progress.set_fields(loss=terms.get("loss", float("nan")))
            self.metrics.step(
                seconds=clock.t_prev - t_got, samples=samples, losses=terms if read else None
            )
            self.stream_metrics.data_wait(clock.wait_fraction())
            self.hooks.after_step(self, terms)
            self._log_progress(epoch, clock)
            step = self.pos.step
            if self.schedule.checkpoint_every and step % self.schedule.checkpoint_every == 0:
                loss = terms.get("loss", float("nan"))
                self._checkpoint(
                    Position(step, epoch, clock.consumed),
                    {"step": step, "epoch": epoch, "loss": loss}
                    | {"resumed_from_step": self.resumed_from, "kind": "step"},
                )
            t_done = time.perf_counter()
            clock.bookkeeping_s += t_done - clock.t_prev
            clock.t_prev = t_done
            if step >= max_steps:
                return False
        return True

    def training_progress(self) -> float:
        """Fraction of training done before the next step: epochs done, or steps of max_steps.

        Per epoch, as the reference SeCo schedule; ``max_steps`` (when it ends training sooner)
        advances it per step.
        """
        done = self.pos.epoch / max(self.schedule.epochs, 1)
        if self.schedule.max_steps:
            done = max(done, self.pos.step / self.schedule.max_steps)
        return done

    def step(self, batch: dict[str, Tensor]) -> tuple[LossTerms, int]:
        """One optimiser step on ``batch``; returns its loss terms and its number of samples.

        Nothing here waits for the device (tests/pretrain/test_device_syncs.py): the raw batch
        goes up with ``non_blocking`` (a plain ``.to()`` of a host tensor waits for every kernel
        queued before it copies) and is normalised there, and the loss terms stay on the device.
        """
        on_device = {k: upload(v, self.device) for k, v in batch.items()}
        inputs = self.method.inputs(on_device, self._mean_on_device, self._std_on_device)
        with self.autocast:
            out = self.method.loss(inputs)
        self.opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        lr = self.method.lr_at(self.training_progress())
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.opt.step()
        self.pos.step += 1
        self.epoch_batches += 1
        terms = LossTerms({k: v for k, v in out.items() if k.startswith("loss") and v.ndim == 0})
        for k, v in terms.tensors.items():
            self._loss_sums[k] = self._loss_sums.get(k, 0.0) + v.float()
        return terms, int(next(iter(inputs.values())).shape[0])

    def _log_progress(self, epoch: int, clock: _Clock) -> None:
        """Count the step; the line shows the loss last read (every ``loss_every_s``)."""
        self.progress.update(
            self.batch_size * self.world,
            step=self.pos.step,
            epoch=epoch,
            data_wait=f"{clock.wait_fraction():.0%}",
        )

    # -- end of epoch: collapse watch and a checkpoint at the epoch boundary --------------------

    def _end_epoch(self, epoch: int, clock: _Clock, complete: bool) -> None:
        step, batches = self.pos.step, self.epoch_batches
        metrics: dict[str, Any] = {
            "step": step,
            "epoch": epoch + 1,
            "kind": "epoch",
            "resumed_from_step": self.resumed_from,
            "world_size": self.world,
            "batches": batches,
            "data_wait_fraction": clock.wait_fraction(),
            "data_wait_steady_fraction": clock.wait_fraction(steady=True),
            "samples_per_s": clock.timed
            * self.batch_size
            * self.world
            / max(clock.wait_s + clock.compute_s, 1e-9),
            "bookkeeping_s": clock.bookkeeping_s,
            **{k: v / max(batches, 1) for k, v in self.epoch_losses.items()},
        }
        if self.probe is not None and self.rank == 0:
            metrics.update(self._collapse_watch())
        self.metrics.epoch(epoch + 1)
        if self.rank == 0:
            shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()}
            log.info("epoch %d done: %s", epoch + 1, shown)
            self.hooks.epoch_end(self, metrics)
        # stopped by max_steps inside the epoch: the position stays inside it, so a later run
        # with a larger max_steps continues the epoch instead of skipping its rest
        self.pos = (
            Position(step, epoch + 1, 0) if complete else Position(step, epoch, clock.consumed)
        )
        self._checkpoint(self.pos, metrics, fresh=complete)

    def _collapse_watch(self) -> dict[str, Any]:
        backbone = self.method.backbone
        acc, estd, unif = probe_accuracy(
            backbone, self.probe or {}, self.mean, self.std, self.probe_k, self.device
        )
        collapsed = is_collapsed(estd, int(backbone.num_features))
        self.metrics.knn_accuracy(acc)
        self.metrics.embedding_std(estd)
        self.metrics.collapsed(collapsed)
        if collapsed:
            log.warning("embedding collapse: std %.4f (≈0 means every chip maps alike)", estd)
        return {
            "knn_accuracy": acc,
            "embedding_std": estd,
            "uniformity": unif,
            "collapsed": collapsed,
        }
