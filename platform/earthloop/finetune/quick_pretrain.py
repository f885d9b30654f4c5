"""A short SeCo pretraining in this process (plain torch, no Ray Train), for tests and evidence.

Why it exists next to the real pretraining stage: the question "does pretraining help at 1 %
labels" has to be asked in a test and in the evidence run without a 25 s Ray Train start-up and a
cluster. The model, loss and export are the production ones (:class:`earthloop.models.SeCo`,
:func:`earthloop.models.save_backbone`); only the loop is minimal. The data set is tiny, so the
date tuples of every usable location are read into memory once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from earthloop.models import SeCo, build_backbone, save_backbone
from earthloop.models.normalise import normalise
from earthloop.observe.progress import Progress
from earthloop.stream.reader import read_location

log = logging.getLogger("earthloop.finetune")

__all__ = ["quick_seco_pretrain", "seco_tuples"]


def seco_tuples(
    rows: Sequence[dict[str, Any]],
    bands: Sequence[str],
    dates: int = 3,
    max_locations: int | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(N, dates, C, H, W)`` reflectance, ``(N, dates, H, W)`` validity and location ids.

    Locations with fewer than ``dates`` readable seasons are skipped.
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
        sample = read_location(by_loc[loc], list(bands), dates)
        if sample is None:
            continue
        images.append(sample["images"])
        valids.append(sample["valid"])
        ids.append(loc)
    if not ids:
        raise ValueError(f"no location has {dates} readable seasons")
    return np.stack(images).astype(np.float32), np.stack(valids), ids


def quick_seco_pretrain(
    images: np.ndarray,
    valid: np.ndarray,
    out: str | Path,
    *,
    arch: str,
    bands: Sequence[str],
    mean: Sequence[float],
    std: Sequence[float],
    steps: int,
    batch_size: int = 32,
    lr: float = 0.03,
    queue_size: int = 1024,
    temperature: float = 0.07,
    key_momentum: float = 0.99,
    seed: int = 0,
    log_every_s: float = 30.0,
) -> Path:
    """SeCo for ``steps`` SGD steps on in-memory date tuples; exports ``backbone.pt`` to ``out``.

    ``key_momentum`` defaults to 0.99 rather than the paper's 0.999: with a few hundred steps a
    0.999 key encoder barely moves from its random start and the queue holds stale keys.
    """
    torch.manual_seed(seed)
    t, c = images.shape[1], images.shape[2]
    data = normalise(torch.from_numpy(images), mean, std, torch.from_numpy(valid))
    model = SeCo(
        build_backbone(arch, c),
        queue_size=queue_size,
        temperature=temperature,
        momentum=key_momentum,
        seed=seed,
    )
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))
    rng = np.random.default_rng(seed)
    bs = min(batch_size, len(data))
    model.train()
    with Progress(
        "quick SeCo pretraining", steps, unit="steps", every_s=log_every_s, logger=log
    ) as progress:
        for _ in range(steps):
            idx = torch.from_numpy(rng.choice(len(data), size=bs, replace=False))
            out_ = model({"images": data[idx]})
            opt.zero_grad(set_to_none=True)
            out_["loss"].backward()
            opt.step()
            sched.step()
            progress.update(1, loss=float(out_["loss"].detach()))
    assert t >= 3
    return save_backbone(
        out,
        model.backbone,
        arch=arch,
        bands=list(bands),
        mean=list(mean),
        std=list(std),
        method="seco",
        extra={"quick_pretrain": True, "steps": steps, "locations": len(data)},
    )
