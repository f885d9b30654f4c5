"""The benchmark world: land cover whose classes need context, rendered per region and date.

The original generator's classes are a per-pixel function of the spectrum, so a few labelled
chips teach them and pretraining has nothing to add (docs/finetune.md). Here, as in real
archives, some classes are spectral twins told apart only by their surroundings — urban green
is grass inside urban fabric, a hedgerow is a two-pixel woody line between fields while a forest
strip is a wider belt along a river, a meadow is grass in parcel geometry among crops — and
every class is heterogeneous: cropland holds several crops on different calendars, urban fabric
is a sub-chip mixture of roofs, roads and gardens, forests have gaps and crown texture.
Regions (:mod:`regions`) shift spectra and calendars; :mod:`atmosphere` adds the per-date
residuals. Docs: docs/world.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from earthloop.synth.fields import (
    Array,
    JitteredSeeds,
    balanced_choice,
    balanced_counts,
    fbm,
    gaussian_blur,
    rng_for,
    shift,
    value_noise,
)
from earthloop.synth.landscape import CropType, _parcels, _regions, _river, _voronoi
from earthloop.synth.presets import SynthPreset
from earthloop.synth.regions import Biome, WorldSpec
from earthloop.synth.spectra import ENDMEMBERS, PROFILES, Profile
from earthloop.synth.tiles import TileGrid


class WorldClass(IntEnum):
    """Land-cover label ids of the benchmark world (0 = no label)."""

    WATER = 1
    URBAN_FABRIC = 2
    URBAN_GREEN = 3
    FOREST = 4
    HEDGEROW = 5
    NATURAL_GRASSLAND = 6
    MEADOW = 7
    CROPLAND = 8
    BARE = 9


WORLD_CLASSES: dict[int, str] = {
    1: "water",
    2: "urban fabric",
    3: "urban green",
    4: "forest",
    5: "hedgerow",
    6: "natural grassland",
    7: "meadow",
    8: "cropland",
    9: "bare soil",
}
CONTEXT_TWINS: dict[int, tuple[int, ...]] = {
    WorldClass.URBAN_GREEN: (WorldClass.NATURAL_GRASSLAND, WorldClass.MEADOW),
    WorldClass.HEDGEROW: (WorldClass.FOREST,),
    WorldClass.MEADOW: (WorldClass.NATURAL_GRASSLAND, WorldClass.URBAN_GREEN),
}
"""Context classes and the classes whose spectra they share (``context_classes`` on)."""

# What the SCL's rules see of each world class (water, bright surfaces).
_SCL_VIEW = np.array([0, 1, 2, 6, 4, 4, 6, 6, 7, 3], dtype=np.uint8)
_KINDS = ("water", "farmland", "urban", "grassland", "bare", "forest")  # low → high ground
_CROP_IDS = {
    "winter_wheat": CropType.WINTER_WHEAT,
    "winter_barley": CropType.WINTER_BARLEY,
    "rapeseed": CropType.RAPESEED,
    "maize": CropType.MAIZE,
    "sunflower": CropType.SUNFLOWER,
    "sugar_beet": CropType.SUGAR_BEET,
}

# fmt: off
_MATERIALS: dict[str, tuple[float, ...]] = {
    #              B01    B02    B03    B04    B05    B06    B07    B08    B8A    B09    B11    B12
    "roof_red":  (0.060, 0.070, 0.090, 0.200, 0.250, 0.280, 0.300, 0.310, 0.320, 0.320, 0.360, 0.300),
    "roof_grey": (0.160, 0.180, 0.200, 0.210, 0.220, 0.230, 0.240, 0.250, 0.250, 0.250, 0.270, 0.240),
    "roof_dark": (0.050, 0.055, 0.060, 0.065, 0.070, 0.075, 0.080, 0.085, 0.085, 0.090, 0.100, 0.090),
    "asphalt":   (0.070, 0.075, 0.080, 0.085, 0.090, 0.095, 0.100, 0.105, 0.110, 0.110, 0.130, 0.120),
}
# fmt: on
_SPECTRA = {**ENDMEMBERS, **_MATERIALS}
_STATIC = ((1, 0.0, 0.0, 0.0), (366, 0.0, 0.0, 0.0))
WORLD_PROFILES: dict[str, Profile] = {
    **PROFILES,
    "grassland_dry": Profile(
        (
            (1, 0.45, 0.25, 0),
            (60, 0.62, 0.10, 0),
            (100, 0.80, 0.02, 0),
            (140, 0.55, 0.30, 0),
            (170, 0.20, 0.70, 0),
            (250, 0.10, 0.75, 0),
            (290, 0.35, 0.40, 0),
            (330, 0.45, 0.25, 0),
            (366, 0.45, 0.25, 0),
        ),
        leaf="grass",
        shift_sd=10.0,
    ),
    "roof_red": Profile(_STATIC, background="roof_red", moist_background=False, shift_sd=0.0),
    "roof_grey": Profile(_STATIC, background="roof_grey", moist_background=False, shift_sd=0.0),
    "roof_dark": Profile(_STATIC, background="roof_dark", moist_background=False, shift_sd=0.0),
    "road": Profile(_STATIC, background="asphalt", moist_background=False, shift_sd=0.0),
    "garden": Profile(
        ((1, 0.45, 0.10, 0), (120, 0.75, 0, 0), (250, 0.70, 0.05, 0), (366, 0.45, 0.10, 0)),
        leaf="grass",
        shift_sd=6.0,
    ),
}
_GROUPS = ([0, 1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11])  # vis, red-edge, nir, swir
_DISTINCT_LEAF: dict[
    int, tuple[float, float, float, float]
] = {  # leaf multipliers that break the twins when ``context_classes`` is off
    WorldClass.URBAN_GREEN: (1.0, 1.05, 1.25, 0.85),
    WorldClass.HEDGEROW: (0.75, 0.85, 0.78, 0.80),
    WorldClass.MEADOW: (1.12, 1.0, 0.86, 1.18),
}
_SHADE = 0.16  # crown/shadow texture of woody canopies (multiplicative, per pixel)
_LABEL_FLIP = 0.3  # chance that a boundary pixel carries its neighbour's label


@dataclass
class _Units:
    """Rendering units (a region, a parcel, a building…) being collected for one tile."""

    profile: list[str]
    label: list[int]
    shade: list[float]

    def add(self, profile: str, label: int, shade: float = 0.0) -> int:
        self.profile.append(profile)
        self.label.append(int(label))
        self.shade.append(shade)
        return len(self.profile) - 1


@dataclass
class WorldTile:
    """One tile's truth on the padded 10 m working grid, and the tables that render it."""

    grid: TileGrid
    tile_index: int
    region: str
    role: str
    biome: Biome
    truth: Array  # uint8 WorldClass: what is on the ground
    landcover: Array  # uint8 WorldClass as labelled (boundary noise when ``boundaries`` is on)
    croptype: Array  # uint8 CropType inside crop parcels
    parcels: Array  # uint32 parcel ids (crops and meadows), 0 elsewhere
    unit: Array  # int32 rendering unit per pixel
    units: _Units
    grain: Array  # float32 ~N(0, 1) fine variation (vigour, background texture)
    crown: Array  # float32 ~N(0, 1) crown-scale texture

    def label(self, name: str) -> Array:
        """A label raster cropped to the tile (``landcover``, ``croptype``, ``parcels``, ``truth``)."""
        n = self.grid.size
        arrays = {
            "landcover": self.landcover,
            "croptype": self.croptype,
            "parcels": self.parcels,
            "truth": self.truth,
        }
        if name not in arrays:
            raise KeyError(f"unknown label {name!r}; choose one of {sorted(arrays)}")
        return arrays[name][:n, :n]


