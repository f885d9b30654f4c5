"""``coreset``: k-center greedy, for coverage of the embedding space.

Why: uncertainty alone keeps sampling the same confusing region; a batch that covers the space
(each new chip as far as possible from everything labelled, queued or already picked) finds
the land covers the model has never been shown. This is the k-center greedy of Sener &
Savarese (2018), written for a million chips on two cores.

The textbook loop rescans all N chips after every pick (N × D per pick: 2 GB of reads per pick
at 1 M × 512). Here the scan is lazy and still exact: distances only ever decrease, so if the
best of the top-M candidates, kept exact after every pick, is still at least the M-th largest
stale distance, no chip outside the candidates can beat it. Only when that fails are the picks
made since the last rescan applied to all chips at once, as one matrix product.
"""

from __future__ import annotations

import logging

import numpy as np

from earthloop.active.base import Picked
from earthloop.active.constraints import BatchFilter
from earthloop.active.coverage import distance_to_covered, lower_distances
from earthloop.active.nn import IndexOptions
from earthloop.active.pool import Pool
from earthloop.observe.progress import Progress

__all__ = ["CoresetStrategy"]

_LOG = logging.getLogger("earthloop.active")
_FIRST_SCORE = 2.0  # the largest cosine distance: the score of a first pick with nothing covered


class CoresetStrategy:
    """Exact k-center greedy over the candidates, seeded by the labelled and queued chips."""

    name = "coreset"

    def __init__(
        self,
        *,
        options: IndexOptions | None = None,
        top_m: int | None = None,
    ) -> None:
        self.options = options or IndexOptions()
        self.top_m = top_m  # candidates kept exact between rescans; None = 8n in [4096, 65536]
        self.index_kind = ""
        self.rescans = 0

    def select(self, pool: Pool, n: int, batch: BatchFilter, rng: np.random.Generator) -> Picked:
        emb = pool.need("embeddings", self.name)
        cand = np.flatnonzero(pool.candidates)
        dist = np.full(len(pool), -np.inf, dtype=np.float32)
        dist[cand], self.index_kind = distance_to_covered(
            pool,
            cand,
            self.options,
            seed=int(rng.integers(2**31)),
        )
        rows: list[int] = []
        scores: list[float] = []
        if not pool.excluded.any():
            self._first_pick(emb, dist, cand, batch, rng, rows, scores)
        top_m = self.top_m or int(min(max(8 * n, 4096), 65536))
        with Progress("coreset", n, unit="picks", every_s=15.0, logger=_LOG) as progress:
            progress.update(len(rows))
            while len(rows) < n:
                new = self._pick_from_top(emb, dist, top_m, n - len(rows), batch, rows, scores)
                progress.update(len(new), rescans=self.rescans)
                if not len(new) and not np.isfinite(dist).any():
                    break  # every candidate picked or refused
                if new and len(rows) < n:
                    lower_distances(emb, None, dist, np.asarray(new, dtype=np.int64))
                    self.rescans += 1
        return Picked(np.asarray(rows, dtype=np.int64), np.asarray(scores, dtype=np.float64))

    def _first_pick(
        self,
        emb: np.ndarray,
        dist: np.ndarray,
        cand: np.ndarray,
        batch: BatchFilter,
        rng: np.random.Generator,
        rows: list[int],
        scores: list[float],
    ) -> None:
        """Nothing covered yet: every distance is infinite, so start from a seeded random chip."""
        for i in rng.permutation(cand):
            if batch.accepts(int(i)):
                batch.add(int(i))
                rows.append(int(i))
                scores.append(_FIRST_SCORE)
                dist[i] = -np.inf
                lower_distances(emb, None, dist, np.asarray([i]))
                return

    def _pick_from_top(
        self,
        emb: np.ndarray,
        dist: np.ndarray,
        top_m: int,
        want: int,
        batch: BatchFilter,
        rows: list[int],
        scores: list[float],
    ) -> list[int]:
        """Greedy picks among the ``top_m`` largest distances while they are provably exact."""
        finite = int(np.count_nonzero(dist > -np.inf))
        if finite == 0:
            return []
        m = min(top_m, finite)
        top = np.argpartition(-dist, m - 1)[:m] if m < len(dist) else np.arange(len(dist))
        top = top[dist[top] > -np.inf]
        # every row outside `top` has a (stale, hence upper-bound) distance <= threshold
        threshold = float(dist[top].min()) if finite > m else -np.inf
        cand_d = dist[top].copy()
        cand_e = emb[top]
        new: list[int] = []
        while len(new) < want:
            j = int(np.argmax(cand_d))
            best = float(cand_d[j])
            if best == -np.inf or best < threshold:
                break
            i = int(top[j])
            cand_d[j] = -np.inf
            dist[i] = -np.inf
            if not batch.accepts(i):
                continue
            batch.add(i)
            new.append(i)
            rows.append(i)
            scores.append(best)
            np.minimum(cand_d, np.maximum(1.0 - cand_e @ emb[i], 0.0), out=cand_d)
        return new
