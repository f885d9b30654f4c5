"""Nearest neighbours by cosine similarity: FAISS, or a hand-written exact numpy search.

Why FAISS: kNN disagreement and coreset coverage ask, for up to a million unlabelled chips,
which labelled chip is nearest. Exact search is a dense product of 1 M × L × D; on two cores
numpy reaches ≈ 65 GFLOP/s, so 10 000 labelled chips of 512 dims cost ≈ 150 s, past the 60 s
budget. FAISS's inverted-file index (IVF) scans only the few clusters nearest each query, which
keeps the same search at a few seconds with recall measured in benchmarks/al_selection_bench.py.
Above that size the index also searches in a ``pca_dims``-dimensional projection (uncentred
principal axes of a sample of the pool, so inner products are preserved as well as any rank-r
map can): on two busy cores IVF at 512 dims took 35–100 s for 1 M queries, at 64 dims 8–24 s,
with the same recall on the benchmark's data. When the product is small the index is exact (FAISS flat
over the full dimensions), so small rounds lose nothing. The numpy search stays as the
reference the benchmark and tests compare against.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from earthloop.observe.progress import Progress

__all__ = ["IndexOptions", "NeighbourIndex", "exact_search", "index_over", "principal_axes"]

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


def principal_axes(sample: np.ndarray, dims: int) -> np.ndarray:
    """(D, dims) uncentred principal axes of ``sample``: the rank-``dims`` projection that best
    preserves inner products (eigenvectors of XᵀX, largest first)."""
    x = np.asarray(sample, dtype=np.float64)
    _, vecs = np.linalg.eigh(x.T @ x)
    return np.ascontiguousarray(vecs[:, ::-1][:, :dims], dtype=np.float32)


class NeighbourIndex:
    """An index over unit reference rows answering top-``k`` cosine-similarity queries.

    ``backend="faiss"``: exact (flat, full dimensions) when ``queries × references`` is at most
    ``exact_max_pairs``; else IVF with ``nlist`` ≈ 4·√L lists, ``nprobe`` probed per query, in
    the ``pca_dims`` projection fitted on ``fit_sample`` (None = no projection).
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
        pca_dims: int | None = 64,
        fit_sample: np.ndarray | None = None,
        seed: int = 0,
    ) -> None:
        self.ref = np.ascontiguousarray(ref, dtype=np.float32)
        self.kind = "numpy-exact"
        self._index: Any = None
        self._axes: np.ndarray | None = None
        if backend != "faiss" or not len(self.ref):
            return
        n, dim = self.ref.shape
        if expected_queries * n <= exact_max_pairs or n < 1024:
            self._index = _faiss().IndexFlatIP(dim)
            self._index.add(self.ref)
            self.kind = "faiss-flat"
            return
        space = self.ref
        if pca_dims is not None and pca_dims < dim:
            sample = fit_sample if fit_sample is not None else self.ref
            self._axes = principal_axes(sample, pca_dims)
            space = np.ascontiguousarray(self.ref @ self._axes)
        self._build_ivf(space, nlist, nprobe, seed)

    def _build_ivf(self, space: np.ndarray, nlist: int | None, nprobe: int, seed: int) -> None:
        faiss = _faiss()
        n, dim = space.shape
        lists = nlist or int(min(max(4 * math.sqrt(n), 16), n // 39))
        quantizer = faiss.IndexFlatIP(dim)
        ivf = faiss.IndexIVFFlat(quantizer, dim, lists, faiss.METRIC_INNER_PRODUCT)
        train = space
        if n > 256 * lists:  # FAISS's own cap: more training points change nothing
            pick = np.random.default_rng(seed).choice(n, 256 * lists, replace=False)
            train = space[np.sort(pick)]
        ivf.cp.seed = seed
        ivf.train(train)
        ivf.nprobe = min(nprobe, lists)
        ivf.add(space)
        self._quantizer = quantizer  # the IVF index does not own it: keep it alive
        self._index = ivf
        proj = f",pca={dim}" if self._axes is not None else ""
        self.kind = f"faiss-ivf(nlist={lists},nprobe={ivf.nprobe}{proj})"

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        rows: np.ndarray | None = None,
        exact_sims: bool = False,
        chunk: int = 65536,
        label: str = "knn search",
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` ``(sims, idx)`` per query, best first; idx −1 where fewer exist.

        ``rows`` selects the query rows of ``queries`` chunk by chunk, so a million-row subset
        of the pool is never gathered into one copy. ``exact_sims`` recomputes the returned
        similarities in the full dimensions (the projection's are approximate).
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
                d, i = self._search_block(block, k)
                if exact_sims and self._axes is not None:
                    d = np.einsum("qd,qkd->qk", block, self.ref[np.maximum(i, 0)])
                    d = np.where(i >= 0, d, -np.inf)
                    order = np.argsort(-d, axis=1, kind="stable")
                    d, i = np.take_along_axis(d, order, 1), np.take_along_axis(i, order, 1)
                sims[s : s + len(block)] = d
                idx[s : s + len(block)] = i
                progress.update(len(block))
        return sims, idx

    def _search_block(self, block: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self._index is None:
            return exact_search(self.ref, block, k)
        if self._axes is not None:
            block = np.ascontiguousarray(block @ self._axes)
        d, i = self._index.search(block, k)
        return np.asarray(d), np.asarray(i, dtype=np.int64)


def _faiss() -> Any:
    """FAISS, imported on first use: a round that needs no index never pays its import."""
    import faiss

    return faiss


@dataclass(frozen=True)
class IndexOptions:
    """How strategies search neighbours (the config's ``neighbours`` section)."""

    backend: Backend = "faiss"
    exact_max_pairs: int = 500_000_000
    nprobe: int = 16
    nlist: int | None = None
    pca_dims: int | None = 64
    fit_rows: int = 20_000  # pool rows sampled to fit the projection


def index_over(
    emb: np.ndarray, ref_rows: np.ndarray, queries: int, opts: IndexOptions, seed: int
) -> NeighbourIndex:
    """An index over ``emb[ref_rows]``; the projection is fitted on a seeded sample of all
    rows, so it describes the candidates as well as the (often few) references."""
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(emb), min(opts.fit_rows, len(emb)), replace=False))
    return NeighbourIndex(
        emb[ref_rows],
        backend=opts.backend,
        expected_queries=queries,
        exact_max_pairs=opts.exact_max_pairs,
        nlist=opts.nlist,
        nprobe=opts.nprobe,
        pca_dims=opts.pca_dims,
        fit_sample=emb[pick],
        seed=seed,
    )
