"""Each scoring strategy's defining behaviour on small constructed data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from al_helpers import free_filter, make_pool, spread_embeddings
from earthloop.active import Picked, Pool, Strategy
from earthloop.active.base import js_divergence, rank_normalise
from earthloop.active.entropy import EntropyStrategy
from earthloop.active.knn import KnnStrategy
from earthloop.active.margin import MarginStrategy
from earthloop.active.nn import IndexOptions
from earthloop.active.random_baseline import RandomStrategy
from earthloop.active.seasonal import SeasonalStrategy
from earthloop.active.uncertainty import pixel_entropy, pixel_margin


def _select(strategy: Strategy, pool: Pool, n: int, seed: int = 0) -> Picked:
    return strategy.select(pool, n, free_filter(pool, n), np.random.default_rng(seed))


def test_entropy_picks_most_uncertain_from_summaries() -> None:
    pool = make_pool(spread_embeddings(5), mean_entropy=np.array([0.1, 0.9, 0.5, 0.2, 0.7]))
    picked = _select(EntropyStrategy(), pool, 3)
    assert picked.rows.tolist() == [1, 4, 2]
    assert picked.scores.tolist() == [0.9, 0.7, 0.5]


def test_entropy_and_margin_from_pixel_probabilities() -> None:
    c, h, w = 3, 4, 4
    probs = np.zeros((3, c, h, w))
    probs[0, 0] = 1.0  # certain
    probs[1] = 1.0 / c  # uniform: most entropy
    probs[2, 0], probs[2, 1] = 0.5, 0.5  # two-way tie: zero margin, less entropy than uniform
    pool = make_pool(spread_embeddings(3), pixel_probs=probs)
    assert _select(EntropyStrategy(), pool, 3).rows.tolist() == [1, 2, 0]
    margin = _select(MarginStrategy(), pool, 3)
    assert set(margin.rows[:2].tolist()) == {1, 2}  # both have margin 0
    assert margin.rows[2] == 0
    assert pixel_entropy(probs, axis=1)[1].mean() == pytest.approx(math.log(3))
    assert pixel_margin(probs, axis=1)[0].mean() == pytest.approx(1.0)


def test_margin_prefers_small_margin_summary() -> None:
    pool = make_pool(spread_embeddings(3), mean_margin=np.array([0.9, 0.05, 0.5]))
    assert _select(MarginStrategy(), pool, 3).rows.tolist() == [1, 2, 0]


def test_random_is_seeded_and_covers_the_pool() -> None:
    pool = make_pool(spread_embeddings(50))
    a = _select(RandomStrategy(), pool, 10, seed=1).rows
    b = _select(RandomStrategy(), pool, 10, seed=1).rows
    c = _select(RandomStrategy(), pool, 10, seed=2).rows
    assert a.tolist() == b.tolist()
    assert a.tolist() != c.tolist()
    assert len(set(a.tolist())) == 10


def _knn_world(backend: str) -> tuple[KnnStrategy, Pool]:
    """Labelled class 0 around +x, class 1 around −x; candidates at +x, −x and between."""
    rng = np.random.default_rng(0)
    dim = 8
    a = np.zeros(dim, dtype=np.float32)
    a[0] = 1.0
    b = -a
    mid = np.zeros(dim, dtype=np.float32)
    mid[1] = 1.0  # orthogonal to both: equally near each class
    lab_a = a + 0.05 * rng.standard_normal((10, dim))
    lab_b = b + 0.05 * rng.standard_normal((10, dim))
    lab_mid_a = mid + 0.3 * a + 0.05 * rng.standard_normal((3, dim))
    lab_mid_b = mid + 0.3 * b + 0.05 * rng.standard_normal((3, dim))
    cands = np.stack([a, b, mid]) + 0.01 * rng.standard_normal((3, dim))
    emb = np.concatenate([cands, lab_a, lab_b, lab_mid_a, lab_mid_b]).astype(np.float32)
    n = len(emb)
    labelled = np.zeros(n, dtype=bool)
    labelled[3:] = True
    vectors = np.zeros((n, 2), dtype=np.float32)
    vectors[3:13, 0] = 1
    vectors[13:23, 1] = 1
    vectors[23:26, 0] = 1
    vectors[26:29, 1] = 1
    pool = make_pool(emb, labelled=labelled, label_vectors=vectors)
    opts = IndexOptions(backend="numpy" if backend == "numpy" else "faiss")
    return KnnStrategy(k=6, options=opts), pool


@pytest.mark.parametrize("backend", ["faiss", "numpy"])
def test_knn_picks_the_chip_whose_labelled_neighbours_disagree(backend: str) -> None:
    strategy, pool = _knn_world(backend)
    picked = _select(strategy, pool, 3)
    assert picked.rows[0] == 2  # the chip between the classes
    assert picked.scores[0] == pytest.approx(math.log(2), abs=0.05)
    assert picked.scores[1:].max() < 0.2  # chips deep inside one class barely disagree
    assert not set(picked.rows.tolist()) & set(range(3, 29))  # labelled never picked


def test_knn_backends_agree() -> None:
    s_faiss, pool = _knn_world("faiss")
    s_numpy, _ = _knn_world("numpy")
    rng = np.random.default_rng(0)
    np.testing.assert_allclose(
        s_faiss.scores(pool, rng).score,
        s_numpy.scores(pool, rng).score,
        atol=1e-6,
    )


def _seasonal_pool(hist: np.ndarray | None = None) -> Pool:
    """4 locations × 4 dates; location 2's dates point in different directions."""
    rng = np.random.default_rng(3)
    dim = 16
    rows, codes = [], []
    for loc in range(4):
        base = rng.standard_normal(dim)
        for date in range(4):
            if loc == 2:
                e = base + (3.0 if date == 3 else 1.5) * rng.standard_normal(dim)
            else:
                e = base + 0.02 * rng.standard_normal(dim)
            rows.append(e)
            codes.append(loc)
    return make_pool(
        np.asarray(rows), location_codes=np.asarray(codes, dtype=np.int64), class_histogram=hist
    )


