"""Clouds, shadows and the SCL behave like Sentinel-2's."""

from __future__ import annotations

import math

import numpy as np
from conftest import ArchiveReader
from earthloop.s2.scl import SCL
from earthloop.synth import LandCover, SynthManifest

CLOUD = [SCL.CLOUD_MEDIUM_PROBABILITY, SCL.CLOUD_HIGH_PROBABILITY, SCL.THIN_CIRRUS]


def test_cloud_cover_is_the_scl_cloud_fraction(
    tiny: SynthManifest, tiny_reader: ArchiveReader
) -> None:
    for scene in tiny.scenes:
        scl = tiny_reader.scl(scene)
        valid = scl != SCL.NO_DATA
        expected = 100.0 * np.isin(scl, CLOUD).sum() / valid.sum()
        props = tiny_reader.item(scene)["properties"]
        assert abs(props["eo:cloud_cover"] - expected) < 1e-4, scene.item_id
        assert abs(scene.cloud_cover - expected) < 1e-4


def test_cloud_cover_spread(tiny: SynthManifest) -> None:
    covers = sorted(s.cloud_cover for s in tiny.scenes)
    assert covers[0] < 3.0, "some scenes must be nearly clear"
    assert covers[-1] > 40.0, "some scenes must be very cloudy"
    for tile in tiny.tiles:
        assert len({round(s.cloud_cover) for s in tiny.scenes if s.tile == tile}) > 1


def test_scl_has_realistic_classes(tiny: SynthManifest, tiny_reader: ArchiveReader) -> None:
    seen: set[int] = set()
    for scene in tiny.scenes:
        seen |= set(np.unique(tiny_reader.scl(scene)).tolist())
    for cls in (SCL.CLOUD_SHADOW, SCL.VEGETATION, SCL.NOT_VEGETATED, SCL.WATER,
                SCL.CLOUD_MEDIUM_PROBABILITY, SCL.CLOUD_HIGH_PROBABILITY, SCL.NO_DATA):  # fmt: skip
        assert int(cls) in seen, cls.name
    cloudy = max(tiny.scenes, key=lambda s: s.cloud_cover)
    scl = tiny_reader.scl(cloudy)
    assert (scl == SCL.CLOUD_SHADOW).mean() > 0.01


def test_shadows_fall_away_from_the_sun(tiny: SynthManifest, tiny_reader: ArchiveReader) -> None:
    checked = 0
    for scene in tiny.scenes:
        scl = tiny_reader.scl(scene)
        cloud = np.isin(scl, [SCL.CLOUD_HIGH_PROBABILITY])
        shadow = scl == SCL.CLOUD_SHADOW
        if cloud.mean() < 0.05 or shadow.mean() < 0.005:
            continue
        az = tiny_reader.item(scene)["properties"]["view:sun_azimuth"]
        away = math.radians(az + 180.0)
        direction = np.array([-math.cos(away), math.sin(away)])  # (rows down, cols right)
        best = {}
        for k in range(0, 25, 2):  # slide the cloud mask away from the sun (20 m pixels)
            dy, dx = (np.rint(direction * k)).astype(int)
            shifted = np.roll(np.roll(cloud, dy, axis=0), dx, axis=1)
            best[k] = (shifted & shadow).sum()
        assert max(best, key=lambda k: best[k]) > 0, (scene.item_id, best)
        checked += 1
    assert checked >= 2


def test_clouds_bright_shadows_dark(tiny: SynthManifest, tiny_reader: ArchiveReader) -> None:
    cloudy = max(tiny.scenes, key=lambda s: s.cloud_cover)
    scl10 = tiny_reader.scl10(cloudy)
    lc = tiny_reader.label(cloudy.tile, "landcover")
    for key in ("blue", "red", "nir"):
        refl = tiny_reader.reflectance(cloudy, key)
        assert np.nanmean(refl[scl10 == SCL.CLOUD_HIGH_PROBABILITY]) > 0.4, key
    nir = tiny_reader.reflectance(cloudy, "nir")
    clear = tiny_reader.clear10(cloudy)
    shadow = scl10 == SCL.CLOUD_SHADOW
    compared = 0
    for cls in LandCover:
        if cls == LandCover.WATER:  # already black in the NIR; blur and haze dominate
            continue
        s, c = shadow & (lc == cls), clear & (lc == cls)
        if s.sum() > 30 and c.sum() > 30:
            assert np.nanmean(nir[s]) < 0.75 * np.nanmean(nir[c]), cls.name
            compared += 1
    assert compared >= 2


def test_nodata_edge(tiny: SynthManifest, tiny_reader: ArchiveReader) -> None:
    edge = [s for s in tiny.scenes if (tiny_reader.scl(s) == 0).mean() > 0.05]
    assert len(edge) == 1
    s = edge[0]
    red = tiny_reader.reflectance(s, "red")
    scl10 = tiny_reader.scl10(s)
    # the 10 m and 20 m nodata areas agree except along the (slanted) edge
    assert np.mean(np.isnan(red) == (scl10 == 0)) > 0.97
