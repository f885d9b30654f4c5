"""Active learning: which chips to label next (strategies, batch constraints, ``al_rounds`` rows).

See docs/labeling.md § Selection strategies. Typical use::

    pool = pool_from_tables(embeddings, chips=chips, predictions=preds, labels=labels,
                            al_rounds=queued, model_version=mv)
    sel = select_batch(pool, SelectionConfig(strategies=[{"name": "hybrid"}]), round_=3)
    rows = to_al_rounds(sel, round_=3, model_version=mv)
"""

from earthloop.active.base import Picked, Scores, ScoreStrategy, Strategy
from earthloop.active.constraints import BatchFilter
from earthloop.active.pool import Pool, pool_from_tables
from earthloop.active.select import SelectionConfig, build_strategy, select_batch, to_al_rounds

__all__ = [
    "BatchFilter",
    "Picked",
    "Pool",
    "ScoreStrategy",
    "Scores",
    "SelectionConfig",
    "Strategy",
    "build_strategy",
    "pool_from_tables",
    "select_batch",
    "to_al_rounds",
]
