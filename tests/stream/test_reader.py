"""Chip reads checked pixel-for-pixel against plain rasterio on the real COG and JPEG2000 data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from earthloop.stream.reader import plan_groups, read_group
from rasterio.enums import Resampling

pytestmark = pytest.mark.shared_data

RKH = "sentinel2-l2a/cogs-29RKH/S2A_29RKH_20200219_0_L2A"


def _row(
    folder: Path, bands: list[str], col: int, row: int, size: int, **kw: Any
) -> dict[str, Any]:
    with rasterio.open(folder / f"{bands[0]}.tif") as src:
        t, crs = src.transform, src.crs.to_string()
    res = t.a
    return {
        "chip_id": f"c{col}_{row}",
        "location_id": "loc",
        "item_id": folder.name,
        "season": 0,
        "datetime": 0.0,
        "crs": crs,
        "chip_size": size,
        "row_off": row,
        "col_off": col,
        "minx": t.c + col * res,
        "maxx": t.c + (col + size) * res,
        "maxy": t.f - row * res,
        "miny": t.f - (row + size) * res,
        "bands": bands,
        "hrefs": [str(folder / f"{b}.tif") for b in bands],
        "scales": [1e-4] * len(bands),
        "offsets": [kw.get("offset", 0.0)] * len(bands),
        "nodata": 0.0,
        "scl_href": kw.get("scl", str(folder / "SCL.tif")),
        "cloud_fraction": 0.0,
    }


def test_cog_values_match_rasterio_10m_and_20m(shared_data: Path) -> None:
    folder = shared_data / RKH
    r = _row(folder, ["B02", "B05"], col=400, row=300, size=64)
    out = next(read_group([r], resampling=Resampling.nearest, mask_clouds=False))
    assert (
        out["error"] == ""
        and out["image"].shape == (2, 64, 64)
        and out["image"].dtype == np.float32
    )
    with rasterio.open(folder / "B02.tif") as src:
        b02 = src.read(1)[300:364, 400:464].astype(np.float32) * np.float32(1e-4)
    with rasterio.open(folder / "B05.tif") as src:  # 20 m: each pixel covers 2×2 chip pixels
        b05 = src.read(1)[150:182, 200:232].astype(np.float32) * np.float32(1e-4)
    np.testing.assert_array_equal(out["image"][0], b02)
    np.testing.assert_array_equal(out["image"][1], np.kron(b05, np.ones((2, 2), np.float32)))


def test_bilinear_20m_band_stays_close_to_nearest(shared_data: Path) -> None:
    folder = shared_data / RKH
    r = _row(folder, ["B05"], col=400, row=300, size=64)
    near = next(read_group([r], resampling=Resampling.nearest, mask_clouds=False))["image"]
    bil = next(read_group([r], resampling=Resampling.bilinear, mask_clouds=False))["image"]
    assert np.corrcoef(near.ravel(), bil.ravel())[0, 1] > 0.9


def test_group_read_equals_single_reads(shared_data: Path) -> None:
    folder = shared_data / RKH
    rows = [
        _row(folder, ["B04", "B08"], col=c, row=r, size=64) for c in (0, 64, 130) for r in (0, 70)
    ]
    grouped = {o["chip_id"]: o for g in plan_groups(rows, 1024) for o in read_group(g)}
    assert len(plan_groups(rows, 1024)) == 1 and len(grouped) == 6
    for r in rows:
        single = next(read_group([r]))
        np.testing.assert_array_equal(grouped[r["chip_id"]]["image"], single["image"])
        np.testing.assert_array_equal(grouped[r["chip_id"]]["valid"], single["valid"])


def _mixed_window(scl_path: Path, size: int) -> tuple[int, int]:
    """First window with both cloudy and clear pixels: the mask must be exercised both ways."""
    with rasterio.open(scl_path) as src:
        scl = src.read(1)
    for row in range(0, scl.shape[0] - size, size):
        for col in range(0, scl.shape[1] - size, size):
            bad = np.isin(scl[row : row + size, col : col + size], [8, 9, 10]).mean()
            if 0.2 < bad < 0.8:
                return col, row
    raise AssertionError("no mixed window in the test scene")


def test_jpeg2000_static_catalog_values_and_cloud_mask(shared_data: Path) -> None:
    folder = (
        shared_data / "sentinel2-l2a/earth-search-static/sentinel-2-l2a/S2B_33TWM_20230810_0_L2A"
    )
    col, row = _mixed_window(folder / "SCL.tif", 32)
    r = _row(folder, ["B02", "B08"], col=col, row=row, size=32)
    out = next(read_group([r], resampling=Resampling.nearest))
    win = (slice(row, row + 32), slice(col, col + 32))
    with rasterio.open(folder / "B08.tif") as src:
        nir = src.read(1)[win]
    with rasterio.open(folder / "B02.tif") as src:
        blue = src.read(1)[win]
    with rasterio.open(folder / "SCL.tif") as src:
        scl = src.read(1)[win]
    expected_valid = (nir != 0) & (blue != 0) & ~np.isin(scl, [0, 1, 3, 8, 9, 10])
    assert 0 < expected_valid.sum() < expected_valid.size
    np.testing.assert_array_equal(out["valid"], expected_valid)
    ok = out["valid"]
    np.testing.assert_allclose(out["image"][1][ok], nir[ok] * 1e-4, rtol=1e-6)
    assert (out["image"][:, ~ok] == 0).all()  # masked pixels are zeroed, never NaN
    assert not np.isnan(out["image"]).any()


def test_unreadable_file_yields_error_rows_not_exceptions(
    tmp_path: Path, shared_data: Path
) -> None:
    folder = shared_data / RKH
    r = _row(folder, ["B02"], col=0, row=0, size=16)
    bad = tmp_path / "B02.tif"
    bad.write_bytes(b"corrupt")
    r["hrefs"] = [str(bad)]
    out = list(read_group([r, {**r, "chip_id": "other"}]))
    assert [o["error"].split(":")[0] for o in out] == ["read_error", "read_error"]
