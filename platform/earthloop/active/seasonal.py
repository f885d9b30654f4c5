"""``seasonal``: label the locations whose dates the model sees differently.

Why: SeCo pretraining teaches the encoder that one place in different seasons is the same
place (its invariance). After fine-tuning, a location whose dates still land far apart in
embedding space — or get different predicted classes — is one the model has not understood:
a real change (harvest, flooding, construction), or a failure of the invariance. Either is worth
a label. No other selector we know of uses the time axis this way.

Location score, from embeddings: 1 − R, with R the length of the mean of the dates' unit
embeddings (the circular variance: 0 when all dates agree). From predictions: the
Jensen–Shannon divergence of the dates' predicted-class histograms. ``both`` averages their
ranks. All chips of a location share its score; within it, the date farthest from the
location's mean direction goes first, and the one-per-location constraint keeps only it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np

from earthloop.active.base import Scores, ScoreStrategy, rank_normalise
from earthloop.active.pool import Pool
from earthloop.active.uncertainty import pixel_entropy

__all__ = ["SeasonalStrategy"]

Source = Literal["embeddings", "predictions", "both"]


class _Groups:
    """Rows grouped by location code: sorted order, group starts and sizes."""

    def __init__(self, codes: np.ndarray) -> None:
        self.order = np.argsort(codes, kind="stable")
        sorted_codes = codes[self.order]
        self.starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
        self.sizes = np.diff(np.r_[self.starts, len(codes)])
        self.group_of = np.empty(len(codes), dtype=np.int64)
        self.group_of[self.order] = np.repeat(np.arange(len(self.starts)), self.sizes)

    def sums(
        self, values: Callable[[np.ndarray], np.ndarray], rows_per_block: int = 65536
    ) -> np.ndarray:
        """Per-group sums of ``values(rows)``, gathered in blocks that end on group borders."""
        out: list[np.ndarray] = []
        g, n_groups = 0, len(self.starts)
        ends = np.r_[self.starts[1:], len(self.order)]
        while g < n_groups:
            last = int(np.searchsorted(ends, self.starts[g] + rows_per_block, side="right"))
            g_end = max(last, g + 1)
            lo, hi = int(self.starts[g]), int(ends[g_end - 1])
            block = values(self.order[lo:hi])
            out.append(np.add.reduceat(block, self.starts[g:g_end] - lo, axis=0))
            g = g_end
        return np.concatenate(out)


class SeasonalStrategy(ScoreStrategy):
    """Disagreement of a location across its dates; locations seen once score 0."""

    name = "seasonal"

    def __init__(self, *, source: Source = "embeddings", min_dates: int = 2) -> None:
        self.source = source
        self.min_dates = min_dates

    def scores(self, pool: Pool, rng: np.random.Generator) -> Scores:
        groups = _Groups(pool.need("location_codes", self.name))
        enough = groups.sizes >= self.min_dates
        tiebreak: np.ndarray | None = None
        parts: list[np.ndarray] = []
        if self.source in ("embeddings", "both"):
            loc_emb, tiebreak = self._embedding_spread(pool, groups)
            parts.append(np.where(enough, loc_emb, 0.0)[groups.group_of])
        if self.source in ("predictions", "both"):
            loc_pred = self._prediction_spread(pool, groups)
            parts.append(np.where(enough, loc_pred, 0.0)[groups.group_of])
        if len(parts) == 1:
            return Scores(parts[0], tiebreak)
        score = sum(rank_normalise(p, pool.candidates) for p in parts) / len(parts)
        return Scores(np.asarray(score), tiebreak)

    def _embedding_spread(self, pool: Pool, groups: _Groups) -> tuple[np.ndarray, np.ndarray]:
        emb = pool.need("embeddings", self.name)
        # float32 sums: a location has a handful of dates, and float64 would double the largest
        # temporary (locations × D) of the whole round
        mean = groups.sums(lambda rows: emb[rows])
        mean /= groups.sizes[:, None].astype(np.float32)
        length = np.linalg.norm(mean, axis=1).astype(np.float64)
        mean /= np.maximum(length, 1e-12)[:, None].astype(np.float32)
        direction = mean
        deviation = np.empty(len(pool), dtype=np.float64)
        for s in range(0, len(pool), 65536):
            g = groups.group_of[s : s + 65536]
            deviation[s : s + 65536] = 1.0 - np.einsum("ij,ij->i", emb[s : s + 65536], direction[g])
        return 1.0 - length, deviation

    def _prediction_spread(self, pool: Pool, groups: _Groups) -> np.ndarray:
        hist = pool.need("class_histogram", self.name)
        present = np.isfinite(hist).all(axis=1)
        h = np.where(present[:, None], hist, 0.0)
        h = h / np.maximum(h.sum(axis=1, keepdims=True), 1e-12)
        count = groups.sums(lambda rows: present[rows].astype(np.float64))
        mean = groups.sums(lambda rows: h[rows]) / np.maximum(count, 1.0)[:, None]
        mean_h = groups.sums(
            lambda rows: np.where(present[rows], pixel_entropy(h[rows], axis=1), 0.0)
        )
        spread = pixel_entropy(mean, axis=1) - mean_h / np.maximum(count, 1.0)
        return np.where(count >= self.min_dates, spread, 0.0)
