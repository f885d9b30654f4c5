"""The benchmark world (``world`` / ``world_small`` presets): layout, switches, archive.

Every switch is tested for doing what docs/world.md says it does, and nothing else: a switch
that silently changed another property would make the ablation table measure the wrong thing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pystac
import pytest
from earthloop.ingest.scenes import describe_scene
from earthloop.s2.bands import resolve_bands
from earthloop.synth import PRESETS, SynthManifest, generate
from earthloop.synth.clouds import SunPosition
from earthloop.synth.presets import resolve_preset
from earthloop.synth.regions import SWITCHES
from earthloop.synth.tiles import tile_grid
from earthloop.synth.world import CONTEXT_TWINS, WorldClass, WorldTile, build_world_tile
from earthloop.synth.world_render import WorldScene, render_world_scene, world_unit_tables

BANDS = ["B02", "B03", "B04", "B08"]


def render(
    tile_index: int = 0, seed: int = 0, doy: float = 190, **switches: bool
) -> tuple[WorldTile, WorldScene]:
    preset = resolve_preset("world_small", {"world": switches} if switches else {})
    assert preset.world is not None
    grid = tile_grid(preset.tiles[tile_index], preset.size_px)
    tile = build_world_tile(grid, preset, seed, tile_index)
    tables = world_unit_tables(tile, preset.world, seed)
    scene = render_world_scene(
        tile, tables, preset.world, doy=doy, sun=SunPosition.at(48.0, doy),
        cloud_target=0.0, seed=seed, key=f"d{int(doy)}", bands=BANDS,
    )  # fmt: skip
    return tile, scene


def neighbour_corr(a: np.ndarray) -> float:
    """Correlation of horizontally adjacent pixels: ~0 for white noise, ~1 for smooth fields."""
    x, y = a[:, :-1].ravel(), a[:, 1:].ravel()
    return float(np.corrcoef(x, y)[0, 1])


@pytest.fixture(scope="module")
def world_archive(tmp_path_factory: pytest.TempPathFactory) -> SynthManifest:
    return generate(tmp_path_factory.mktemp("world_small"), preset="world_small", seed=0)


def test_same_seed_same_world_and_other_seed_differs() -> None:
    a_tile, a = render(seed=3)
    b_tile, b = render(seed=3)
    c_tile, c = render(seed=4)
    np.testing.assert_array_equal(a_tile.landcover, b_tile.landcover)
    for band in BANDS:
        np.testing.assert_array_equal(a.reflectance[band], b.reflectance[band])
    assert (a_tile.landcover != c_tile.landcover).mean() > 0.3
    assert not np.allclose(a.reflectance["B08"], c.reflectance["B08"])


def test_every_class_occurs_and_the_context_twins_exist() -> None:
    seen: set[int] = set()
    for ti in range(len(PRESETS["world_small"].tiles)):
        tile, _ = render(tile_index=ti)
        seen |= set(np.unique(tile.label("truth")).tolist())
    assert seen == {int(c) for c in WorldClass}
    assert set(CONTEXT_TWINS) == {WorldClass.URBAN_GREEN, WorldClass.HEDGEROW, WorldClass.MEADOW}


def test_sensor_noise_switch_removes_white_noise_only() -> None:
    tile_on, on = render()
    tile_off, off = render(sensor_noise=False)
    np.testing.assert_array_equal(tile_on.landcover, tile_off.landcover)
    diff = on.reflectance["B08"] - off.reflectance["B08"]
    assert 0.002 < float(diff.std()) < 0.02
    assert abs(neighbour_corr(diff)) < 0.1  # white: no spatial structure


def test_atmosphere_switch_removes_a_smooth_blue_heavy_residual() -> None:
    _, on = render(sensor_noise=False)
    _, off = render(sensor_noise=False, atmosphere=False)
    blue = on.reflectance["B02"] - off.reflectance["B02"]
    nir = on.reflectance["B08"] - off.reflectance["B08"]
    assert float(np.abs(blue).mean()) > 0.002
    assert float(np.abs(blue).mean()) > float(np.abs(nir).mean())
    assert neighbour_corr(blue) > 0.8  # kilometre-scale, not per pixel


def test_illumination_switch_removes_a_cross_track_ramp() -> None:
    _, on = render(sensor_noise=False)
    _, off = render(sensor_noise=False, illumination=False)
    assert on.effects.view_slope != 0 and off.effects.view_slope == 0
    ratio = on.reflectance["B08"] / np.maximum(off.reflectance["B08"], 1e-3)
    column_means = ratio.mean(axis=0)
    # Brightness changes across the swath by the drawn slope (NIR: full BRDF weight) …
    relative = float(np.ptp(column_means) / column_means.mean())
    assert relative == pytest.approx(abs(on.effects.view_slope), rel=0.05)
    assert float(ratio.std(axis=0).mean()) < 1e-3  # … but not along a column
    assert float(column_means.mean()) != pytest.approx(1.0, abs=1e-4)  # sun angle: a gain


def test_adjacency_switch_removes_blur_from_the_surroundings() -> None:
    _, on = render(sensor_noise=False)
    _, off = render(sensor_noise=False, adjacency=False)

    def contrast(a: np.ndarray) -> float:
        return float(np.abs(np.diff(a, axis=1)).mean())

    assert contrast(on.reflectance["B08"]) < contrast(off.reflectance["B08"])


def test_thin_cloud_is_never_flagged_by_the_scl() -> None:
    for doy in range(100, 300, 20):  # a date with thin cloud (drawn on ~60 % of dates)
        _, on = render(doy=doy, sensor_noise=False)
        if on.effects.thin_cloud is not None:
            break
    else:
        pytest.fail("no date with thin cloud")
    _, off = render(doy=doy, sensor_noise=False, thin_cloud=False)
    assert off.effects.thin_cloud is None
    np.testing.assert_array_equal(on.scl, off.scl)
    brighter = on.reflectance["B02"] - off.reflectance["B02"]
    assert float(brighter.max()) > 0.005
    assert float(on.effects.thin_cloud.max()) < 0.15  # below the SCL's flag opacity


def test_heterogeneity_switch_makes_classes_uniform() -> None:
    tile_on, on = render()
    tile_off, off = render(heterogeneity=False)
    crops_on = np.unique(tile_on.croptype[tile_on.truth == WorldClass.CROPLAND])
    crops_off = np.unique(tile_off.croptype[tile_off.truth == WorldClass.CROPLAND])
    assert len(crops_on) >= 3 and len(crops_off) == 1
    urban_on = tile_on.truth == WorldClass.URBAN_FABRIC
    urban_off = tile_off.truth == WorldClass.URBAN_FABRIC
    assert len(np.unique(tile_on.unit[urban_on])) > 20  # roofs, roads, gardens
    assert len(np.unique(tile_off.unit[urban_off])) <= 3  # one mixture per urban region
    assert on.reflectance["B04"][urban_on].std() > 1.5 * off.reflectance["B04"][urban_off].std()


def _class_mean(tile: WorldTile, scene: WorldScene, cls: int) -> np.ndarray:
    sel = tile.truth == cls
    return np.array([scene.reflectance[b][sel].mean() for b in BANDS])


def _leaf_nir(context_classes: bool, cls: int) -> float:
    """Mean NIR leaf reflectance of the units of one class over the world_small tiles."""
    preset = resolve_preset("world_small", {"world": {"context_classes": context_classes}})
    assert preset.world is not None
    values = []
    for ti, name in enumerate(preset.tiles):
        tile = build_world_tile(tile_grid(name, preset.size_px), preset, 0, ti)
        tables = world_unit_tables(tile, preset.world, 0)
        labels = np.array(tile.units.label)
        values.extend(tables.leaf[labels == cls, 7].tolist())
    return float(np.mean(values))


def test_context_twins_share_spectra_unless_switched_off() -> None:
    for cls, twin in (
        (WorldClass.MEADOW, WorldClass.NATURAL_GRASSLAND),
        (WorldClass.URBAN_GREEN, WorldClass.NATURAL_GRASSLAND),
        (WorldClass.HEDGEROW, WorldClass.FOREST),
    ):
        assert twin in CONTEXT_TWINS[cls]
        same = _leaf_nir(True, cls) / _leaf_nir(True, twin)
        apart = _leaf_nir(False, cls) / _leaf_nir(False, twin)
        assert same == pytest.approx(1.0, abs=0.05 if cls != WorldClass.HEDGEROW else 0.2)
        assert abs(apart - 1.0) > abs(same - 1.0) + 0.1


def test_boundary_switch_adds_label_noise_only_on_boundaries() -> None:
    tile_on, _ = render()
    tile_off, _ = render(boundaries=False)
    np.testing.assert_array_equal(tile_off.landcover, tile_off.truth)
    changed = tile_on.landcover != tile_on.truth
    assert 0.005 < changed.mean() < 0.1
    t = tile_on.truth
    edge = np.zeros_like(changed)
    edge[:, :-1] |= t[:, :-1] != t[:, 1:]
    edge[:, 1:] |= t[:, 1:] != t[:, :-1]
    edge[:-1] |= t[:-1] != t[1:]
    edge[1:] |= t[1:] != t[:-1]
    assert not (changed & ~edge).any()


def test_biomes_switch_renders_every_region_as_the_first() -> None:
    med = PRESETS["world_small"].world.regions.index("mediterranean")  # type: ignore[union-attr]
    tile_on, on = render(tile_index=med, sensor_noise=False)
    tile_off, off = render(tile_index=med, biomes=False, sensor_noise=False)
    assert tile_on.biome.name == "mediterranean" and tile_off.biome.name == "atlantic"
    assert tile_on.region == tile_off.region == "mediterranean"  # the label stays
    bare_on = _class_mean(tile_on, on, WorldClass.BARE)
    bare_off = _class_mean(tile_off, off, WorldClass.BARE)
    assert bare_on[2] > bare_off[2]  # red soils in the south


def test_every_switch_is_a_field_and_unknown_ones_are_refused() -> None:
    spec = PRESETS["world"].world
    assert spec is not None
    for name in SWITCHES:
        assert getattr(spec, name) is True
        assert getattr(spec.with_switches({name: False}), name) is False
    with pytest.raises(ValueError, match="unknown world field"):
        resolve_preset("world_small", {"world": {"atmospheres": False}})


def test_held_out_region_cannot_hold_labelled_tiles() -> None:
    spec = PRESETS["world_small"].world
    assert spec is not None
    roles = tuple(
        "pool" if r == "mediterranean" else o for r, o in zip(spec.regions, spec.roles, strict=True)
    )
    with pytest.raises(ValueError, match="must not have pool tiles"):
        resolve_preset("world_small", {"world": {"roles": roles}})


def test_archive_is_at_least_twenty_times_the_labelled_pool(world_archive: SynthManifest) -> None:
    for name in ("world", "world_small"):
        p = PRESETS[name]
        assert p.world is not None
        assert p.world.archive_ratio(len(p.dates)) >= 20
    pool = world_archive.tiles_with(role="pool")
    assert len(world_archive.scenes) >= 20 * len(pool)


def test_items_and_manifest_carry_region_and_role(world_archive: SynthManifest) -> None:
    regions = world_archive.regions
    assert set(regions) == set(world_archive.tiles)
    for scene in world_archive.scenes:
        props = json.loads(Path(scene.item_path).read_text())["properties"]
        assert props["earthloop:region"] == regions[scene.tile]["region"]
        assert props["earthloop:role"] == regions[scene.tile]["role"]
    assert world_archive.tiles_with(region="mediterranean", role="pool") == []
    assert world_archive.tiles_with(region="mediterranean", role="test")
    assert world_archive.landcover_classes[WorldClass.URBAN_GREEN] == "urban green"


def test_ingest_reads_world_items_and_their_tile_joins_the_regions(
    world_archive: SynthManifest,
) -> None:
    """The chip index stores ``Scene.tile``; it must be the manifest's region key."""
    for scene in world_archive.scenes[:: len(world_archive.tiles)]:
        item = pystac.Item.from_file(str(scene.item_path))
        described = describe_scene(item, resolve_bands(["blue", "green", "red", "nir"]))
        assert described.tile == scene.tile
        assert described.tile in world_archive.regions


