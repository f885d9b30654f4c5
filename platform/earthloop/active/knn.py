"""``knn``: label the chips whose nearest labelled neighbours disagree.

Why: in a good embedding space neighbours share a class. Where the labelled neighbours of an
unlabelled chip carry different labels, the chip lies on a boundary the labels have found but
not resolved, and this holds even for a model that is confidently wrong (which entropy misses).
Score = Jensen–Shannon divergence of the ``k`` neighbours' label vectors (for one-hot labels
the entropy of the vote shares); a chip whose neighbours all agree scores 0.
"""

from __future__ import annotations

import numpy as np

from earthloop.active.base import Scores, ScoreStrategy, js_divergence
from earthloop.active.nn import IndexOptions, index_over
from earthloop.active.pool import Pool

__all__ = ["KnnStrategy"]


class KnnStrategy(ScoreStrategy):
    """k-nearest labelled neighbours (cosine) of every candidate; score = their disagreement."""

    name = "knn"

    def __init__(self, *, k: int = 10, options: IndexOptions | None = None) -> None:
        self.k = k
        self.options = options or IndexOptions()
        self.index_kind = ""

    def scores(self, pool: Pool, rng: np.random.Generator) -> Scores:
        emb = pool.need("embeddings", self.name)
        vectors = pool.need("label_vectors", self.name)
        ref_rows = np.flatnonzero(pool.labelled & (vectors.sum(axis=1) > 0))
        score = np.zeros(len(pool), dtype=np.float64)
        if len(ref_rows) < 2:
            return Scores(score)  # nothing to disagree about yet: every chip ties
        queries = np.flatnonzero(pool.candidates)
        index = index_over(emb, ref_rows, len(queries), self.options, int(rng.integers(2**31)))
        self.index_kind = index.kind
        _, nbr = index.search(emb, self.k, rows=queries, label="knn neighbours")
        ref_vectors = vectors[ref_rows]
        chunk = 65536
        for s in range(0, len(queries), chunk):
            part = nbr[s : s + chunk]
            votes = ref_vectors[np.maximum(part, 0)]
            score[queries[s : s + chunk]] = js_divergence(votes, weights=(part >= 0).astype(float))
        return Scores(score)
