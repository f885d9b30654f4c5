"""Seasonal behaviour: vegetation greens up and senesces, water/urban/bare stay put."""

from __future__ import annotations

import numpy as np
from conftest import ArchiveReader
from earthloop.synth import CropType, LandCover


def _mean_ndvi(reader: ArchiveReader, tile: str, month: str, label: str, cls: int) -> float:
    scene = next(s for s in reader.scenes(tile) if s.datetime[5:7] == month)
    mask = (reader.label(tile, label) == cls) & reader.clear10(scene)
    assert mask.sum() > 20, (tile, month, label, cls)
    return float(np.nanmean(reader.ndvi(scene)[mask]))


def test_cropland_greener_in_summer_than_winter(clear_reader: ArchiveReader) -> None:
    for tile in clear_reader.m.tiles:
        jan = _mean_ndvi(clear_reader, tile, "01", "landcover", LandCover.CROPLAND)
        jul = _mean_ndvi(clear_reader, tile, "07", "landcover", LandCover.CROPLAND)
        assert jul > jan + 0.08, (tile, jan, jul)
        forest_jan = _mean_ndvi(clear_reader, tile, "01", "landcover", LandCover.BROADLEAF_FOREST)
        forest_jul = _mean_ndvi(clear_reader, tile, "07", "landcover", LandCover.BROADLEAF_FOREST)
        assert forest_jul > forest_jan + 0.15


def test_stable_classes_stay_flat(clear_reader: ArchiveReader) -> None:
    for tile in clear_reader.m.tiles:
        for cls in (LandCover.URBAN, LandCover.BARE):
            jan = _mean_ndvi(clear_reader, tile, "01", "landcover", cls)
            jul = _mean_ndvi(clear_reader, tile, "07", "landcover", cls)
            assert abs(jul - jan) < 0.1 and jul < 0.4, (tile, cls.name, jan, jul)


def test_water_is_dark_in_nir(clear_reader: ArchiveReader) -> None:
    checked = 0
    for scene in clear_reader.scenes():
        water = clear_reader.interior(scene.tile, LandCover.WATER) & clear_reader.clear10(scene)
        if water.sum() > 20:
            assert np.nanmedian(clear_reader.reflectance(scene, "nir")[water]) < 0.05
            checked += 1
    assert checked >= 3


def test_crop_calendars_differ(clear_reader: ArchiveReader) -> None:
    for tile in clear_reader.m.tiles:
        ndvi = {
            (month, crop): _mean_ndvi(clear_reader, tile, month, "croptype", crop)
            for month in ("01", "05", "07")
            for crop in (CropType.WINTER_WHEAT, CropType.MAIZE, CropType.SUNFLOWER)
        }
        # Winter wheat peaks in May and is harvested by July; maize is the other way round.
        assert ndvi["05", CropType.WINTER_WHEAT] > ndvi["05", CropType.MAIZE] + 0.2
        assert ndvi["07", CropType.MAIZE] > ndvi["07", CropType.WINTER_WHEAT] + 0.2
        # Maize and sunflower look alike in July but not in May.
        assert abs(ndvi["07", CropType.MAIZE] - ndvi["07", CropType.SUNFLOWER]) < 0.1
        assert ndvi["05", CropType.SUNFLOWER] > ndvi["05", CropType.MAIZE] + 0.08
