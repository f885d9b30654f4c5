"""``random``: the baseline every other strategy has to beat.

Why keep it: label savings are only meaningful against uniform sampling under the same batch
constraints, and a seeded random batch is the honest control for the learning-curve benchmark.
"""

from __future__ import annotations

import numpy as np

from earthloop.active.base import Scores, ScoreStrategy
from earthloop.active.pool import Pool

__all__ = ["RandomStrategy"]


class RandomStrategy(ScoreStrategy):
    """Uniform scores from the round's seeded generator."""

    name = "random"

    def scores(self, pool: Pool, rng: np.random.Generator) -> Scores:
        return Scores(rng.random(len(pool)))