def _macro_kinds(
    rng: np.random.Generator, region: Array, n_regions: int, preset: SynthPreset, biome: Biome
) -> Array:
    """Kind index (into _KINDS) per Voronoi region, ordered along a smooth elevation field."""
    sizes = np.bincount(region.ravel(), minlength=n_regions)
    sub = region[::4, ::4]
    elevation = fbm(rng, sub.shape, preset.region_px * 3 / 4, octaves=3)
    sub_sizes = np.maximum(np.bincount(sub.ravel(), minlength=n_regions), 1)
    mean_elev = np.bincount(sub.ravel(), weights=elevation.ravel(), minlength=n_regions) / sub_sizes
    big = sizes >= (preset.region_px**2) / 4
    present = np.flatnonzero(big) if big.sum() >= len(_KINDS) else np.flatnonzero(sizes)
    order = present[np.argsort(mean_elev[present] + rng.normal(0, 0.35, len(present)))]
    weights = dict(biome.class_weights)
    counts = balanced_counts(len(order), {i: weights[k] for i, k in enumerate(_KINDS)})
    kind = np.full(n_regions, _KINDS.index("grassland"), dtype=np.int32)
    start = 0
    for i in range(len(_KINDS)):
        kind[order[start : start + counts[i]]] = i
        start += counts[i]
    return kind


