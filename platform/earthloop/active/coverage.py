"""Distance of each chip to the nearest chip already covered (labelled or queued).

Why shared: coreset and hybrid both measure what a new label would add as the cosine distance
from the chip to everything the model already has labels (or pending labels) for. That first
distance is a nearest-neighbour search of the candidates against the covered set; after it,
each pick only lowers distances (min with the distance to the new pick).
"""

from __future__ import annotations

import numpy as np

from earthloop.active.nn import IndexOptions, index_over
from earthloop.active.pool import Pool

__all__ = ["distance_to_covered", "lower_distances"]


def distance_to_covered(
    pool: Pool,
    rows: np.ndarray,
    options: IndexOptions,
    *,
    seed: int = 0,
) -> tuple[np.ndarray, str]:
    """Cosine distance (1 − cos) from each of ``rows`` to its nearest excluded pool row.

    +inf for every row when nothing is covered yet. Returns the distances and the index kind
    used (an approximate IVF index may return a farther neighbour, never a nearer one, so a
    distance can only be overestimated).
    """
    emb = pool.need("embeddings", "coverage")
    ref_rows = np.flatnonzero(pool.excluded)
    if not len(ref_rows):
        return np.full(len(rows), np.inf, dtype=np.float32), "none"
    index = index_over(emb, ref_rows, len(rows), options, seed)
    sims, _ = index.search(emb, 1, rows=rows, exact_sims=True, label="coverage neighbours")
    return np.maximum(1.0 - sims[:, 0], 0.0).astype(np.float32), index.kind


def lower_distances(
    emb: np.ndarray,
    rows: np.ndarray | None,
    dist: np.ndarray,
    centres: np.ndarray,
    *,
    chunk: int = 65536,
) -> None:
    """``dist = min(dist, distance to any of centres)`` in place, one GEMM per chunk.

    ``rows`` (or all rows of ``emb`` when None) are the rows ``dist`` describes. −inf entries
    (rows never to be picked) stay −inf.
    """
    if not len(centres):
        return
    c_t = np.ascontiguousarray(emb[centres].T)
    n = len(dist)
    for s in range(0, n, chunk):
        block = emb[s : s + chunk] if rows is None else emb[rows[s : s + chunk]]
        nearest = 1.0 - (block @ c_t).max(axis=1)
        np.minimum(dist[s : s + chunk], np.maximum(nearest, 0.0), out=dist[s : s + chunk])
