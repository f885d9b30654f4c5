"""Nearest neighbours by cosine similarity: FAISS, or a hand-written exact numpy search.

Why FAISS: kNN disagreement and coreset coverage ask, for up to a million unlabelled chips,
which labelled chip is nearest. Exact search is a dense product of 1 M × L × D; on two cores
numpy reaches ≈ 65 GFLOP/s, so 10 000 labelled chips of 512 dims cost ≈ 150 s, past the 60 s
budget. FAISS's inverted-file index (IVF) scans only the few clusters nearest each query, which
keeps the same search at a few seconds with recall measured in benchmarks/al_selection_bench.py.
When the product is small the index is exact (FAISS flat), so small rounds lose nothing. The
numpy search stays as the reference the benchmark and tests compare against.
"""

from __future__ import annotations

import logging
import math
from typing import Literal

import numpy as np

from earthloop.observe.progress import Progress

__all__ = ["NeighbourIndex", "exact_search"]

_LOG = logging.getLogger("earthloop.active")
Backend = Literal["faiss", "numpy"]


def exact_search(
    ref: np.ndarray, queries: np.ndarray, k: int, *, chunk: int = 8192
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` inner products of unit rows, hand-written: chunked GEMM + argpartition.

    Returns ``(sims, idx)``, each (Q, k), best first.
    """
    k = min(k, len(ref))
    q_n = len(queries)
    sims = np.empty((q_n, k), dtype=np.float32)
    idx = np.empty((q_n, k), dtype=np.int64)
    ref_t = np.ascontiguousarray(ref.T)
    rows = np.arange(min(chunk, q_n))[:, None]
    for s in range(0, q_n, chunk):
        block = queries[s : s + chunk] @ ref_t
        part = np.argpartition(-block, k - 1, axis=1)[:, :k] if k < block.shape[1] else None
        top = part if part is not None else np.tile(np.arange(block.shape[1]), (len(block), 1))
        vals = np.take_along_axis(block, top, axis=1)
        order = np.argsort(-vals, axis=1, kind="stable")
        r = rows[: len(block)]
        sims[s : s + len(block)] = vals[r, order]
        idx[s : s + len(block)] = top[r, order]
    return sims, idx


class NeighbourIndex:
    """An index over unit reference rows answering top-``k`` cosine-similarity queries.

    ``backend="faiss"``: exact (flat) when ``queries × references`` is at most
    ``exact_max_pairs``, else IVF with ``nlist`` ≈ 4·√L lists and ``nprobe`` probed per query.
    ``backend="numpy"``: always exact, hand-written.
    """

    def __init__(
        self,
        ref: np.ndarray,
        *,
        backend: Backend = "faiss",
        expected_queries: int = 0,
        exact_max_pairs: int = 500_000_000,
        nlist: int | None = None,
        nprobe: int = 16,
        seed: int = 0,
    ) -> None:
        self.ref = np.ascontiguousarray(ref, dtype=np.float32)
        self.backend = backend
        self.kind = "numpy-exact"
        self._index: object | None = None
        if backend == "faiss" and len(self.ref):
            self._build_faiss(expected_queries, exact_max_pairs, nlist, nprobe, seed)

    def _build_faiss(
        self, queries: int, exact_max_pairs: int, nlist: int | None, nprobe: int, seed: int
    ) -> None:
        import faiss  # the only module that needs it; import cost paid only when used

        n, dim = self.ref.shape
        index: faiss.Index
        if queries * n <= exact_max_pairs or n < 1024:
            index = faiss.IndexFlatIP(dim)
            self.kind = "faiss-flat"
        else:
            lists = nlist or int(min(max(4 * math.sqrt(n), 16), n // 39))
            quantizer = faiss.IndexFlatIP(dim)
            ivf = faiss.IndexIVFFlat(quantizer, dim, lists, faiss.METRIC_INNER_PRODUCT)
            train = self.ref
            if n > 256 * lists:  # FAISS's own cap: more training points change nothing
                pick = np.random.default_rng(seed).choice(n, 256 * lists, replace=False)
                train = self.ref[np.sort(pick)]
            ivf.cp.seed = seed
            ivf.train(train)
            ivf.nprobe = min(nprobe, lists)
            self.kind = f"faiss-ivf(nlist={lists},nprobe={ivf.nprobe})"
            self._quantizer = quantizer  # the IVF index does not own it: keep it alive
            index = ivf
        index.add(self.ref)
        self._index = index

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        rows: np.ndarray | None = None,
        chunk: int = 65536,
        label: str = "knn search",
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` ``(sims, idx)`` per query, best first; idx −1 where fewer exist.

        ``rows`` selects the query rows of ``queries`` chunk by chunk, so a million-row subset
        of the pool is never gathered into one copy.
        """
        k = max(1, min(k, len(self.ref)))
        q_n = len(queries) if rows is None else len(rows)
        sims = np.full((q_n, k), -np.inf, dtype=np.float32)
        idx = np.full((q_n, k), -1, dtype=np.int64)
        if not len(self.ref):
            return sims, idx
        with Progress(label, q_n, unit="queries", every_s=15.0, logger=_LOG) as progress:
            for s in range(0, q_n, chunk):
                part = queries[s : s + chunk] if rows is None else queries[rows[s : s + chunk]]
                block = np.ascontiguousarray(part, dtype=np.float32)
                if self._index is not None:
                    d, i = self._index.search(block, k)  # type: ignore[attr-defined]
                else:
                    d, i = exact_search(self.ref, block, k)
                sims[s : s + len(block)] = d
                idx[s : s + len(block)] = i
                progress.update(len(block))
        return sims, idx
