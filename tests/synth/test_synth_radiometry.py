"""DN encoding per processing baseline, checked through the platform's own radiometry code."""

from __future__ import annotations

import numpy as np
from conftest import ArchiveReader, read
from earthloop.synth import LandCover, SynthManifest


def _water_dn(reader: ArchiveReader, scene, key: str) -> np.ndarray:  # type: ignore[no-untyped-def]
    water = reader.interior(scene.tile, LandCover.WATER)
    dn = read(scene.assets[key])
    return dn[water & reader.clear10(scene) & (dn > 0)]


def test_offset_baseline_adds_1000_dn(tiny: SynthManifest, tiny_reader: ArchiveReader) -> None:
    for scene in tiny.scenes:
        dn = read(scene.assets["swir22"]).astype(np.int64)
        valid = dn[dn > 0]
        if scene.processing_baseline == "05.10":
            # Nothing is darker than 0 reflectance, so every valid DN carries the +1000 offset.
            assert valid.min() >= 1000, scene.item_id
        else:
            assert valid.min() < 1000, scene.item_id  # dark water in SWIR: a few hundred DN at most


def test_mean_dn_is_reflectance_times_1e4_plus_offset(
    tiny: SynthManifest, tiny_reader: ArchiveReader
) -> None:
    for scene in tiny.scenes:
        refl = tiny_reader.reflectance(scene, "nir")
        dn = read(scene.assets["nir"]).astype(np.float64)
        ok = dn > 0
        offset = 1000.0 if scene.processing_baseline == "05.10" else 0.0
        assert abs(dn[ok].mean() - (np.nanmean(refl[ok]) * 1e4 + offset)) < 0.5, scene.item_id
        assert 0.05 < np.nanmean(refl[ok]) < 0.6  # plausible NIR scene mean
        assert np.isnan(refl[~ok]).all()


def test_reflectance_is_consistent_across_baselines(
    tiny: SynthManifest, tiny_reader: ArchiveReader
) -> None:
    """Water NIR reflectance agrees between the 03.01 scene and the 05.10 scenes of its tile
    once each is converted with its own offset; ignoring the offset would differ by 0.1."""
    legacy = next(s for s in tiny.scenes if s.processing_baseline == "03.01")
    modern = [s for s in tiny.scenes if s.tile == legacy.tile and s is not legacy]
    water = tiny_reader.interior(legacy.tile, LandCover.WATER)

    def water_nir(scene) -> float:  # type: ignore[no-untyped-def]
        refl = tiny_reader.reflectance(scene, "nir")
        return float(np.nanmedian(refl[water & tiny_reader.clear10(scene)]))

    ref = water_nir(legacy)
    assert 0.0 < ref < 0.06
    for scene in modern:
        assert abs(water_nir(scene) - ref) < 0.03, scene.item_id
    legacy_dn = _water_dn(tiny_reader, legacy, "nir")
    modern_dn = _water_dn(tiny_reader, modern[0], "nir")
    assert np.median(legacy_dn) < 700 and 1000 < np.median(modern_dn) < 1700
