"""``hybrid``: spend the batch on uncertainty, under a diversity constraint.

Why: the most uncertain chips cluster (one confusing field type, one cloud-edge artefact), so
pure uncertainty fills a batch with redundant chips, while pure coverage ignores what the model
finds hard. Hybrid keeps only the ``pool_factor × n`` most uncertain candidates and then picks,
one at a time, the chip maximising uncertainty × distance to everything labelled, queued or
already picked (rank-scaled uncertainty in (0, 1], cosine distance). A chip next to a pick
loses its distance and waits; an isolated uncertain chip goes first.
"""

from __future__ import annotations

import numpy as np

from earthloop.active.base import Picked, ScoreStrategy, rank_normalise, ranking
from earthloop.active.constraints import BatchFilter
from earthloop.active.coverage import distance_to_covered
from earthloop.active.nn import IndexOptions
from earthloop.active.pool import Pool

__all__ = ["HybridStrategy"]


class HybridStrategy:
    """Uncertainty-weighted k-center greedy over the top uncertain candidates."""

    def __init__(
        self,
        uncertainty: ScoreStrategy,
        *,
        pool_factor: int = 10,
        options: IndexOptions | None = None,
    ) -> None:
        self.uncertainty = uncertainty
        self.pool_factor = pool_factor
        self.options = options or IndexOptions()
        self.name = f"hybrid({uncertainty.name})"
        self.index_kind = ""

    def select(self, pool: Pool, n: int, batch: BatchFilter, rng: np.random.Generator) -> Picked:
        emb = pool.need("embeddings", "hybrid")
        scores = self.uncertainty.scores(pool, rng)
        top = ranking(pool, scores, rng)[: max(n * self.pool_factor, n)]
        mask = np.zeros(len(pool), dtype=bool)
        mask[top] = True
        u = rank_normalise(scores.score, mask)[top]
        dist, self.index_kind = distance_to_covered(
            pool,
            top,
            self.options,
            seed=int(rng.integers(2**31)),
        )
        # nothing covered yet: distance carries no information, uncertainty alone decides first
        d = np.where(np.isfinite(dist), dist, 1.0).astype(np.float64)
        alive = np.ones(len(top), dtype=bool)
        top_e = emb[top]
        rows: list[int] = []
        values: list[float] = []
        while len(rows) < n and alive.any():
            objective = np.where(alive, u * d, -np.inf)
            j = int(np.argmax(objective))
            alive[j] = False
            i = int(top[j])
            if not batch.accepts(i):
                continue
            batch.add(i)
            rows.append(i)
            values.append(float(objective[j]))
            np.minimum(d, np.maximum(1.0 - top_e @ emb[i], 0.0), out=d)
        return Picked(np.asarray(rows, dtype=np.int64), np.asarray(values, dtype=np.float64))
