"""Columnar read tasks: planned from Arrow index batches, pixel-equal to the per-chip reader."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import rasterio
from earthloop.ingest.pipeline import clustered
from earthloop.store.tables import CHIPS
from earthloop.stream.batches import (
    ChipReader,
    LocationReader,
    groups_of,
    plan_locations,
    plan_table,
)
from earthloop.stream.reader import plan_groups, read_group, read_location

pytestmark = pytest.mark.shared_data

RKH = "sentinel2-l2a/cogs-29RKH/S2A_29RKH_20200219_0_L2A"
BANDS = ["B02", "B03", "B04", "B08"]


def _rows(folder: Path, size: int, n: int, scenes: int = 2, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` full index rows on a grid of the real COG, spread over ``scenes`` scene ids."""
    with rasterio.open(folder / f"{BANDS[0]}.tif") as src:
        t, crs, w = src.transform, src.crs.to_string(), src.width
    per = w // size
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n):
        cell = int(rng.integers(0, per * per))
        r, c = (cell // per) * size, (cell % per) * size
        scene = k % scenes
        rows.append(
            {
                "chip_id": f"c{k:05d}",
                "location_id": f"{k // 2:08x}",
                "item_id": f"scene-{scene}",
                "tile": "29RKH",
                "grid_key": "29RKH",
                "datetime": datetime(2020, 2 + scene, 19, tzinfo=UTC),
                "season": scene,
                "lon": 0.0,
                "lat": 0.0,
                "crs": crs,
                "minx": t.c + c * t.a,
                "miny": t.f - (r + size) * t.a,
                "maxx": t.c + (c + size) * t.a,
                "maxy": t.f - r * t.a,
                "col_off": c,
                "row_off": r,
                "chip_size": size,
                "bands": BANDS,
                "hrefs": [str(folder / f"{b}.tif") for b in BANDS],
                "scales": [1e-4] * 4,
                "offsets": [-0.1 * scene] * 4,
                "nodata": 0.0,
                "scl_href": str(folder / "SCL.tif"),
                "cloud_fraction": 0.0,
                "shadow_fraction": 0.0,
                "nodata_fraction": 0.0,
                "scene_cloud_cover": 0.0,
                "processing_baseline": "02.14",
                "split": "train",
                "row_hash": str(k),
            }
        )
    return rows


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=CHIPS.schema)


def test_arrow_plan_is_the_row_plan(shared_data: Path) -> None:
    rows = _rows(shared_data / RKH, 64, 300)
    want = [[r["chip_id"] for r in g] for g in plan_groups(rows, 512, 16)]
    plan = plan_table(_table(rows), 512, 16)
    assert plan.num_rows == len(want)  # one row per read group
    assert [g.ids["chip_id"].tolist() for g in groups_of(plan)] == want
    # a block boundary Ray Data cuts into the plan falls between groups, never inside one
    tail = [g.ids["chip_id"].tolist() for g in groups_of(plan.slice(5))]
    assert tail == want[5:]
    # default group size: the COG's own internal tile (512 px here), (512 / 64)² chips at most
    default = list(groups_of(plan_table(_table(rows))))
    assert [len(g) for g in default] == [len(g) for g in plan_groups(rows, 512, 64)]


def test_columnar_batches_equal_per_chip_reads(shared_data: Path) -> None:
    rows = _rows(shared_data / RKH, 64, 120)
    batches = list(ChipReader(BANDS, resampling="nearest")(plan_table(_table(rows), 512)))
    assert batches and all(b["image"].ndim == 4 for b in batches)
    got = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    assert got["image"].shape == (120, 4, 64, 64) and got["image"].dtype == np.float32
    assert got["valid"].shape == (120, 64, 64) and got["valid"].dtype == bool
    assert (got["error"] == "").all()
    pos = {c: i for i, c in enumerate(got["chip_id"].tolist())}
    assert sorted(pos) == sorted(r["chip_id"] for r in rows)  # each chip once
    from rasterio.enums import Resampling

    for group in plan_groups(rows, 512):
        for d in read_group(group, BANDS, resampling=Resampling.nearest):
            i = pos[d["chip_id"]]
            np.testing.assert_array_equal(got["image"][i], d["image"])
            np.testing.assert_array_equal(got["valid"][i], d["valid"])
            assert got["timestamp"][i] == d["timestamp"] and got["season"][i] == d["season"]
            assert got["location_id"][i] == d["location_id"]


