"""Pretraining without Ray: the same engine and methods on in-memory samples.

Used where a cluster is overkill or would blur a measurement: tests (does pretraining beat random
init?), the in-process SeCo of the fine-tuning evidence (:mod:`earthloop.finetune.quick_pretrain`),
the plain-PyTorch baseline of the Ray Train overhead benchmark, and notebooks. Batches are random
draws (without replacement within a batch) from the samples, seeded, as one long epoch.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from earthloop.config import PretrainConfig
from earthloop.pretrain.engine import Engine, Hooks, LossTerms, Schedule, probe_accuracy
from earthloop.pretrain.methods import Method, build_method
from earthloop.stream.reader import read_location

log = logging.getLogger("earthloop.pretrain")

__all__ = ["load_samples", "pretrain_in_memory", "train_in_memory"]


def load_samples(
    rows: Sequence[dict[str, Any]],
    bands: Sequence[str],
    dates: int,
    *,
    max_locations: int | None = None,
) -> dict[str, np.ndarray]:
    """Every location with ``dates`` readable seasons, in location order.

    ``images`` (N, T, C, H, W) float32, ``valid`` (N, T, H, W) and ``location_id`` (N,).
    """
    by_loc: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_loc.setdefault(r["location_id"], []).append(r)
    images: list[np.ndarray] = []
    valids: list[np.ndarray] = []
    ids: list[str] = []
    for loc in sorted(by_loc):
        if max_locations is not None and len(ids) >= max_locations:
            break
        s = read_location(by_loc[loc], list(bands), dates)
        if s is not None:
            images.append(s["images"])
            valids.append(s["valid"])
            ids.append(loc)
    if not images:
        raise ValueError(f"no location has {dates} readable seasons")
    return {
        "images": np.stack(images).astype(np.float32),
        "valid": np.stack(valids),
        "location_id": np.asarray(ids),
    }


class _History(Hooks):
    """Loss (and probe) after chosen steps: the in-process run's whole report."""

    def __init__(
        self,
        steps: int,
        every: int,
        probe: dict[str, np.ndarray] | None,
        k: int,
    ) -> None:
        self.steps, self.every, self.probe, self.k = steps, every, probe, k
        self.history: list[dict[str, float]] = []

    def record(self, engine: Engine, step: int, loss: float) -> None:
        entry = {"step": float(step), "loss": loss}
        if self.probe is not None:
            acc, estd, _ = probe_accuracy(
                engine.method.backbone, self.probe, engine.mean, engine.std, self.k, engine.device
            )
            entry.update(knn_accuracy=acc, embedding_std=estd)
        self.history.append(entry)

    def after_step(self, engine: Engine, terms: LossTerms) -> None:
        step = engine.pos.step
        if self.every and step % self.every == 0 or step == self.steps:
            self.record(engine, step, terms["loss"])
            if self.probe is not None:
                shown = {k: round(v, 3) for k, v in self.history[-1].items() if k != "step"}
                log.info("step %d/%d %s", step, self.steps, shown)
        elif step == 1:
            # the first step's loss, without a probe: a report's first/last loss pair needs a
            # first value, and the entry before training has none (one device read, once)
            self.history.append({"step": 1.0, "loss": terms["loss"]})


def _count(samples: dict[str, np.ndarray]) -> int:
    """Samples held: date series (``images``) or single chips (``image``)."""
    return len(samples["images"] if "images" in samples else samples["image"])


def _random_batches(
    samples: dict[str, np.ndarray], batch_size: int, steps: int, seed: int
) -> Iterator[dict[str, Tensor]]:
    rng = np.random.default_rng(seed)
    arrays = {k: v for k, v in samples.items() if v.dtype.kind in "fbiu"}
    n = _count(samples)
    for _ in range(steps):
        idx = rng.choice(n, size=batch_size, replace=False)
        yield {k: torch.from_numpy(v[idx]) for k, v in arrays.items()}


def train_in_memory(
    method: Method,
    samples: dict[str, np.ndarray],
    mean: Sequence[float],
    std: Sequence[float],
    *,
    steps: int,
    batch_size: int,
    seed: int = 0,
    probe: dict[str, np.ndarray] | None = None,
    probe_every: int = 0,
    k: int = 10,
    log_every_s: float = 30.0,
    device: torch.device | str | None = None,
) -> list[dict[str, float]]:
    """Train ``method`` for ``steps`` steps of random batches; returns the history.

    The history has an entry before training (loss NaN), the first step's loss, one every
    ``probe_every`` steps and after the last; with a ``probe`` those carry the kNN accuracy and
    embedding std (the first step's does not: it is there for its loss). The caller seeds torch
    before building ``method`` (its initial weights); ``seed`` drives the batch draws.
    ``device`` (default: the CPU) trains there as a Ray worker would: bf16 autocast and
    channels-last on a GPU. The method comes back on the CPU, ready to export.
    """
    dev = torch.device(device or "cpu")
    on_gpu = dev.type == "cuda"
    method.model.to(dev)
    if on_gpu:
        method.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    hooks = _History(steps, probe_every, probe, k)
    engine = Engine(
        method,
        Schedule(epochs=1, max_steps=steps, log_every_s=log_every_s, amp=on_gpu),
        mean=torch.tensor(list(mean), dtype=torch.float32),
        std=torch.tensor(list(std), dtype=torch.float32),
        device=dev,
        batch_size=min(batch_size, _count(samples)),
        hooks=hooks,
    )
    method.model.train()
    hooks.record(engine, 0, float("nan"))
    engine.run(lambda epoch: _random_batches(samples, engine.batch_size, steps, seed))
    if on_gpu:
        method.model.to(device="cpu", memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    return hooks.history


def pretrain_in_memory(
    samples: dict[str, np.ndarray],
    cfg: PretrainConfig,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    steps: int,
    probe: dict[str, np.ndarray] | None = None,
    probe_every: int = 0,
    k: int = 10,
    device: torch.device | str | None = None,
) -> tuple[Method, list[dict[str, float]]]:
    """Train the configured method for ``steps`` steps (on ``device``, default the CPU);
    returns the method, on the CPU, and its history."""
    torch.manual_seed(cfg.seed)
    method = build_method(cfg, len(mean))
    # the same refusals as a Ray run (e.g. a MoCo queue not smaller than an epoch): one "epoch"
    # here is a pass over the samples, and ``steps`` (not ``cfg.epochs``) is the run's length,
    # so the key-momentum warning is judged on the steps that will really run
    n = _count(samples)
    epochs = max(cfg.epochs, math.ceil(steps / max(1, n // cfg.batch_size)))
    method.check_data(cfg.model_copy(update={"max_steps": steps, "epochs": epochs}), n)
    history = train_in_memory(
        method,
        samples,
        mean,
        std,
        steps=steps,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        probe=probe,
        probe_every=probe_every,
        k=k,
        log_every_s=cfg.log_every_s,
        device=device,
    )
    return method, history
