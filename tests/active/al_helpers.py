"""Small constructed pools for the active-learning tests."""

from __future__ import annotations

import numpy as np
from earthloop.active import BatchFilter, Pool
from earthloop.active.pool import unit_rows


def make_pool(emb: np.ndarray, **columns: np.ndarray | None) -> Pool:
    """A pool over ``emb`` rows with chip ids c000, c001, ... and any extra columns."""
    ids = np.array([f"c{i:03d}" for i in range(len(emb))], dtype=object)
    pool = Pool(chip_ids=ids, embeddings=unit_rows(np.asarray(emb, dtype=np.float32)))
    for name, value in columns.items():
        if not hasattr(pool, name):
            raise TypeError(f"Pool has no column {name}")
        setattr(pool, name, value)
    pool.__post_init__()  # re-check lengths, fold labelled into excluded
    return pool


def free_filter(pool: Pool, n: int) -> BatchFilter:
    """A batch filter with every optional constraint off (only exclusions hold)."""
    return BatchFilter(pool, capacity=n)


def spread_embeddings(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    """Random, mutually distant directions (no near-duplicates by construction)."""
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def cluster(centre: np.ndarray, n: int, spread: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (centre[None, :] + spread * rng.standard_normal((n, len(centre)))).astype(np.float32)
