"""Coreset and hybrid: coverage, exactness of the lazy k-center, diversity of hybrid batches."""

from __future__ import annotations

import numpy as np
from al_helpers import cluster, free_filter, make_pool, spread_embeddings
from earthloop.active import BatchFilter
from earthloop.active.coreset import CoresetStrategy
from earthloop.active.entropy import EntropyStrategy
from earthloop.active.hybrid import HybridStrategy
from earthloop.active.nn import IndexOptions
from earthloop.active.pool import unit_rows


def _three_clusters() -> tuple[np.ndarray, np.ndarray]:
    dim = 8
    centres = np.eye(dim, dtype=np.float32)[:3] * 5.0
    emb = np.concatenate([cluster(c, 20, 0.2, seed=i) for i, c in enumerate(centres)])
    return emb, np.repeat(np.arange(3), 20)


def test_coreset_covers_the_clusters_nobody_labelled() -> None:
    emb, which = _three_clusters()
    labelled = np.zeros(len(emb), dtype=bool)
    labelled[:5] = True  # cluster 0 already has labels
    pool = make_pool(emb, labelled=labelled)
    picked = CoresetStrategy().select(pool, 2, free_filter(pool, 2), np.random.default_rng(0))
    assert sorted(which[picked.rows].tolist()) == [1, 2]
    assert picked.scores[0] >= picked.scores[1]  # each pick covers less than the one before


def _textbook_kcenter(emb: np.ndarray, covered: np.ndarray, n: int) -> list[int]:
    """Plain k-center greedy: rescan every point after every pick."""
    dist = 1.0 - (emb @ emb[covered].T).max(axis=1)
    dist[covered] = -np.inf
    out: list[int] = []
    for _ in range(n):
        i = int(np.argmax(dist))
        out.append(i)
        dist = np.minimum(dist, 1.0 - emb @ emb[i])
        dist[out] = -np.inf
    return out


def test_lazy_coreset_equals_textbook_kcenter_greedy() -> None:
    raw = np.concatenate(
        [cluster(np.random.default_rng(i).standard_normal(12) * 3, 60, 1.0, i) for i in range(8)]
    )
    emb = unit_rows(raw)
    covered = np.array([0, 100, 200])
    labelled = np.zeros(len(emb), dtype=bool)
    labelled[covered] = True
    pool = make_pool(raw, labelled=labelled)
    strategy = CoresetStrategy(
        options=IndexOptions(backend="numpy"), top_m=8
    )  # tiny candidate set: many rescans
    picked = strategy.select(pool, 40, free_filter(pool, 40), np.random.default_rng(0))
    assert picked.rows.tolist() == _textbook_kcenter(emb, covered, 40)
    assert strategy.rescans > 1


def test_coreset_without_labels_starts_from_a_seeded_chip() -> None:
    pool = make_pool(spread_embeddings(30))
    runs = [
        CoresetStrategy().select(pool, 5, free_filter(pool, 5), np.random.default_rng(s)).rows
        for s in (0, 0, 1)
    ]
    assert runs[0].tolist() == runs[1].tolist()
    assert runs[0][0] != runs[2][0]
    assert len(set(runs[0].tolist())) == 5


def _duplicates_world() -> tuple[np.ndarray, np.ndarray]:
    """30 near-copies of one very uncertain chip, then 20 distinct, less uncertain chips."""
    rng = np.random.default_rng(0)
    base = rng.standard_normal(16)
    dups = base + 0.001 * rng.standard_normal((30, 16))
    others = rng.standard_normal((20, 16))
    emb = np.concatenate([dups, others]).astype(np.float32)
    entropy = np.concatenate([np.full(30, 0.9), np.linspace(0.5, 0.8, 20)])
    return emb, entropy


def test_hybrid_never_returns_two_near_duplicates() -> None:
    emb, entropy = _duplicates_world()
    pool = make_pool(emb, mean_entropy=entropy)
    batch = BatchFilter(pool, capacity=8, min_cosine_distance=0.05)
    picked = HybridStrategy(EntropyStrategy(), pool_factor=10).select(
        pool, 8, batch, np.random.default_rng(0)
    )
    assert len(picked.rows) == 8
    assert int((picked.rows < 30).sum()) == 1
    assert pool.embeddings is not None
    e = pool.embeddings[picked.rows]
    sims = e @ e.T
    np.fill_diagonal(sims, -1)
    assert (1.0 - sims).min() >= 0.05


def test_hybrid_diversifies_even_without_the_duplicate_constraint() -> None:
    emb, entropy = _duplicates_world()
    pool = make_pool(emb, mean_entropy=entropy)
    hybrid = HybridStrategy(EntropyStrategy(), pool_factor=10).select(
        pool, 5, free_filter(pool, 5), np.random.default_rng(0)
    )
    plain = EntropyStrategy().select(pool, 5, free_filter(pool, 5), np.random.default_rng(0))
    assert (plain.rows < 30).all()  # pure uncertainty takes five copies of one chip
    assert int((hybrid.rows < 30).sum()) == 1  # the distance term stops that


def test_hybrid_prefers_uncertain_chips_far_from_labels() -> None:
    emb, which = _three_clusters()
    labelled = np.zeros(len(emb), dtype=bool)
    labelled[:3] = True
    entropy = np.full(len(emb), 0.5)
    entropy[5] = 0.95  # most uncertain, but next to the labels of cluster 0
    entropy[25] = 0.9  # almost as uncertain, in unlabelled cluster 1
    pool = make_pool(emb, labelled=labelled, mean_entropy=entropy)
    picked = HybridStrategy(EntropyStrategy(), pool_factor=3).select(
        pool, 1, free_filter(pool, 1), np.random.default_rng(0)
    )
    assert picked.rows.tolist() == [25]
