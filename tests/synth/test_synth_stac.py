"""STAC output: Earth-Search-shaped items, a collection that covers them, ndjson and a catalog."""

from __future__ import annotations

import json
import os

import pystac
import pystac.validation
import pytest
from earthloop.synth import SynthManifest
from earthloop.synth.tiles import parse_mgrs, square_letters
from rasterio.warp import transform as warp_transform

ASSET_KEYS = {
    "coastal", "blue", "green", "red", "rededge1", "rededge2", "rededge3",
    "nir", "nir08", "nir09", "swir16", "swir22", "scl",
}  # fmt: skip


def _items(m: SynthManifest) -> list[dict]:
    return [json.loads(p.read_text()) for p in m.item_paths]


def test_items_round_trip_and_validate_offline(tiny: SynthManifest) -> None:
    for path in tiny.item_paths:
        d = json.loads(path.read_text())
        pystac.validation.validate_dict(d, extensions=[])  # bundled core schema, no network
        item = pystac.Item.from_file(str(path))
        assert item.id == d["id"] and item.collection_id == "sentinel-2-l2a"
        assert set(item.assets) == ASSET_KEYS
        for key, asset in item.assets.items():
            assert os.path.isabs(asset.href) and os.path.exists(asset.href), key
            assert asset.media_type == "image/tiff; application=geotiff; profile=cloud-optimized"
            assert "data" in (asset.roles or [])


def test_earth_search_properties(tiny: SynthManifest) -> None:
    for d in _items(tiny):
        p = d["properties"]
        zone, band, square = p["mgrs:utm_zone"], p["mgrs:latitude_band"], p["mgrs:grid_square"]
        tile = f"{zone}{band}{square}"
        day = p["datetime"][:10].replace("-", "")
        assert d["id"] == f"S2{p['platform'][-1].upper()}_{tile}_{day}_0_L2A"
        assert p["constellation"] == "sentinel-2" and p["platform"] in {
            "sentinel-2a",
            "sentinel-2b",
        }
        assert p["proj:epsg"] == 32600 + zone and p["proj:code"] == f"EPSG:{32600 + zone}"
        assert p["s2:processing_baseline"] in {"05.10", "03.01"}
        assert 0 <= p["eo:cloud_cover"] <= 100
        assert p["datetime"].startswith("2023-") and p["datetime"].endswith("Z")
        m = parse_mgrs(tile)
        assert m.epsg == p["proj:epsg"]
        # The footprint really lies in that MGRS square (centre → UTM → letters).
        lon = sum(c[0] for c in d["geometry"]["coordinates"][0][:-1]) / (
            len(d["geometry"]["coordinates"][0]) - 1
        )
        lat = sum(c[1] for c in d["geometry"]["coordinates"][0][:-1]) / (
            len(d["geometry"]["coordinates"][0]) - 1
        )
        xs, ys = warp_transform("EPSG:4326", f"EPSG:{m.epsg}", [lon], [lat])
        assert square_letters(zone, xs[0], ys[0]) == square or ys[0] > m.northing + 100_000 - 1


def test_raster_bands_radiometry(tiny: SynthManifest) -> None:
    for d in _items(tiny):
        offset = 0.0 if d["properties"]["s2:processing_baseline"] == "03.01" else -0.1
        for key, asset in d["assets"].items():
            rb = asset["raster:bands"][0]
            assert rb["nodata"] == 0
            if key == "scl":
                assert rb["data_type"] == "uint8" and "scale" not in rb
            else:
                assert rb["data_type"] == "uint16"
                assert rb["scale"] == 0.0001 and rb["offset"] == offset
                assert asset["eo:bands"][0]["name"] == key


def test_baselines_present(tiny: SynthManifest) -> None:
    baselines = [s.processing_baseline for s in tiny.scenes]
    assert baselines.count("03.01") == 1 and baselines.count("05.10") == len(baselines) - 1


def test_ndjson_matches_items(tiny: SynthManifest) -> None:
    lines = tiny.items_ndjson.read_text().splitlines()
    assert len(lines) == len(tiny.item_paths) == len(tiny.scenes)
    by_id = {d["id"]: d for d in _items(tiny)}
    for line in lines:
        d = json.loads(line)
        static = by_id[d["id"]]
        assert d["properties"] == static["properties"] and d["assets"] == static["assets"]
        assert d["collection"] == "sentinel-2-l2a"
        pystac.Item.from_dict(d)


def test_collection_extent_covers_items(tiny: SynthManifest) -> None:
    coll = pystac.Collection.from_file(str(tiny.collection_path))
    pystac.validation.validate_dict(json.loads(tiny.collection_path.read_text()), extensions=[])
    west, south, east, north = coll.extent.spatial.bboxes[0]
    start, end = coll.extent.temporal.intervals[0]
    assert start is not None and end is not None
    for d in _items(tiny):
        x0, y0, x1, y1 = d["bbox"]
        assert west <= x0 <= x1 <= east and south <= y0 <= y1 <= north
        item = pystac.Item.from_dict(d)
        assert item.datetime is not None and start <= item.datetime <= end
        # bbox is the envelope of the geometry
        ring = d["geometry"]["coordinates"][0]
        assert min(c[0] for c in ring) == pytest.approx(x0) and max(
            c[1] for c in ring
        ) == pytest.approx(y1)
    assert set(coll.extra_fields["item_assets"]) == ASSET_KEYS


def test_static_catalog_walks(tiny: SynthManifest) -> None:
    cat = pystac.Catalog.from_file(str(tiny.catalog_path))
    colls = list(cat.get_children())
    assert [c.id for c in colls] == ["sentinel-2-l2a"]
    items = list(cat.get_items(recursive=True))
    assert sorted(i.id for i in items) == sorted(s.item_id for s in tiny.scenes)
    for item in items:
        for asset in item.assets.values():
            assert os.path.exists(asset.get_absolute_href() or "")


def test_swath_edge_scene_has_a_smaller_footprint(tiny: SynthManifest) -> None:
    items = _items(tiny)
    edge = [d for d in items if d["properties"]["s2:nodata_pixel_percentage"] > 5]
    assert len(edge) == 1, "the tiny preset has one scene cut by the swath edge"
    d = edge[0]
    full = [
        x
        for x in items
        if x["properties"]["s2:mgrs_tile"] == d["properties"]["s2:mgrs_tile"] and x is not d
    ][0]

    def area(item: dict) -> float:
        ring = item["geometry"]["coordinates"][0]
        return abs(sum(a[0] * b[1] - b[0] * a[1] for a, b in zip(ring, ring[1:], strict=False))) / 2

    ratio = area(d) / area(full)
    assert ratio == pytest.approx(1 - d["properties"]["s2:nodata_pixel_percentage"] / 100, abs=0.05)
