"""A short SeCo pretraining in this process (no Ray Train), for tests and evidence.

Why it exists next to the real pretraining stage: the question "does pretraining help at 1 %
labels" has to be asked in a test and in the evidence run without a 25 s Ray Train start-up and a
cluster. Method, engine and export are the production ones (:class:`SeCoMethod` trained by the
in-process engine of :mod:`earthloop.pretrain.local`, :func:`earthloop.models.save_backbone`);
only the recipe differs: a cosine learning-rate decay over the few steps, an explicit learning rate
(not scaled with the batch) and a key momentum of 0.99. The data set is tiny, so the date tuples
of every usable location are read into memory once. As in the Ray stage, a negative queue that is
not smaller than the number of locations is refused (:func:`check_queue`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from earthloop.models import save_backbone
from earthloop.pretrain.local import load_samples, train_in_memory
from earthloop.pretrain.methods import SeCoMethod, check_queue, key_momentum_warning

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
    s = load_samples(rows, bands, dates, max_locations=max_locations)
    return s["images"], s["valid"], [str(i) for i in s["location_id"]]


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
    queue_size: int | None = None,
    temperature: float = 0.07,
    key_momentum: float = 0.99,
    seed: int = 0,
    log_every_s: float = 30.0,
) -> Path:
    """SeCo for ``steps`` SGD steps on in-memory date tuples; exports ``backbone.pt`` to ``out``.

    ``key_momentum`` defaults to 0.99 rather than the paper's 0.999: with a few hundred steps a
    0.999 key encoder barely moves from its random start and the queue holds stale keys.
    ``queue_size`` defaults to the largest power of two below the number of locations (at most
    the paper's 16384); a larger one is refused.

    Raises:
        ConfigError: a queue not smaller than the number of locations.
    """
    if images.shape[1] < 3:
        raise ValueError(f"SeCo needs 3 dates per location, got {images.shape[1]}")
    n = len(images)
    if queue_size is None:
        queue_size = min(16384, 2 ** max(0, math.ceil(math.log2(max(n, 2))) - 1))
    check_queue(queue_size, n)
    warning = key_momentum_warning(key_momentum, steps)
    if warning:
        log.warning("%s", warning)
    torch.manual_seed(seed)
    method = SeCoMethod(
        arch,
        images.shape[2],
        queue_size=queue_size,
        temperature=temperature,
        key_momentum=key_momentum,
        seed=seed,
        lr=lr,
        lr_schedule="cosine",
    )
    history = train_in_memory(
        method,
        {"images": images.astype(np.float32, copy=False), "valid": valid},
        mean,
        std,
        steps=steps,
        batch_size=batch_size,
        seed=seed,
        log_every_s=log_every_s,
    )
    log.info("quick SeCo pretraining: %d steps, final loss %.4f", steps, history[-1]["loss"])
    return save_backbone(
        out,
        method.backbone,
        arch=arch,
        bands=list(bands),
        mean=list(mean),
        std=list(std),
        method="seco",
        extra={"quick_pretrain": True, "steps": steps, "locations": len(images)},
    )
