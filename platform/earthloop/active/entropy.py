"""``entropy``: label the chips whose pixels the model is least sure of.

Why entropy: it counts doubt across all classes, so it prefers pixels torn between several
land covers, which is where a few labels move the decision boundary most.
"""

from __future__ import annotations

import numpy as np

from earthloop.active.base import Scores, ScoreStrategy
from earthloop.active.pool import Pool
from earthloop.active.uncertainty import chip_mean, pixel_entropy

__all__ = ["EntropyStrategy"]


class EntropyStrategy(ScoreStrategy):
    """Score = mean per-pixel entropy: from per-pixel probabilities when the pool has them
    (``pixel_probs``, classes on axis 1), else ``predictions.mean_entropy``."""

    name = "entropy"

    def scores(self, pool: Pool, rng: np.random.Generator) -> Scores:
        if pool.pixel_probs is not None:
            return Scores(chip_mean(pixel_entropy(pool.pixel_probs, axis=1)))
        return Scores(pool.need("mean_entropy", self.name).astype(np.float64))