def _farmland(
    rng: np.random.Generator, tile: WorldTile, farm: Array, preset: SynthPreset, spec: WorldSpec
) -> None:
    """Parcels of several crops and meadows, hedgerows on part of the field margins."""
    n, grid = farm.shape[0], tile.grid
    parcels, margin = _parcels(rng, n, preset.parcel_px, farm, grid.size)
    n_parcels = int(parcels.max())
    crops = dict(tile.biome.crop_weights)
    keys = list(crops)
    if not spec.heterogeneity:  # one crop (the biome's main one); meadows stay meadows
        main = max((k for k in keys if k != "meadow"), key=lambda k: crops[k])
        crops = {main: 1.0 - crops["meadow"], "meadow": crops["meadow"]}
        keys = list(crops)
    choice = balanced_choice(rng, n_parcels, {i: crops[k] for i, k in enumerate(keys)})
    hedge_noise = value_noise(rng, (n, n), preset.parcel_px * 2.0)
    hedge = margin & (hedge_noise > 0.3)
    hedge |= shift(hedge, 0, 1, False) & farm & (parcels > 0)  # two pixels wide
    hedge_unit = tile.units.add("broadleaf", WorldClass.HEDGEROW, _shade(spec))
    filled = parcels.copy()
    for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0), (0, 2), (2, 0)):  # margins join a neighbour
        gap = (filled == 0) & farm
        filled[gap] = shift(filled, dy, dx, 0)[gap]
    base = len(tile.units.profile)
    crop_of = np.zeros(n_parcels + 1, dtype=np.uint8)
    for p in range(n_parcels):
        key = keys[int(choice[p])]
        if key == "meadow":
            tile.units.add(_grass(tile.biome), WorldClass.MEADOW)
        else:
            tile.units.add(key, WorldClass.CROPLAND)
            crop_of[p + 1] = _CROP_IDS[key]
    inside = farm & (filled > 0)
    tile.unit[inside] = base + filled[inside].astype(np.int32) - 1
    meadow_units = np.array(tile.units.label)[tile.unit] == WorldClass.MEADOW
    tile.truth[inside] = np.where(meadow_units[inside], WorldClass.MEADOW, WorldClass.CROPLAND)
    lost = farm & (filled == 0)  # isolated margin pixels: grass
    tile.unit[lost] = tile.units.add(_grass(tile.biome), WorldClass.MEADOW)
    tile.truth[lost] = WorldClass.MEADOW
    tile.unit[hedge] = hedge_unit
    tile.truth[hedge] = WorldClass.HEDGEROW
    tile.croptype[:] = np.where(hedge, 0, crop_of[filled])
    tile.parcels[:] = np.where(hedge, 0, parcels)


def _urban(
    rng: np.random.Generator,
    tile: WorldTile,
    urban: Array,
    region: Array,
    preset: SynthPreset,
    spec: WorldSpec,
) -> None:
    """Urban fabric as a street grid with buildings and gardens; parks as urban green."""
    n = urban.shape[0]
    cell = max(10.0, preset.region_px / 3)
    park_seeds = JitteredSeeds(rng, (0.0, 0.0, float(n), float(n)), cell)
    sub = _voronoi(park_seeds, lambda y, x: (y.astype(np.float32), x.astype(np.float32)), (n, n))
    is_park = rng.random(park_seeds.count) < 0.25
    park = urban & is_park[sub]
    park_units = np.array(
        [
            tile.units.add(_grass(tile.biome), WorldClass.URBAN_GREEN)
            for _ in range(park_seeds.count)
        ],
        dtype=np.int32,
    )
    tile.unit[park] = park_units[sub[park]]
    tile.truth[park] = WorldClass.URBAN_GREEN
    fabric = urban & ~park
    tile.truth[fabric] = WorldClass.URBAN_FABRIC
    if not spec.heterogeneity:  # one uniform material mixture per urban region
        ids = np.unique(region[fabric])
        lut = np.zeros(int(region.max()) + 1, dtype=np.int32)
        for r in ids:
            lut[r] = tile.units.add("urban", WorldClass.URBAN_FABRIC)
        tile.unit[fabric] = lut[region[fabric]]
        return
    theta = rng.uniform(0, np.pi / 2)
    spacing = rng.uniform(8.0, 12.0)
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    u = np.cos(theta) * yy - np.sin(theta) * xx
    v = np.sin(theta) * yy + np.cos(theta) * xx
    road = (np.mod(u, spacing) < 1.1) | (np.mod(v, spacing) < 1.1)
    seeds = JitteredSeeds(rng, (0.0, 0.0, float(n), float(n)), 3.0)
    building = _voronoi(seeds, lambda y, x: (y.astype(np.float32), x.astype(np.float32)), (n, n))
    roofs = dict(tile.biome.roofs)
    materials = list(roofs)
    pick = balanced_choice(rng, seeds.count, {i: roofs[m] for i, m in enumerate(materials)})
    lut = np.array(
        [tile.units.add(materials[int(k)], WorldClass.URBAN_FABRIC) for k in pick], dtype=np.int32
    )
    tile.unit[fabric] = lut[building[fabric]]
    tile.unit[fabric & road] = tile.units.add("road", WorldClass.URBAN_FABRIC)