def test_seasonal_picks_the_location_whose_dates_disagree() -> None:
    pool = _seasonal_pool()
    strategy = SeasonalStrategy(source="embeddings")
    scores = strategy.scores(pool, np.random.default_rng(0))
    loc_scores = scores.score.reshape(4, 4)
    assert np.argmax(loc_scores[:, 0]) == 2
    assert (loc_scores == loc_scores[:, :1]).all()  # one score per location
    picked = _select(strategy, pool, 1)
    assert picked.rows[0] // 4 == 2
    # within the location the date farthest from the location's mean goes first
    assert scores.tiebreak is not None
    assert picked.rows[0] == 8 + int(np.argmax(scores.tiebreak[8:12]))


def test_seasonal_from_predicted_class_histograms() -> None:
    hist = np.tile([[0.9, 0.1]], (16, 1))
    hist[4:8] = [[0.9, 0.1], [0.1, 0.9], [0.9, 0.1], [0.1, 0.9]]  # location 1 flips class
    pool = _seasonal_pool(hist)
    picked = _select(SeasonalStrategy(source="predictions"), pool, 1)
    assert picked.rows[0] // 4 == 1
    both = _select(SeasonalStrategy(source="both"), pool, 16)
    assert {int(r) // 4 for r in both.rows[:8]} == {1, 2}  # both kinds of disagreement rank first


def test_seasonal_single_date_locations_score_zero() -> None:
    pool = make_pool(spread_embeddings(3), location_codes=np.array([0, 1, 2]))
    scores = SeasonalStrategy().scores(pool, np.random.default_rng(0))
    assert scores.score.tolist() == [0.0, 0.0, 0.0]


def test_js_divergence_and_rank_normalise() -> None:
    agree = np.array([[[1.0, 0.0]] * 4])
    split = np.array([[[1.0, 0.0], [0.0, 1.0]]])
    assert js_divergence(agree)[0] == pytest.approx(0.0, abs=1e-9)
    assert js_divergence(split)[0] == pytest.approx(math.log(2))
    # a missing neighbour (weight 0) does not count
    assert js_divergence(split, weights=np.array([[1.0, 0.0]]))[0] == pytest.approx(0.0, abs=1e-9)
    r = rank_normalise(np.array([5.0, 1.0, 5.0, 3.0]))
    assert r.tolist() == [0.875, 0.25, 0.875, 0.5]