def test_unreadable_groups_are_dropped_or_kept_with_the_error(
    shared_data: Path, tmp_path: Path
) -> None:
    rows = _rows(shared_data / RKH, 64, 40, scenes=2)
    bad = tmp_path / "B02.tif"
    bad.write_bytes(b"corrupt")
    for r in rows:
        if r["item_id"] == "scene-1":
            r["hrefs"] = [str(bad)] + r["hrefs"][1:]
    dropped = list(ChipReader(BANDS)(plan_table(_table(rows))))
    ids = np.concatenate([b["chip_id"] for b in dropped])
    assert sorted(ids) == sorted(r["chip_id"] for r in rows if r["item_id"] == "scene-0")
    kept = list(ChipReader(BANDS, keep_errors=True)(plan_table(_table(rows))))
    err = np.concatenate([b["error"] for b in kept])
    assert len(err) == 40 and sum(e.startswith("read_error") for e in err) == 20


def test_location_reader_matches_read_location(shared_data: Path) -> None:
    rows = _rows(shared_data / RKH, 32, 40, scenes=2)  # locations of two chips, two seasons
    table = _table(rows).sort_by("location_id")
    plan = plan_locations(table, dates=2)
    assert plan.num_rows == 20  # one row per location, its dates as a list
    assert plan_locations(table, dates=3).num_rows == 0  # nobody has three seasons
    out = list(LocationReader(BANDS, dates=2, seed=None, cachemax_mb=64)(plan.slice(0, 20)))
    got = {k: np.concatenate([b[k] for b in out]) for k in out[0]}
    assert got["images"].shape == (20, 2, 4, 32, 32) and got["timestamps"].shape == (20, 2)
    for i, loc in enumerate(got["location_id"].tolist()):
        mine = [dict(r, datetime=r["datetime"].timestamp()) for r in rows]
        want = read_location([r for r in mine if r["location_id"] == loc], BANDS, 2)
        assert want is not None
        np.testing.assert_array_equal(got["images"][i], want["images"])
        np.testing.assert_array_equal(got["timestamps"][i], want["timestamps"])


def test_location_reader_drops_a_location_with_an_unreadable_date(
    shared_data: Path, tmp_path: Path
) -> None:
    """Dates are read grouped across locations; one broken scene drops exactly the locations
    that chose a date in it, and every other location keeps its exact pixels."""
    rows = _rows(shared_data / RKH, 32, 60, scenes=3)  # location j: scenes 2j % 3, (2j+1) % 3
    bad = tmp_path / "B02.tif"
    bad.write_bytes(b"corrupt")
    for r in rows:
        if r["item_id"] == "scene-2":
            r["hrefs"] = [str(bad)] + r["hrefs"][1:]
    plan = plan_locations(_table(rows).sort_by("location_id"), dates=2)
    out = list(LocationReader(BANDS, dates=2, seed=None, cachemax_mb=64)(plan))
    got = {k: np.concatenate([b[k] for b in out]) for k in out[0]}
    broken = {r["location_id"] for r in rows if r["item_id"] == "scene-2"}
    assert set(got["location_id"].tolist()) == {r["location_id"] for r in rows} - broken
    assert broken and len(got["location_id"]) == 30 - len(broken)
    mine = [dict(r, datetime=r["datetime"].timestamp()) for r in rows]
    for i, loc in enumerate(got["location_id"].tolist()):
        want = read_location([r for r in mine if r["location_id"] == loc], BANDS, 2)
        assert want is not None
        np.testing.assert_array_equal(got["images"][i], want["images"])
        np.testing.assert_array_equal(got["valid"][i], want["valid"])


def test_ingest_order_keeps_each_tile_contiguous(shared_data: Path) -> None:
    rows = _rows(shared_data / RKH, 64, 400, scenes=3, seed=1)
    table = clustered(_table(rows))
    keys = [
        (it, r // 1024, c // 1024)
        for it, r, c in zip(
            table["item_id"].to_pylist(),
            table["row_off"].to_pylist(),
            table["col_off"].to_pylist(),
            strict=True,
        )
    ]
    runs = [k for i, k in enumerate(keys) if i == 0 or keys[i - 1] != k]
    assert len(runs) == len(set(keys))  # every (scene, tile) is one run of rows
    assert sorted(table["chip_id"].to_pylist()) == sorted(r["chip_id"] for r in rows)


def test_label_windows_travel_in_the_columnar_batch(shared_data: Path) -> None:
    """With label rasters, each chip's label window (nearest) comes as an (N, H, W) column."""
    folder = shared_data / RKH
    rows = _rows(folder, 64, 30)
    labels = {"29RKH": str(folder / "SCL.tif")}  # any raster on the grid serves as a label here
    out = list(ChipReader(BANDS, labels=labels)(plan_table(_table(rows), 512)))
    got = {k: np.concatenate([b[k] for b in out]) for k in out[0]}
    assert got["label"].shape == (30, 64, 64) and got["label"].dtype == np.int64
    assert len(np.unique(got["label"])) > 1  # real SCL classes, not a zero fill
    pos = {c: i for i, c in enumerate(got["chip_id"].tolist())}
    for group in plan_groups(rows, 512):
        for d in read_group(group, BANDS, labels=labels):
            np.testing.assert_array_equal(got["label"][pos[d["chip_id"]]], d["label"])