def test_original_presets_are_untouched_by_the_world() -> None:
    for name in ("tiny", "demo", "bench"):
        assert "world" not in PRESETS[name].to_dict()


def test_strong_biomes_changes_mediterranean_reflectance_only() -> None:
    """World v2's one change: a v1 result must stay valid for every other tile and label."""
    med = PRESETS["world_small"].world.regions.index("mediterranean")  # type: ignore[union-attr]
    tile_v1, v1 = render(tile_index=med, sensor_noise=False)
    tile_v2, v2 = render(tile_index=med, sensor_noise=False, strong_biomes=True)
    np.testing.assert_array_equal(tile_v1.landcover, tile_v2.landcover)
    np.testing.assert_array_equal(v1.scl, v2.scl)
    bare_v1 = _class_mean(tile_v1, v1, WorldClass.BARE)
    bare_v2 = _class_mean(tile_v2, v2, WorldClass.BARE)
    assert bare_v2[2] > 1.1 * bare_v1[2]  # redder, brighter soil (B04)
    forest_v1 = _class_mean(tile_v1, v1, WorldClass.FOREST)
    forest_v2 = _class_mean(tile_v2, v2, WorldClass.FOREST)
    assert forest_v2[3] < forest_v1[3]  # sclerophyll canopies: less NIR
    for ti, region in enumerate(PRESETS["world_small"].world.regions):  # type: ignore[union-attr]
        if region == "mediterranean":
            continue
        _, a = render(tile_index=ti)
        _, b = render(tile_index=ti, strong_biomes=True)
        for band in BANDS:
            np.testing.assert_array_equal(a.reflectance[band], b.reflectance[band])


def test_world_v2_is_world_with_strong_biomes_and_v1_keeps_its_fingerprint() -> None:
    v1, v2 = PRESETS["world"], PRESETS["world_v2"]
    assert v1.world is not None and v2.world is not None
    assert not v1.world.strong_biomes and v2.world.strong_biomes
    assert "strong_biomes" not in v1.to_dict()["world"]  # v1 archives are not regenerated
    assert v2.to_dict()["world"]["strong_biomes"] is True
    d1, d2 = v1.to_dict(), v2.to_dict()
    d2["world"].pop("strong_biomes")
    assert d1 == d2
