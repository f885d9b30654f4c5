"""Weighted mixes of scoring strategies (``strategies: [{name: entropy, weight: 2}, ...]``).

Why ranks: the scores live on unrelated scales (nats, divergences, 1 − margin), so each is
turned into its rank among the candidates before weighting; a weight then means "how much this
signal counts", whatever its units.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from earthloop.active.base import Scores, ScoreStrategy, rank_normalise
from earthloop.active.pool import Pool

__all__ = ["WeightedScores"]


class WeightedScores(ScoreStrategy):
    """Σ weight·rank(score) / Σ weight over the candidates."""

    def __init__(self, parts: Sequence[tuple[ScoreStrategy, float]]) -> None:
        if not parts:
            raise ValueError("a weighted mix needs at least one strategy")
        self.parts = list(parts)
        self.name = "+".join(f"{s.name}*{w:g}" for s, w in self.parts)

    def scores(self, pool: Pool, rng: np.random.Generator) -> Scores:
        mask = pool.candidates
        total = np.zeros(len(pool), dtype=np.float64)
        weight = 0.0
        for strategy, w in self.parts:
            total += w * rank_normalise(strategy.scores(pool, rng).score, mask)
            weight += w
        return Scores(total / weight)
