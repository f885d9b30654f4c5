"""Batch constraints, exclusions, determinism, config and al_rounds rows, through select_batch."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pyarrow as pa
import pytest
from al_helpers import make_pool, spread_embeddings
from earthloop.active import BatchFilter, Pool, SelectionConfig, pool_from_tables, select_batch
from earthloop.active.constraints import EARTH_RADIUS_M
from earthloop.active.select import to_al_rounds
from earthloop.store.tables import AL_ROUNDS, CHIPS, EMBEDDINGS, LABELS, PREDICTIONS
from pydantic import ValidationError

ALL = ["random", "entropy", "margin", "knn", "seasonal", "coreset", "hybrid"]


def _haversine_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(a))


def _world(n_loc: int = 40, dates: int = 2, seed: int = 0) -> dict[str, pa.Table]:
    """Tables shaped like the store contracts: locations in pairs 500 m apart, 2 dates each."""
    rng = np.random.default_rng(seed)
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    ids, locs, seasons, lons, lats = [], [], [], [], []
    for loc in range(n_loc):
        lon = 10.0 + (loc // 2) * 0.1 + (loc % 2) * 0.0045  # partner location ≈ 500 m east
        for d in range(dates):
            ids.append(f"L{loc:03d}_{d}")
            locs.append(f"L{loc:03d}")
            seasons.append(d)
            lons.append(lon)
            lats.append(45.0)
    n = len(ids)
    emb = rng.standard_normal((n, 16)).astype(np.float32)
    hist = rng.dirichlet(np.ones(3), size=n)
    labels = rng.integers(0, 3, size=n)
    embeddings = pa.Table.from_pydict(
        {
            "chip_id": ids,
            "model_version": ["m1"] * n,
            "location_id": locs,
            "season": seasons,
            "embedding": [list(map(float, e)) for e in emb],
            "grid": [None] * n,
            "grid_shape": [None] * n,
            "created_at": [now] * n,
        },
        schema=EMBEDDINGS.schema,
    )
    chips = pa.table({"chip_id": ids, "lon": lons, "lat": lats}).cast(
        pa.schema([CHIPS.schema.field(c) for c in ("chip_id", "lon", "lat")])
    )
    preds = pa.Table.from_pydict(
        {
            "chip_id": ids,
            "model_version": ["m1"] * n,
            "mean_entropy": rng.random(n).tolist(),
            "mean_margin": rng.random(n).tolist(),
            "class_histogram": hist.tolist(),
            "mask_href": [None] * n,
            "created_at": [now] * n,
        },
        schema=PREDICTIONS.schema,
    )
    lab_rows = list(range(0, n, 5))
    labels_t = pa.Table.from_pydict(
        {
            "chip_id": [ids[i] for i in lab_rows],
            "annotation_id": [f"a{i}" for i in lab_rows],
            "project": ["p"] * len(lab_rows),
            "kind": ["classification"] * len(lab_rows),
            "mask_href": [None] * len(lab_rows),
            "classes": [[f"k{labels[i]}"] for i in lab_rows],
            "class_histogram": [None] * len(lab_rows),
            "annotator": ["sim"] * len(lab_rows),
            "lead_time_s": [1.0] * len(lab_rows),
            "al_round": [0] * len(lab_rows),
            "updated_at": [now] * len(lab_rows),
            "row_hash": ["h"] * len(lab_rows),
        },
        schema=LABELS.schema,
    )
    queued = pa.Table.from_pylist(
        [{"round": 0, "chip_id": ids[i], "strategy": "random", "score": 0.0, "rank": 1,
          "model_version": "m1", "embeddings_table_version": 0, "queued_at": now}
         for i in (1, 7, 13)],
        schema=AL_ROUNDS.schema,
    )  # fmt: skip
    return {"embeddings": embeddings, "chips": chips, "predictions": preds, "labels": labels_t,
            "al_rounds": queued}  # fmt: skip


def _pool(tables: dict[str, pa.Table]) -> Pool:
    return pool_from_tables(
        tables["embeddings"],
        chips=tables["chips"],
        predictions=tables["predictions"],
        labels=tables["labels"],
        al_rounds=tables["al_rounds"],
        model_version="m1",
    )


def _cfg(name: str, n: int = 12, **kw: object) -> SelectionConfig:
    return SelectionConfig.model_validate({"batch_size": n, "strategies": [{"name": name}], **kw})


@pytest.mark.parametrize("name", ALL)
def test_no_labelled_queued_neighbour_or_same_location_in_any_batch(name: str) -> None:
    tables = _world()
    pool = _pool(tables)
    cfg = _cfg(name, constraints={"min_distance_m": 1000.0, "min_cosine_distance": 0.05})
    sel = select_batch(pool, cfg, round_=1)
    chips = sel.chip_ids
    assert 0 < len(chips) <= 12
    labelled = set(tables["labels"]["chip_id"].to_pylist())
    queued = set(tables["al_rounds"]["chip_id"].to_pylist())
    assert not (set(chips) & (labelled | queued))
    assert len({c.split("_")[0] for c in chips}) == len(chips)  # one date per location
    lonlat = {r["chip_id"]: (r["lon"], r["lat"]) for r in tables["chips"].to_pylist()}
    for i, a in enumerate(chips):
        for b in chips[i + 1 :]:
            assert _haversine_m(*lonlat[a], *lonlat[b]) >= 1000.0
    assert pool.embeddings is not None
    e = pool.embeddings[sel.picked.rows]
    sims = e @ e.T
    np.fill_diagonal(sims, -1.0)
    assert (1.0 - sims).min() >= 0.05


@pytest.mark.parametrize("name", ALL)
def test_selection_is_deterministic_and_independent_of_row_order(name: str) -> None:
    tables = _world()
    shuffled = dict(tables)
    perm = np.random.default_rng(9).permutation(tables["embeddings"].num_rows)
    shuffled["embeddings"] = tables["embeddings"].take(perm)
    shuffled["predictions"] = tables["predictions"].take(perm[::-1].copy())
    cfg = _cfg(name)
    a = select_batch(_pool(tables), cfg, round_=2).chip_ids
    b = select_batch(_pool(tables), cfg, round_=2).chip_ids
    c = select_batch(_pool(shuffled), cfg, round_=2).chip_ids
    assert a == b == c


def test_the_spatial_check_sees_across_the_antimeridian() -> None:
    pool = make_pool(
        spread_embeddings(3),
        lon=np.array([179.995, -179.995, 0.0]),
        lat=np.array([0.0, 0.0, 0.0]),
    )
    batch = BatchFilter(pool, capacity=3, min_distance_m=2000.0)
    batch.add(0)
    assert not batch.accepts(1)  # ≈ 1.1 km apart across the date line
    assert batch.accepts(2)
    assert batch.rejected["neighbour"] == 1


def test_al_rounds_rows_match_the_contract() -> None:
    pool = _pool(_world())
    sel = select_batch(pool, _cfg("entropy", 5), round_=4)
    when = dt.datetime(2026, 2, 1, tzinfo=dt.UTC)
    rows = to_al_rounds(
        sel, round_=4, model_version="m1", embeddings_table_version=7, queued_at=when
    )
    assert rows.schema == AL_ROUNDS.schema
    assert rows["rank"].to_pylist() == [1, 2, 3, 4, 5]
    assert rows["strategy"].to_pylist() == ["entropy"] * 5
    scores = rows["score"].to_pylist()
    assert scores == sorted(scores, reverse=True)
    assert set(rows["round"].to_pylist()) == {4}


def test_labels_become_knn_label_vectors() -> None:
    tables = _world()
    pool = _pool(tables)
    assert pool.label_vectors is not None
    assert int(pool.labelled.sum()) == tables["labels"].num_rows
    assert np.allclose(pool.label_vectors[pool.labelled].sum(axis=1), 1.0)
    assert int(pool.excluded.sum()) == tables["labels"].num_rows + 3


def test_weighted_mix_and_config_validation() -> None:
    cfg = SelectionConfig.model_validate(
        {"strategies": [{"name": "entropy", "weight": 2}, {"name": "knn"}], "batch_size": 4}
    )
    sel = select_batch(_pool(_world()), cfg)
    assert sel.strategy == "entropy*2+knn*1"
    assert len(sel.chip_ids) == 4
    with pytest.raises(ValidationError, match="cannot be mixed"):
        SelectionConfig.model_validate({"strategies": [{"name": "coreset"}, {"name": "entropy"}]})
    with pytest.raises(ValidationError, match="scoring strategies only"):
        SelectionConfig.model_validate({"hybrid": {"uncertainty": [{"name": "coreset"}]}})
    with pytest.raises(ValidationError):
        SelectionConfig.model_validate({"batch_sise": 3})
    with pytest.raises(ValidationError):
        SelectionConfig.model_validate({"strategies": [{"name": "badge"}]})


def test_spatial_and_location_constraints_change_an_entropy_batch() -> None:
    tables = _world()
    pool = _pool(tables)
    assert pool.mean_entropy is not None
    top = ["L002_0", "L003_0", "L004_0", "L004_1"]  # L002/L003 are 500 m apart; L004 twice
    rows = np.searchsorted(pool.chip_ids.astype(str), top)
    pool.mean_entropy[rows] = [5.0, 4.0, 3.0, 2.0]
    off = {"min_distance_m": 0.0, "one_per_location": False, "min_cosine_distance": 0.0}
    free = select_batch(pool, _cfg("entropy", 4, constraints=off)).chip_ids
    assert free == top
    held = select_batch(pool, _cfg("entropy", 4))
    assert held.chip_ids[:2] == ["L002_0", "L004_0"]
    assert held.rejected["neighbour"] == 2
