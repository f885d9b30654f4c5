import json
from pathlib import Path

import numpy as np
import pytest
from earthloop.s2.radiometry import (
    Radiometry,
    baseline_radiometry,
    parse_baseline,
    radiometry_for_asset,
    to_reflectance,
)


def test_baseline_rule() -> None:
    assert baseline_radiometry("03.01").offset == 0.0
    assert baseline_radiometry("04.00").offset == pytest.approx(-0.1)
    assert baseline_radiometry("05.10").offset == pytest.approx(-0.1)
    assert baseline_radiometry(None).offset == 0.0
    assert parse_baseline("5.1") == (5, 1)


def test_nodata_stays_masked_and_offset_applies() -> None:
    dn = np.array([[0, 1000, 2000]], dtype=np.uint16)
    out = to_reflectance(dn, Radiometry(1e-4, -0.1, 0))
    assert np.isnan(out[0, 0])
    np.testing.assert_allclose(out[0, 1:], [0.0, 0.1], atol=1e-6)


def test_raster_bands_win_over_baseline() -> None:
    asset = {"raster:bands": [{"scale": 0.0002, "offset": 0.0, "nodata": 0}]}
    r = radiometry_for_asset(asset, {"s2:processing_baseline": "05.00"})
    assert (r.scale, r.offset) == (0.0002, 0.0)


def test_boa_offset_applied_flag_overrides_raster_bands() -> None:
    asset = {"raster:bands": [{"scale": 0.0001, "offset": -0.1, "nodata": 0}]}
    props = {"s2:processing_baseline": "05.09", "earthsearch:boa_offset_applied": True}
    assert radiometry_for_asset(asset, props).offset == 0.0


def _items(shared_data: Path) -> list[dict]:
    folder = shared_data / "sentinel2-l2a" / "earth-search-items"
    items = []
    for p in sorted(folder.glob("*.json")):
        d = json.loads(p.read_text())
        if d.get("type") == "Feature" and "assets" in d:
            items.append(d)
    return items


@pytest.mark.shared_data
def test_real_items_across_baselines(shared_data: Path) -> None:
    """Baselines 00.01…05.10: offset is -0.1 exactly when >= 04.00 and not already applied."""
    items = _items(shared_data)
    baselines = set()
    for it in items:
        props = it["properties"]
        base = props.get("s2:processing_baseline")
        if base is None or "red" not in it["assets"]:
            continue
        baselines.add(base)
        r = radiometry_for_asset(it["assets"]["red"], props)
        assert r.scale == pytest.approx(1e-4)
        declared = it["assets"]["red"].get("raster:bands", [{}])[0].get("offset")
        applied = props.get("earthsearch:boa_offset_applied")
        if applied:
            expected = 0.0
        elif declared is not None:
            expected = declared
        else:
            expected = -0.1 if parse_baseline(base) >= (4, 0) else 0.0
        assert r.offset == pytest.approx(expected), (it["id"], base)
    assert {"00.01", "05.10"} <= baselines or len(baselines) >= 5, baselines


@pytest.mark.shared_data
def test_static_catalog_real_pixels_are_plausible_reflectance(shared_data: Path) -> None:
    """On real August vegetation the harmonised reflectance must be positive (not offset twice)."""
    import rasterio

    item_dir = (
        shared_data / "sentinel2-l2a/earth-search-static/sentinel-2-l2a/S2A_33TWL_20230815_0_L2A"
    )
    item = json.loads((item_dir / "S2A_33TWL_20230815_0_L2A.json").read_text())
    r = radiometry_for_asset(item["assets"]["nir"], item["properties"])
    with rasterio.open(item_dir / "B08.tif") as src:
        refl = to_reflectance(src.read(1), r)
    assert 0.2 < float(np.nanmedian(refl)) < 0.6  # summer NIR over vegetation
