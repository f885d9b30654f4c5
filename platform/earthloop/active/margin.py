"""``margin``: label the chips whose pixels sit closest to a decision boundary.

Why margin next to entropy: it looks only at the two leading classes, so a pixel split between
exactly two covers (crop vs grass) counts as uncertain even when the other classes are ruled
out; entropy dilutes that case. Score = 1 − mean margin, so higher is always "label sooner".
"""

from __future__ import annotations

import numpy as np

from earthloop.active.base import Scores, ScoreStrategy
from earthloop.active.pool import Pool
from earthloop.active.uncertainty import chip_mean, pixel_margin

__all__ = ["MarginStrategy"]


class MarginStrategy(ScoreStrategy):
    """Score = 1 − mean per-pixel (top-1 − top-2) margin."""

    name = "margin"

    def scores(self, pool: Pool, rng: np.random.Generator) -> Scores:
        if pool.pixel_probs is not None:
            return Scores(1.0 - chip_mean(pixel_margin(pool.pixel_probs, axis=1)))
        return Scores(1.0 - pool.need("mean_margin", self.name).astype(np.float64))
