"""Per-pixel uncertainty aggregated per chip: the shared core of ``entropy`` and ``margin``.

Why per pixel then per chip: a segmentation model is uncertain along field edges and in rare
classes, not uniformly; the chip mean says how much of the chip the annotator would correct.
The embed job stores the chip means (``predictions.mean_entropy`` / ``mean_margin``) so a round
need not re-read probability rasters; when per-pixel probabilities are at hand (tests, small
rounds) they are aggregated here with the same definitions.
"""

from __future__ import annotations

import numpy as np

__all__ = ["pixel_entropy", "pixel_margin", "chip_mean"]


def pixel_entropy(probs: np.ndarray, axis: int = 1) -> np.ndarray:
    """Shannon entropy (nats) of class probabilities along ``axis`` (classes)."""
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0)
    return np.asarray(-(p * np.log(p)).sum(axis=axis))


def pixel_margin(probs: np.ndarray, axis: int = 1) -> np.ndarray:
    """Top-1 minus top-2 probability along ``axis``: small margin = uncertain."""
    p = np.moveaxis(np.asarray(probs, dtype=np.float64), axis, -1)
    if p.shape[-1] < 2:
        return np.ones(p.shape[:-1])
    top2 = np.partition(p, p.shape[-1] - 2, axis=-1)[..., -2:]
    return np.asarray(top2[..., 1] - top2[..., 0])


def chip_mean(per_pixel: np.ndarray) -> np.ndarray:
    """Mean over every axis after the first (chip) axis."""
    a = np.asarray(per_pixel, dtype=np.float64)
    return np.asarray(a.reshape(len(a), -1).mean(axis=1))
