"""The neighbour index: the hand-written exact search, and FAISS IVF + projection against it."""

from __future__ import annotations

import numpy as np
from earthloop.active.nn import NeighbourIndex, exact_search, principal_axes
from earthloop.active.pool import unit_rows


def _low_rank_clusters(n: int, seed: int) -> np.ndarray:
    """Clusters on a 16-dim subspace of 128 dims plus a little isotropic noise."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(np.random.default_rng(99).standard_normal((128, 16)))[0].T
    centres = np.random.default_rng(98).standard_normal((40, 16))
    z = centres[rng.integers(0, 40, n)] + 0.4 * rng.standard_normal((n, 16))
    return unit_rows(z @ basis + 0.02 * rng.standard_normal((n, 128)))


def test_exact_search_matches_a_full_sort() -> None:
    ref, q = _low_rank_clusters(300, 0), _low_rank_clusters(50, 1)
    sims, idx = exact_search(ref, q, 7, chunk=16)
    full = q @ ref.T
    assert (idx == np.argsort(-full, axis=1, kind="stable")[:, :7]).all()
    np.testing.assert_allclose(sims, np.sort(full, axis=1)[:, ::-1][:, :7], rtol=1e-5)


def test_ivf_with_projection_finds_most_true_neighbours() -> None:
    ref, q = _low_rank_clusters(4000, 2), _low_rank_clusters(500, 3)
    index = NeighbourIndex(
        ref, expected_queries=len(q), exact_max_pairs=0, pca_dims=24, fit_sample=ref, nprobe=8
    )
    assert index.kind.startswith("faiss-ivf") and "pca=24" in index.kind
    _, approx = index.search(q, 10)
    _, exact = exact_search(ref, q, 10)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact, strict=True)])
    assert recall > 0.8
    # exact_sims: the returned similarity is the true full-dimension one
    sims, idx = index.search(q, 1, exact_sims=True)
    np.testing.assert_allclose(sims[:, 0], np.einsum("ij,ij->i", q, ref[idx[:, 0]]), rtol=1e-5)


def test_small_searches_stay_exact() -> None:
    ref, q = _low_rank_clusters(2000, 4), _low_rank_clusters(100, 5)
    index = NeighbourIndex(ref, expected_queries=len(q))
    assert index.kind == "faiss-flat"
    _, idx = index.search(q, 5)
    assert (idx == exact_search(ref, q, 5)[1]).all()


def test_principal_axes_preserve_inner_products_of_low_rank_data() -> None:
    x = _low_rank_clusters(1000, 6)
    axes = principal_axes(x, 16)
    approx = (x[:50] @ axes) @ (x[50:100] @ axes).T
    assert np.abs(approx - x[:50] @ x[50:100].T).max() < 0.05
