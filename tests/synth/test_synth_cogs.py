"""Every raster is a valid COG on the tile's UTM grid, consistent with its STAC asset."""

from __future__ import annotations

import json

import pytest
import rasterio
from earthloop.s2.bands import BANDS
from earthloop.synth import SynthManifest
from earthloop.synth.cog import overview_count
from earthloop.synth.tiles import tile_grid
from rio_cogeo.cogeo import cog_validate


def _all_tifs(m: SynthManifest) -> list:
    return sorted(m.root.rglob("*.tif"))


def test_every_file_is_a_valid_cog(tiny: SynthManifest) -> None:
    tifs = _all_tifs(tiny)
    assert tifs
    for path in tifs:
        valid, errors, _warnings = cog_validate(str(path), quiet=True)
        assert valid, f"{path}: {errors}"
        with rasterio.open(path) as ds:
            # Internally tiled: square blocks of the preset's size (a striped TIFF has full-width
            # blocks a few rows high; rasterio's `tiled` heuristic misreads one-block images).
            assert ds.block_shapes[0] == (128, 128), path
            assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG", path
            assert ds.compression is not None and ds.compression.name.lower() == "deflate", path
            assert ds.overviews(1), f"{path} has no overviews"
            assert ds.nodata == 0, path


def test_assets_match_their_rasters(tiny: SynthManifest) -> None:
    for scene in tiny.scenes:
        item = json.loads(scene.item_path.read_text())
        epsg = item["properties"]["proj:epsg"]
        for key, asset in item["assets"].items():
            with rasterio.open(asset["href"]) as ds:
                assert ds.crs.to_epsg() == epsg
                assert list(ds.shape) == asset["proj:shape"], (scene.item_id, key)
                assert list(ds.transform)[:6] == pytest.approx(asset["proj:transform"])
                rb = asset["raster:bands"][0]
                assert ds.dtypes[0] == rb["data_type"]
                assert ds.block_shapes[0] == (128, 128)  # the tiny preset's block size
                if key == "scl":
                    assert ds.dtypes[0] == "uint8" and ds.res == (20.0, 20.0)
                else:
                    assert ds.dtypes[0] == "uint16"


def test_grids_nest_across_resolutions(tiny: SynthManifest) -> None:
    for scene in tiny.scenes:
        with (
            rasterio.open(scene.assets["red"]) as r10,
            rasterio.open(scene.assets["swir16"]) as r20,
        ):
            assert r10.res == (10.0, 10.0) and r20.res == (20.0, 20.0)
            assert (r20.width * 2, r20.height * 2) == (r10.width, r10.height)
            assert r20.bounds == r10.bounds
        with rasterio.open(scene.assets["coastal"]) as r60:
            assert r60.res == (60.0, 60.0)
            # 128 px is not a multiple of 6: the 60 m grid covers the tile and at most 50 m more.
            assert r60.bounds.left == r10.bounds.left and r60.bounds.top == r10.bounds.top
            assert 0 <= r60.bounds.right - r10.bounds.right < 60


def test_native_resolutions_follow_the_band_table(tiny: SynthManifest) -> None:
    scene = tiny.scenes[0]
    for band in BANDS.values():
        with rasterio.open(scene.assets[band.common_name]) as ds:
            assert ds.res == (band.resolution_m, band.resolution_m), band.name


def test_tile_grid_matches_real_sentinel2_origins() -> None:
    g = tile_grid("33TWN", 512)
    assert g.epsg == 32633
    assert g.mgrs.origin == (499980.0, 5300040.0)
    lon, lat = g.centre_lonlat()
    assert 14.9 < lon < 15.2 and 47.5 < lat < 48.0
    assert tile_grid("55HBU", 64).epsg == 32755  # southern hemisphere


def test_overview_count() -> None:
    assert overview_count(128, 128, 64) == 1
    assert overview_count(22, 22, 64) == 1  # always at least one level
    assert overview_count(10980, 10980, 1024) == 4
