"""Ground truth: every class present, coherent regions, parcels with boundaries."""

from __future__ import annotations

import numpy as np
import rasterio
from conftest import ArchiveReader
from earthloop.synth import CROPTYPE_CLASSES, LANDCOVER_CLASSES, LandCover, SynthManifest


def test_label_rasters_share_the_10m_grid(tiny: SynthManifest) -> None:
    for tile, lab in tiny.labels.items():
        scene = next(s for s in tiny.scenes if s.tile == tile)
        with rasterio.open(scene.assets["red"]) as ref:
            for path in (lab.landcover, lab.croptype, lab.parcels):
                with rasterio.open(path) as ds:
                    assert (
                        ds.crs == ref.crs
                        and ds.transform == ref.transform
                        and ds.shape == ref.shape
                    )
        with rasterio.open(lab.landcover) as ds:
            assert ds.dtypes[0] == "uint8" and ds.tags()["CLASS_1"] == "water"
        with rasterio.open(lab.parcels) as ds:
            assert ds.dtypes[0] == "uint32"


def test_all_classes_present(tiny: SynthManifest, tiny_reader: ArchiveReader) -> None:
    for tile in tiny.tiles:
        lc = tiny_reader.label(tile, "landcover")
        assert set(np.unique(lc).tolist()) == set(LANDCOVER_CLASSES), tile
        assert lc.min() >= 1, "every pixel has a land-cover label"
        ct = tiny_reader.label(tile, "croptype")
        assert set(np.unique(ct).tolist()) == {0, *CROPTYPE_CLASSES}, tile
    assert tiny.landcover_classes == LANDCOVER_CLASSES and tiny.croptype_classes == CROPTYPE_CLASSES


def test_regions_are_spatially_coherent(tiny: SynthManifest, tiny_reader: ArchiveReader) -> None:
    for tile in tiny.tiles:
        lc = tiny_reader.label(tile, "landcover")
        same = np.mean(lc[:, 1:] == lc[:, :-1]) + np.mean(lc[1:] == lc[:-1])
        assert same / 2 > 0.85, tile  # per-pixel noise would give ~0.2


def test_parcels(tiny: SynthManifest, tiny_reader: ArchiveReader) -> None:
    for tile in tiny.tiles:
        parcels = tiny_reader.label(tile, "parcels").astype(np.int64)
        ct = tiny_reader.label(tile, "croptype")
        lc = tiny_reader.label(tile, "landcover")
        ids, counts = np.unique(parcels[parcels > 0], return_counts=True)
        assert len(ids) >= 20, tile
        assert counts.min() > 1 and np.median(counts) > 40
        assert np.array_equal(parcels > 0, ct > 0)
        assert (lc[parcels > 0] == LandCover.CROPLAND).all()
        # one crop per parcel
        for pid in ids[:50]:
            assert len(np.unique(ct[parcels == pid])) == 1
        # neighbouring parcels never touch: a boundary (field margin) separates them
        for a, b in ((parcels[:, 1:], parcels[:, :-1]), (parcels[1:], parcels[:-1])):
            touching = (a > 0) & (b > 0) & (a != b)
            assert not touching.any(), tile
        margins = (parcels == 0) & (lc == LandCover.GRASSLAND)
        assert margins.sum() > 0
