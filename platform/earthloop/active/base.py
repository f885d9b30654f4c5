"""The one interface every strategy implements, and the pieces ranking strategies share.

Why two layers: most strategies (random, entropy, margin, knn, seasonal) are *scorers*: each
chip gets a number and the batch is the best numbers that pass the batch constraints. Those
share one greedy walk down the ranking (``ScoreStrategy``) and can be mixed by weight. Coreset
and hybrid are *set* strategies: the value of a chip depends on what is already in the batch,
so they implement ``select`` themselves and consult the same ``BatchFilter`` at every pick.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from earthloop.active.constraints import BatchFilter
from earthloop.active.pool import Pool

__all__ = [
    "Picked",
    "ScoreStrategy",
    "Scores",
    "Strategy",
    "greedy_by_score",
    "js_divergence",
    "rank_normalise",
    "ranking",
]


@dataclass(frozen=True)
class Picked:
    """Pool rows in rank order (best first) and the score each was picked with."""

    rows: np.ndarray
    scores: np.ndarray


@dataclass(frozen=True)
class Scores:
    """Per-chip scores (higher = label sooner; −inf = never) and an optional tie-break key.

    The tie-break (higher first) decides among equal scores, e.g. which date of an uncertain
    location goes first; without it ties are broken by a seeded random key, never by row order,
    which would favour whatever sorts first.
    """

    score: np.ndarray
    tiebreak: np.ndarray | None = None


class Strategy(Protocol):
    """What the selector calls: fill up to ``n`` rows that ``batch`` accepts."""

    name: str

    def select(
        self, pool: Pool, n: int, batch: BatchFilter, rng: np.random.Generator
    ) -> Picked: ...


class ScoreStrategy(ABC):
    """A strategy defined by a per-chip score; the batch is its ranking after the filter."""

    name: str = "score"

    @abstractmethod
    def scores(self, pool: Pool, rng: np.random.Generator) -> Scores:
        """Score every pool row (excluded rows may get any value; they are never picked)."""

    def select(self, pool: Pool, n: int, batch: BatchFilter, rng: np.random.Generator) -> Picked:
        return greedy_by_score(pool, self.scores(pool, rng), n, batch, rng)


def ranking(pool: Pool, scores: Scores, rng: np.random.Generator) -> np.ndarray:
    """Candidate rows ordered by score, tie-break, then a seeded random key."""
    score = np.where(np.isfinite(scores.score), scores.score, -np.inf)
    rows = np.flatnonzero(pool.candidates & (score > -np.inf))
    noise = rng.random(len(pool))[rows]
    keys: list[np.ndarray] = [noise]
    if scores.tiebreak is not None:
        keys.append(-np.nan_to_num(scores.tiebreak[rows], nan=-np.inf))
    keys.append(-score[rows])
    return rows[np.lexsort(keys)]


def greedy_by_score(
    pool: Pool, scores: Scores, n: int, batch: BatchFilter, rng: np.random.Generator
) -> Picked:
    """Walk the ranking, keeping each chip the batch filter accepts, until ``n`` are kept."""
    order = ranking(pool, scores, rng)
    kept: list[int] = []
    for i in order:
        if len(kept) >= n:
            break
        row = int(i)
        if batch.accepts(row):
            batch.add(row)
            kept.append(row)
    rows = np.asarray(kept, dtype=np.int64)
    return Picked(rows=rows, scores=np.asarray(scores.score, dtype=np.float64)[rows])


def rank_normalise(values: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Ranks scaled to (0, 1] over ``mask`` rows (ties share their mean rank); 0 elsewhere.

    Why ranks: entropy in nats, kNN disagreement and seasonal variance live on unrelated
    scales; weighting raw values would let whichever is largest decide alone.
    """
    out = np.zeros(len(values), dtype=np.float64)
    rows = np.flatnonzero(mask if mask is not None else np.ones(len(values), dtype=bool))
    v = np.nan_to_num(np.asarray(values, dtype=np.float64)[rows], nan=-np.inf)
    if not len(rows):
        return out
    order = np.argsort(v, kind="stable")
    sorted_v = v[order]
    # mean rank of each run of equal values
    starts = np.flatnonzero(np.r_[True, sorted_v[1:] != sorted_v[:-1]])
    ends = np.r_[starts[1:], len(v)]
    mean_rank = (starts + ends + 1) / 2.0  # 1-based
    ranks = np.empty(len(v), dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    out[rows] = ranks / len(v)
    return out


def _entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    safe = np.clip(p, 1e-12, 1.0)
    return np.asarray(-(p * np.log(safe)).sum(axis=axis))


def js_divergence(dists: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Generalised Jensen–Shannon divergence of ``(..., m, C)`` distributions over ``m``.

    H(mean) − mean(H): zero when all ``m`` distributions agree, large when they disagree. For
    one-hot votes it is the entropy of the vote shares, so one formula serves kNN label votes,
    soft labels (class fractions) and per-date predicted-class histograms. Rows with weight 0
    (missing neighbours or dates) do not count.
    """
    d = np.asarray(dists, dtype=np.float64)
    w = np.ones(d.shape[:-1]) if weights is None else np.asarray(weights, dtype=np.float64)
    total = np.maximum(w.sum(axis=-1, keepdims=True), 1e-12)
    wn = w / total
    mean = (d * wn[..., None]).sum(axis=-2)
    return np.asarray(_entropy(mean) - (wn * _entropy(d)).sum(axis=-1))
