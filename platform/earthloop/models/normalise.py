"""Per-band standardisation of Sentinel-2 chips, and the band statistics it uses.

One definition for every stage: pretraining normalises its batches with it, the exported backbone
carries the statistics, and fine-tuning, prediction maps and the labeling loop normalise with the
same function and those statistics, so a model never sees pixels scaled differently from those
it was trained on. Invalid pixels (clouds, nodata) become 0, the band mean, never NaN.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["MIN_STD", "normalise", "pixel_statistics"]

MIN_STD = 1e-4  # a constant band (all-zero nodata, a saturated sample) must not divide by 0


def normalise(
    x: Tensor,
    mean: Tensor | Sequence[float],
    std: Tensor | Sequence[float],
    valid: Tensor | None = None,
) -> Tensor:
    """``(x - mean) / std`` per band (the axis ``-3`` of ``(..., C, H, W)``), invalid pixels 0.

    ``valid`` is ``(..., H, W)`` (bool or 0/1). Raises ``ValueError`` when the band counts of
    ``x`` and the statistics differ: broadcasting would otherwise hide a shuffled band list.
    """
    m = torch.as_tensor(mean, dtype=x.dtype if x.is_floating_point() else torch.float32)
    s = torch.as_tensor(std, dtype=m.dtype)
    if x.ndim < 3 or x.shape[-3] != m.numel():
        raise ValueError(
            f"images have {tuple(x.shape)} (bands at -3), normalisation has {m.numel()}"
        )
    shape = [1] * x.ndim
    shape[-3] = -1
    out = (x - m.to(x.device).view(shape)) / s.to(x.device).view(shape)
    if valid is not None:
        out = out * valid.unsqueeze(-3).to(out.dtype)
    return out


def pixel_statistics(
    chips: Iterable[tuple[np.ndarray, np.ndarray]], num_bands: int
) -> tuple[list[float], list[float]]:
    """Per-band mean/std over the valid pixels of ``(image (C, H, W), valid (H, W))`` pairs.

    Streams: one chip's pixels at a time in float64 sums, so a sample of large chips never sits
    in memory at once. Which chips make the sample is the caller's choice (any split of the
    index for pretraining, the train split of the labelled pool for fine-tuning).
    """
    sums = np.zeros(num_bands)
    sq = np.zeros(num_bands)
    n = 0
    for image, valid in chips:
        px = image[:, valid].astype(np.float64)
        sums += px.sum(axis=1)
        sq += (px**2).sum(axis=1)
        n += px.shape[1]
    if n == 0:
        raise ValueError("no valid pixel in the statistics sample; is every chip cloudy?")
    mean = sums / n
    std = np.sqrt(np.maximum(sq / n - mean**2, 1e-12))
    return mean.tolist(), np.maximum(std, MIN_STD).tolist()
