"""Rendering one scene of the benchmark world: ground, clouds, residual atmosphere, sensor.

The ground follows the same endmember mixing as :mod:`spectra` (green/dry/flower cover over a
background, on each unit's calendar), with each region's spectral and timing shifts and the
crown texture of woody canopies; then the flagged clouds and shadows of :mod:`clouds` (the SCL
is derived from them), then :class:`~earthloop.synth.atmosphere.SceneEffects`. Every draw is
keyed by (seed, purpose, tile, date[, band]), so a switch that removes one effect leaves every
other pixel value as it was.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from earthloop.s2.bands import SPECTRAL_BANDS
from earthloop.synth.atmosphere import SceneEffects
from earthloop.synth.clouds import CloudLayer, SunPosition, make_clouds, scene_classification
from earthloop.synth.fields import Array, block_mean, gaussian_blur, rng_for
from earthloop.synth.regions import WorldSpec
from earthloop.synth.spectra import ENDMEMBERS, PSF_SIGMA_PX, fractions_at, soil_moisture_factor
from earthloop.synth.world import (
    _DISTINCT_LEAF,
    _GROUPS,
    _SCL_VIEW,
    _SPECTRA,
    WORLD_PROFILES,
    WorldTile,
)

_N_BANDS = len(SPECTRAL_BANDS)
_B04 = SPECTRAL_BANDS.index("B04")


@dataclass
class WorldUnitTables:
    """Per-unit draws, fixed for a tile across dates (a field keeps its soil and sowing date)."""

    profile: list[str]
    shift: Array  # days, region calendar included
    vigour: Array
    leaf: Array  # (units, 12)
    background: Array  # (units, 12), before seasonal moisture
    moist: Array  # bool
    texture: Array
    shade: Array


def world_unit_tables(tile: WorldTile, spec: WorldSpec, seed: int) -> WorldUnitTables:
    """Spectra and calendars of every unit of a tile, with the region's shifts applied."""
    rng = rng_for(seed, "world-units", tile.grid.id)
    keys = tile.units.profile
    n = len(keys)
    profiles = [WORLD_PROFILES[k] for k in keys]
    shift = rng.standard_normal(n) * np.array([p.shift_sd for p in profiles])
    shift += tile.biome.phenology_shift
    vigour = np.clip(rng.normal(1.0, 0.07, n), 0.8, 1.15)
    brightness = np.clip(rng.normal(1.0, 0.12, n), 0.7, 1.35)
    turbidity = rng.uniform(0.0, 1.0, n) ** 2
    jitter = rng.normal(1.0, 0.025, (n, 4))
    leaf = np.empty((n, _N_BANDS))
    background = np.empty((n, _N_BANDS))
    soil_mult = np.ones(_N_BANDS)
    leaf_mult = np.ones(_N_BANDS)
    for g, idx in enumerate(_GROUPS):
        soil_mult[idx] = tile.biome.soil[g]
        leaf_mult[idx] = tile.biome.leaf[g]
    soil_mult[_B04] *= tile.biome.red_soil
    for i, p in enumerate(profiles):
        lv = np.array(_SPECTRA[p.leaf], dtype=np.float64) * leaf_mult
        for group, factor in p.leaf_scale:
            lv[
                {"vis": _GROUPS[0], "rededge": _GROUPS[1], "nir": _GROUPS[2], "swir": _GROUPS[3]}[
                    group
                ]
            ] *= factor
        distinct = _DISTINCT_LEAF.get(tile.units.label[i]) if not spec.context_classes else None
        for g, idx in enumerate(_GROUPS):
            lv[idx] *= jitter[i, g] * (distinct[g] if distinct else 1.0)
        leaf[i] = lv
        bg = np.array(_SPECTRA[p.background], dtype=np.float64)
        if p.background == "water":
            background[i] = bg + turbidity[i] * np.array(ENDMEMBERS["sediment"])
        elif p.background in ("soil", "bright_soil"):
            background[i] = bg * brightness[i] * soil_mult
        else:
            background[i] = bg * brightness[i]
    return WorldUnitTables(
        profile=keys,
        shift=shift,
        vigour=vigour,
        leaf=leaf,
        background=background,
        moist=np.array([p.moist_background for p in profiles]),
        texture=np.array([p.texture for p in profiles]),
        shade=np.array(tile.units.shade),
    )


