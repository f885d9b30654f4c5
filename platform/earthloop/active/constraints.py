"""Batch constraints: no near-duplicates, no spatial neighbours, no chip twice.

Why as a filter every strategy passes its picks through: an annotator's hour is the scarce
resource. Two chips whose embeddings are almost the same, two dates of one field, or two
overlapping windows teach the model one thing twice; a ranking by uncertainty alone happily
fills a batch with them, because uncertain regions are contiguous. The filter is consulted in
rank order, so each strategy keeps its own notion of "best next" and the constraints only skip.

Spatial distance is measured as the chord between points on the unit sphere: exact, safe at the
poles and the antimeridian, and hashable on a 3-D grid so a check costs 27 dictionary look-ups
instead of a pass over the batch.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from earthloop.active.pool import Pool

__all__ = ["BatchFilter", "EARTH_RADIUS_M"]

EARTH_RADIUS_M = 6_371_008.8


def _unit_xyz(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    lo, la = np.radians(lon), np.radians(lat)
    return np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], axis=-1)


class BatchFilter:
    """Stateful check of one batch: ``accepts(i)`` before ``add(i)``, for pool rows ``i``.

    ``min_cosine_distance``: a chip whose embedding is closer than this (1 − cos) to one already
    in the batch is a near-duplicate. ``min_distance_m``: chips closer than this on the ground
    are neighbours (0 turns it off; needs lon/lat). ``one_per_location``: at most one date of a
    location. Excluded pool rows (labelled, queued) are always refused.
    """

    def __init__(
        self,
        pool: Pool,
        *,
        capacity: int,
        min_cosine_distance: float = 0.0,
        min_distance_m: float = 0.0,
        one_per_location: bool = False,
    ) -> None:
        self.pool = pool
        self.max_cos = 1.0 - min_cosine_distance
        self.check_dup = min_cosine_distance > 0 and pool.embeddings is not None
        self.one_per_location = one_per_location and pool.location_codes is not None
        self.check_space = min_distance_m > 0 and pool.lon is not None and pool.lat is not None
        # chord length of the arc min_distance_m on the unit sphere
        arc = min(min_distance_m / EARTH_RADIUS_M, math.pi)
        self.chord = 2.0 * math.sin(arc / 2.0)
        self._cells: dict[tuple[int, int, int], list[np.ndarray]] = defaultdict(list)
        dim = pool.embeddings.shape[1] if pool.embeddings is not None else 0
        self._emb = np.zeros((max(capacity, 1), dim), dtype=np.float32)
        self._locations: set[int] = set()
        self.chosen: list[int] = []
        self._chosen_set: set[int] = set()
        self.rejected: dict[str, int] = {"excluded": 0, "duplicate": 0, "neighbour": 0}

    def _xyz(self, i: int) -> np.ndarray | None:
        assert self.pool.lon is not None and self.pool.lat is not None
        lon, lat = self.pool.lon[i], self.pool.lat[i]
        if not (np.isfinite(lon) and np.isfinite(lat)):
            return None
        return _unit_xyz(np.asarray(lon), np.asarray(lat))

    def _cell(self, xyz: np.ndarray) -> tuple[int, int, int]:
        c = np.floor(xyz / self.chord).astype(np.int64)
        return int(c[0]), int(c[1]), int(c[2])

    def _near(self, xyz: np.ndarray) -> bool:
        cx, cy, cz = self._cell(xyz)
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                for dz in (-1, 0, 1):
                    for other in self._cells.get((cx + dx, cy + dy, cz + dz), ()):
                        if float(np.linalg.norm(other - xyz)) < self.chord:
                            return True
        return False

    def why_not(self, i: int) -> str | None:
        """The reason row ``i`` may not join the batch, or ``None`` when it may."""
        pool = self.pool
        if pool.excluded[i] or i in self._chosen_set:
            return "excluded"
        if self.one_per_location:
            assert pool.location_codes is not None
            if int(pool.location_codes[i]) in self._locations:
                return "neighbour"
        if self.check_space:
            xyz = self._xyz(i)
            if xyz is not None and self._near(xyz):
                return "neighbour"
        if self.check_dup and self.chosen:
            assert pool.embeddings is not None
            k = len(self.chosen)
            sims = self._emb[:k] @ pool.embeddings[i]
            if float(sims.max()) > self.max_cos:
                return "duplicate"
        return None

    def accepts(self, i: int) -> bool:
        """True when row ``i`` may join; a refusal is counted by reason."""
        reason = self.why_not(i)
        if reason is not None:
            self.rejected[reason] += 1
            return False
        return True

    def add(self, i: int) -> None:
        """Put row ``i`` into the batch (call only after ``accepts(i)``)."""
        pool = self.pool
        k = len(self.chosen)
        if k >= len(self._emb):
            self._emb = np.concatenate([self._emb, np.zeros_like(self._emb)])
        if pool.embeddings is not None:
            self._emb[k] = pool.embeddings[i]
        if self.one_per_location:
            assert pool.location_codes is not None
            self._locations.add(int(pool.location_codes[i]))
        if self.check_space:
            xyz = self._xyz(i)
            if xyz is not None:
                self._cells[self._cell(xyz)].append(xyz)
        self.chosen.append(i)
        self._chosen_set.add(i)
