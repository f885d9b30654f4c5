"""Choosing one round's batch: the config, the strategy registry and the ``al_rounds`` rows.

Why one entry point: the round job, the benchmark and the tests must build strategies the same
way from the same config, apply the same batch constraints, and write rows of one shape, so
that "which chip was asked for, why, and in what order" is answerable from the table alone.
"""

from __future__ import annotations

import datetime as _dt
import logging
import time

import numpy as np
import pyarrow as pa

from earthloop.active.base import Picked, ScoreStrategy, Strategy
from earthloop.active.combine import WeightedScores
from earthloop.active.constraints import BatchFilter
from earthloop.active.coreset import CoresetStrategy
from earthloop.active.entropy import EntropyStrategy
from earthloop.active.hybrid import HybridStrategy
from earthloop.active.knn import KnnStrategy
from earthloop.active.margin import MarginStrategy
from earthloop.active.nn import IndexOptions
from earthloop.active.pool import Pool
from earthloop.active.random_baseline import RandomStrategy
from earthloop.active.seasonal import SeasonalStrategy
from earthloop.config import NeighbourConfig, SelectionConfig, WeightedStrategy
from earthloop.store.tables import AL_ROUNDS

__all__ = [
    "SelectionConfig",
    "Selection",
    "build_strategy",
    "select_batch",
    "to_al_rounds",
]

_LOG = logging.getLogger("earthloop.active")


def _index_options(nn: NeighbourConfig) -> IndexOptions:
    return IndexOptions(
        backend=nn.backend,
        exact_max_pairs=nn.exact_max_pairs,
        nprobe=nn.nprobe,
        nlist=nn.nlist,
        pca_dims=nn.pca_dims,
    )


def _scorer(name: str, cfg: SelectionConfig) -> ScoreStrategy:
    nn = cfg.neighbours
    if name == "random":
        return RandomStrategy()
    if name == "entropy":
        return EntropyStrategy()
    if name == "margin":
        return MarginStrategy()
    if name == "knn":
        return KnnStrategy(k=cfg.knn.k, options=_index_options(nn))
    if name == "seasonal":
        return SeasonalStrategy(source=cfg.seasonal.source, min_dates=cfg.seasonal.min_dates)
    raise ValueError(f"{name} is not a scoring strategy")


def _mix(parts: list[WeightedStrategy], cfg: SelectionConfig) -> ScoreStrategy:
    if len(parts) == 1:
        return _scorer(parts[0].name, cfg)
    return WeightedScores([(_scorer(p.name, cfg), p.weight) for p in parts])


def build_strategy(cfg: SelectionConfig) -> Strategy:
    """The strategy the config names (a single one, a weighted mix, coreset or hybrid)."""
    nn = cfg.neighbours
    first = cfg.strategies[0].name
    if first == "coreset":
        return CoresetStrategy(options=_index_options(nn))
    if first == "hybrid":
        return HybridStrategy(
            _mix(cfg.hybrid.uncertainty, cfg),
            pool_factor=cfg.hybrid.pool_factor,
            options=_index_options(nn),
        )
    return _mix(cfg.strategies, cfg)


class Selection:
    """One round's picks with what produced them (for rows, logs and the benchmark)."""

    def __init__(self, pool: Pool, picked: Picked, strategy: str, rejected: dict[str, int]):
        self.pool = pool
        self.picked = picked
        self.strategy = strategy
        self.rejected = rejected

    @property
    def chip_ids(self) -> list[str]:
        return [str(c) for c in self.pool.chip_ids[self.picked.rows]]


def select_batch(
    pool: Pool, cfg: SelectionConfig, *, round_: int = 0, strategy: Strategy | None = None
) -> Selection:
    """Choose up to ``cfg.batch_size`` chips; deterministic for a given pool, config and round.

    The generator is seeded by ``(cfg.seed, round_)``: a rerun of a round repeats its batch,
    and consecutive rounds do not replay the same random draws.
    """
    strat = strategy if strategy is not None else build_strategy(cfg)
    rng = np.random.default_rng([cfg.seed, round_])
    c = cfg.constraints
    batch = BatchFilter(
        pool,
        capacity=cfg.batch_size,
        min_cosine_distance=c.min_cosine_distance,
        min_distance_m=c.min_distance_m,
        one_per_location=c.one_per_location,
    )
    t0 = time.perf_counter()
    picked = strat.select(pool, cfg.batch_size, batch, rng)
    _LOG.info(
        "active: %s picked %d of %d candidates in %.1fs (refused: %s)",
        strat.name,
        len(picked.rows),
        int(pool.candidates.sum()),
        time.perf_counter() - t0,
        batch.rejected,
    )
    return Selection(pool, picked, strat.name, dict(batch.rejected))


def to_al_rounds(
    selection: Selection,
    *,
    round_: int,
    model_version: str,
    embeddings_table_version: int | None = None,
    queued_at: _dt.datetime | None = None,
) -> pa.Table:
    """The selection as ``al_rounds`` rows (rank 1 = label first)."""
    n = len(selection.picked.rows)
    when = queued_at or _dt.datetime.now(_dt.UTC)
    data = {
        "round": [round_] * n,
        "chip_id": selection.chip_ids,
        "strategy": [selection.strategy] * n,
        "score": selection.picked.scores.tolist(),
        "rank": list(range(1, n + 1)),
        "model_version": [model_version] * n,
        "embeddings_table_version": [embeddings_table_version] * n,
        "queued_at": [when] * n,
    }
    return pa.Table.from_pydict(data, schema=AL_ROUNDS.schema)