def _grass(biome: Biome) -> str:
    return "grassland_dry" if biome.dry_summer else "grassland"


def _shade(spec: WorldSpec) -> float:
    return _SHADE if spec.heterogeneity else 0.0


def _boundary_noise(rng: np.random.Generator, truth: Array) -> Array:
    """Labels as digitised: a share of boundary pixels carry the neighbouring class."""
    out = truth.copy()
    done = np.zeros(truth.shape, dtype=bool)
    for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0)):
        nb = shift(truth, dy, dx, 0)
        flip = (nb != truth) & (nb > 0) & ~done & (rng.random(truth.shape) < _LABEL_FLIP / 2)
        out[flip] = nb[flip]
        done |= flip
    return out


def _natural(
    rng: np.random.Generator, tile: WorldTile, region: Array, kind_r: Array, spec: WorldSpec
) -> None:
    """Water, natural grassland, bare soil and forest: one rendering unit per region."""
    grass = _grass(tile.biome)
    simple = {
        "water": ("water", WorldClass.WATER),
        "grassland": (grass, WorldClass.NATURAL_GRASSLAND),
        "bare": ("bare", WorldClass.BARE),
    }
    unit_lut = np.full(len(kind_r), -1, dtype=np.int32)
    class_lut = np.zeros(len(kind_r), dtype=np.uint8)
    for r in np.unique(region):
        k = _KINDS[int(kind_r[r])]
        if k in simple:
            profile, cls = simple[k]
            unit_lut[r] = tile.units.add(profile, cls)
            class_lut[r] = cls
        elif k == "forest":
            leaf = "conifer" if rng.random() < tile.biome.evergreen_share else "broadleaf"
            unit_lut[r] = tile.units.add(leaf, WorldClass.FOREST, _shade(spec))
            class_lut[r] = WorldClass.FOREST
    sel = unit_lut[region] >= 0
    tile.unit[sel] = unit_lut[region[sel]]
    tile.truth[sel] = class_lut[region[sel]]


def build_world_tile(grid: TileGrid, preset: SynthPreset, seed: int, tile_index: int) -> WorldTile:
    """Draw one tile of the world (deterministic per seed, tile and switches)."""
    spec = preset.world
    if spec is None:
        raise ValueError("preset has no world; use a world preset such as 'world_small'")
    biome = spec.biome(tile_index)
    n = grid.padded
    rng = rng_for(seed, "world-landscape", grid.id)
    region, n_regions = _regions(rng, n, preset.region_px)
    kind_r = _macro_kinds(rng, region, n_regions, preset, biome)
    kind = kind_r[region]
    tile = WorldTile(
        grid=grid, tile_index=tile_index, region=spec.regions[tile_index],
        role=spec.roles[tile_index], biome=biome,
        truth=np.zeros((n, n), dtype=np.uint8), landcover=np.zeros((n, n), dtype=np.uint8),
        croptype=np.zeros((n, n), dtype=np.uint8), parcels=np.zeros((n, n), dtype=np.uint32),
        unit=np.zeros((n, n), dtype=np.int32), units=_Units([], [], []),
        grain=np.zeros((1, 1), dtype=np.float32), crown=np.zeros((1, 1), dtype=np.float32),
    )  # fmt: skip
    river = _river(rng, n)
    strip = (gaussian_blur(river.astype(np.float32), 2.0) > 0.03) & ~river
    forest_kind = (kind == _KINDS.index("forest")) | strip
    _natural(rng, tile, region, kind_r, spec)
    tile.unit[strip] = tile.units.add("broadleaf", WorldClass.FOREST, _shade(spec))
    tile.truth[strip] = WorldClass.FOREST
    farm = (kind == _KINDS.index("farmland")) & ~river & ~strip
    _farmland(rng, tile, farm, preset, spec)
    urban = (kind == _KINDS.index("urban")) & ~river & ~strip
    _urban(rng, tile, urban, region, preset, spec)
    tile.unit[river] = tile.units.add("water", WorldClass.WATER)
    tile.truth[river] = WorldClass.WATER
    if spec.heterogeneity:  # canopy gaps: a tenth of the forest floor is grass and soil
        gaps = forest_kind & (fbm(rng, (n, n), 4.0, octaves=2) > 1.3)
        tile.unit[gaps] = tile.units.add("grassland", WorldClass.FOREST)
    tile.grain = fbm(rng, (n, n), 3.0, octaves=2)
    tile.crown = fbm(rng, (n, n), 1.5, octaves=1)
    tile.landcover = _boundary_noise(rng, tile.truth) if spec.boundaries else tile.truth.copy()
    return tile