def _cover(
    tile: WorldTile, tables: WorldUnitTables, doy: float, rng: np.random.Generator
) -> tuple[Array, Array, Array]:
    """Per-pixel (green, dry, flower) cover on ``doy``: unit calendar, fine vigour, date noise."""
    n_units = len(tables.profile)
    g_u, d_u, f_u = np.zeros(n_units), np.zeros(n_units), np.zeros(n_units)
    keys = np.array(tables.profile)
    for key in set(tables.profile):
        sel = keys == key
        g_u[sel], d_u[sel], f_u[sel] = fractions_at(WORLD_PROFILES[key], doy - tables.shift[sel])
    g_u *= tables.vigour
    f_u *= tables.vigour
    u = tile.unit
    green = g_u.astype(np.float32)[u] * (1.0 + np.float32(0.10) * tile.grain)
    green += np.float32(0.03) * rng.standard_normal(u.shape, dtype=np.float32) * (green > 0.02)
    dry = d_u.astype(np.float32)[u] * (1.0 - np.float32(0.08) * tile.grain)
    flower = f_u.astype(np.float32)[u]
    for a in (green, dry, flower):
        np.clip(a, 0.0, 1.0, out=a)
    total = np.maximum(green + dry + flower, np.float32(1.0))
    return green / total, dry / total, flower / total


@dataclass
class WorldScene:
    """One rendered scene: L2A reflectance per band on the padded 10 m grid, and its SCL."""

    reflectance: dict[str, Array]  # canonical band name → (padded, padded) float32
    scl: Array  # (size/2, size/2) uint8 on the 20 m grid
    clouds: CloudLayer
    effects: SceneEffects
    green: Array  # green cover on the padded grid (what the SCL's vegetation rule sees)


def render_world_scene(
    tile: WorldTile,
    tables: WorldUnitTables,
    spec: WorldSpec,
    *,
    doy: float,
    sun: SunPosition,
    cloud_target: float,
    seed: int,
    key: str,
    bands: list[str],
    valid20: Array | None = None,
) -> WorldScene:
    """Render ``bands`` (canonical names) of one tile on one date (``key`` = YYYYMMDD)."""
    grid, tid = tile.grid, tile.grid.id
    n = grid.padded
    green, dry, flower = _cover(tile, tables, doy, rng_for(seed, "world-state", tid, key))
    layer = make_clouds(rng_for(seed, "clouds", tid, key), n, grid.size, cloud_target, sun)
    effects = SceneEffects.draw(rng_for(seed, "world-atmosphere", tid, key), n, sun, spec)
    bare = 1.0 - green - dry - flower
    moisture = np.where(tables.moist, soil_moisture_factor(doy), 1.0)
    shade = 1.0 + tables.shade.astype(np.float32)[tile.unit] * tile.crown
    texture = 1.0 + tables.texture.astype(np.float32)[tile.unit] * tile.grain
    out: dict[str, Array] = {}
    for band in bands:
        b = SPECTRAL_BANDS.index(band)
        bg = (tables.background[:, b] * moisture).astype(np.float32)[tile.unit]
        refl = bg * bare * texture
        refl += tables.leaf[:, b].astype(np.float32)[tile.unit] * green
        refl += np.float32(ENDMEMBERS["dry"][b]) * dry
        refl += np.float32(ENDMEMBERS["flower"][b]) * flower
        refl *= shade
        pixel = rng_for(seed, "world-pixel", tid, key, band)
        refl *= 1.0 + np.float32(0.02) * pixel.standard_normal(refl.shape, dtype=np.float32)
        if spec.boundaries:
            refl = gaussian_blur(refl, PSF_SIGMA_PX)
        layer.composite(refl, band)
        out[band] = effects.apply(refl, band, rng_for(seed, "world-noise", tid, key, band))
    size = grid.size
    green20 = block_mean(green[:size, :size], 2)
    valid = np.ones(grid.shape(20), dtype=bool) if valid20 is None else valid20
    scl = scene_classification(
        _SCL_VIEW[tile.truth[:size, :size]], green20, layer, valid, rng_for(seed, "scl", tid, key)
    )
    return WorldScene(reflectance=out, scl=scl, clouds=layer, effects=effects, green=green)
