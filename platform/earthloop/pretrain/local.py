"""Pretraining without Ray: the same method modules on in-memory samples.

Used where a cluster is overkill or would blur a measurement: unit tests (does pretraining beat
random init?), the plain-PyTorch baseline of the Ray Train overhead benchmark, and notebooks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from earthloop.pretrain.loop import probe_accuracy
from earthloop.pretrain.methods import build_method, build_optimizer, method_inputs

log = logging.getLogger("earthloop.pretrain")


def load_samples(
    rows: Sequence[dict[str, Any]], bands: Sequence[str], dates: int, seed: int = 0
) -> dict[str, np.ndarray]:
    """Every location with ``dates`` seasons as (N, T, C, H, W) images and (N, T, H, W) masks."""
    from earthloop.stream.reader import read_location

    by_loc: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_loc.setdefault(r["location_id"], []).append(r)
    images, valids = [], []
    for loc in sorted(by_loc):
        s = read_location(by_loc[loc], bands, dates)
        if s is not None:
            images.append(s["images"])
            valids.append(s["valid"])
    if not images:
        raise ValueError(f"no location has {dates} readable seasons")
    return {"images": np.stack(images), "valid": np.stack(valids)}


def pretrain_in_memory(
    samples: dict[str, np.ndarray],
    pc: dict[str, Any],
    mean: Sequence[float],
    std: Sequence[float],
    *,
    steps: int,
    probe: dict[str, np.ndarray] | None = None,
    probe_every: int = 0,
    k: int = 10,
) -> tuple[torch.nn.Module, list[dict[str, float]]]:
    """Train ``pc['method']`` for ``steps`` steps on random batches; returns model and history."""
    torch.manual_seed(pc["seed"])
    rng = np.random.default_rng(pc["seed"])
    model = build_method(pc, len(mean))
    opt = build_optimizer(model, pc)
    m = torch.tensor(mean, dtype=torch.float32)
    s = torch.tensor(std, dtype=torch.float32)
    history: list[dict[str, float]] = []
    device = torch.device("cpu")

    def record(step: int, loss: float) -> None:
        entry = {"step": float(step), "loss": loss}
        if probe is not None:
            acc, estd, _ = probe_accuracy(model.backbone, probe, m, s, k, device)  # type: ignore[arg-type]
            entry.update(knn_accuracy=acc, embedding_std=estd)
        history.append(entry)

    record(0, float("nan"))
    n = len(samples["images"])
    bs = min(pc["batch_size"], n)
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        idx = rng.choice(n, size=bs, replace=False)
        batch = {k_: torch.from_numpy(v[idx]) for k_, v in samples.items()}
        out = model(method_inputs(pc["method"], batch, m, s))
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        if probe_every and step % probe_every == 0 or step == steps:
            record(step, float(out["loss"].detach()))
            log.info(
                "step %d/%d loss %.3f %s (%.1f steps/s)",
                step,
                steps,
                history[-1]["loss"],
                {k_: round(v, 3) for k_, v in history[-1].items() if k_ not in {"step", "loss"}},
                step / (time.perf_counter() - t0),
            )
    return model, history
