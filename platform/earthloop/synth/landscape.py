"""The ground truth: land-cover regions, crop parcels and the management units behind them.

Labels must be spatially coherent (a classifier that only smooths should not win), so land cover
comes from warped Voronoi regions ordered along a smooth "elevation" field (water and fields low,
forest high), and cropland is cut into elongated polygonal parcels separated by 1 px grass
margins, the way field boundaries look at 10 m. Every pixel also belongs to a *unit* (a region or
a parcel) that carries its own phenology and spectral offsets, which is what makes fields of the
same crop look alike but not identical.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from earthloop.synth.fields import (
    Array,
    JitteredSeeds,
    balanced_choice,
    balanced_counts,
    fbm,
    rng_for,
    value_noise,
)
from earthloop.synth.presets import SynthPreset
from earthloop.synth.tiles import TileGrid


class LandCover(IntEnum):
    """Land-cover label ids (0 = no label)."""

    WATER = 1
    URBAN = 2
    BARE = 3
    BROADLEAF_FOREST = 4
    CONIFEROUS_FOREST = 5
    GRASSLAND = 6
    CROPLAND = 7


class CropType(IntEnum):
    """Crop-type label ids inside parcels (0 = not a parcel)."""

    WINTER_WHEAT = 1
    WINTER_BARLEY = 2
    RAPESEED = 3
    MAIZE = 4
    SUNFLOWER = 5
    SUGAR_BEET = 6


LANDCOVER_CLASSES: dict[int, str] = {
    1: "water",
    2: "urban",
    3: "bare soil",
    4: "broadleaf forest",
    5: "coniferous forest",
    6: "grassland",
    7: "cropland",
}
CROPTYPE_CLASSES: dict[int, str] = {
    1: "winter wheat",
    2: "winter barley",
    3: "rapeseed",
    4: "maize",
    5: "sunflower",
    6: "sugar beet",
}

# Share of regions per class and their order along the elevation gradient (low → high).
_LANDCOVER_WEIGHTS: dict[int, float] = {
    LandCover.WATER: 0.06,
    LandCover.URBAN: 0.08,
    LandCover.BARE: 0.06,
    LandCover.BROADLEAF_FOREST: 0.13,
    LandCover.CONIFEROUS_FOREST: 0.09,
    LandCover.GRASSLAND: 0.16,
    LandCover.CROPLAND: 0.42,
}
_ELEVATION_ORDER = (
    LandCover.WATER,
    LandCover.CROPLAND,
    LandCover.URBAN,
    LandCover.GRASSLAND,
    LandCover.BARE,
    LandCover.BROADLEAF_FOREST,
    LandCover.CONIFEROUS_FOREST,
)
_CROP_WEIGHTS: dict[int, float] = {
    CropType.WINTER_WHEAT: 0.26,
    CropType.WINTER_BARLEY: 0.12,
    CropType.RAPESEED: 0.12,
    CropType.MAIZE: 0.24,
    CropType.SUNFLOWER: 0.12,
    CropType.SUGAR_BEET: 0.14,
}

# Phenology/spectral profile of each unit, by key (see spectra.PROFILES).
LANDCOVER_PROFILE: dict[int, str] = {
    LandCover.WATER: "water",
    LandCover.URBAN: "urban",
    LandCover.BARE: "bare",
    LandCover.BROADLEAF_FOREST: "broadleaf",
    LandCover.CONIFEROUS_FOREST: "conifer",
    LandCover.GRASSLAND: "grassland",
    LandCover.CROPLAND: "grassland",  # only for cropland pixels outside any parcel (none remain)
}
CROP_PROFILE: dict[int, str] = {
    CropType.WINTER_WHEAT: "winter_wheat",
    CropType.WINTER_BARLEY: "winter_barley",
    CropType.RAPESEED: "rapeseed",
    CropType.MAIZE: "maize",
    CropType.SUNFLOWER: "sunflower",
    CropType.SUGAR_BEET: "sugar_beet",
}

_CHUNK = 1 << 20  # pixels per exact Voronoi pass: bounds temporaries on 4096 px tiles


@dataclass
class Landscape:
    """Per-pixel truth on the padded working grid (``grid.padded`` square, 10 m)."""

    grid: TileGrid
    landcover: Array  # uint8
    croptype: Array  # uint8
    parcels: Array  # uint32, 1..N, 0 outside parcels
    unit: Array  # int32 index into unit_profile / unit tables
    unit_profile: list[str]  # profile key per unit
    grain: Array  # float32 ~N(0, 1): fixed fine-scale variation (vigour, texture)
    n_parcels: int

    def label(self, name: str) -> Array:
        """A label raster cropped to the tile (``landcover``, ``croptype`` or ``parcels``)."""
        n = self.grid.size
        arrays = {"landcover": self.landcover, "croptype": self.croptype, "parcels": self.parcels}
        if name not in arrays:
            raise KeyError(f"unknown label {name!r}; choose one of {sorted(arrays)}")
        return arrays[name][:n, :n]


Coords = Callable[[Array, Array], tuple[Array, Array]]
"""Maps integer pixel indices (rows, cols) to the float coordinates the Voronoi seeds live in."""


def _voronoi(seeds: JitteredSeeds, coords: Coords, shape: tuple[int, int], step: int = 4) -> Array:
    """Nearest-seed ids, coarse to fine.

    Cells are many pixels wide, so ids are first computed every ``step`` pixels; a block whose
    four corners agree takes that id and only the remaining (boundary) pixels are solved exactly,
    in chunks so no tile-sized coordinate arrays are ever built. Slivers thinner than ``step``
    inside a uniform block are lost, which only makes the partition slightly simpler.
    """
    h, w = shape
    cy, cx = np.mgrid[0:h:step, 0:w:step]
    coarse = seeds.assign(*coords(cy, cx))
    c00, c10, c01, c11 = coarse[:-1, :-1], coarse[1:, :-1], coarse[:-1, 1:], coarse[1:, 1:]
    uniform = (c00 == c10) & (c00 == c01) & (c00 == c11)
    bh, bw = uniform.shape[0] * step, uniform.shape[1] * step
    out = np.empty((h, w), dtype=np.int32)
    out[:bh, :bw] = np.repeat(np.repeat(c00, step, axis=0), step, axis=1)
    need = np.ones((h, w), dtype=bool)
    need[:bh, :bw] = ~np.repeat(np.repeat(uniform, step, axis=0), step, axis=1)
    idx = np.flatnonzero(need)
    del need
    flat = out.ravel()
    for i0 in range(0, len(idx), _CHUNK):
        sel = idx[i0 : i0 + _CHUNK]
        flat[sel] = seeds.assign(*coords(sel // w, sel % w))
    return out


def _regions(rng: np.random.Generator, n: int, cell: float) -> tuple[Array, int]:
    """Warped Voronoi regions: organic, rough-edged patches of roughly ``cell`` pixels."""
    amp = np.float32(0.35 * cell)
    warp_y = fbm(rng, (n, n), cell, octaves=3)
    warp_y *= amp
    warp_x = fbm(rng, (n, n), cell, octaves=3)
    warp_x *= amp

    def coords(iy: Array, ix: Array) -> tuple[Array, Array]:
        return iy.astype(np.float32) + warp_y[iy, ix], ix.astype(np.float32) + warp_x[iy, ix]

    lo, hi = -float(amp) * 5, n + float(amp) * 5
    seeds = JitteredSeeds(rng, (lo, lo, hi, hi), cell)
    return _voronoi(seeds, coords, (n, n)), seeds.count


def _river(rng: np.random.Generator, n: int) -> Array:
    """A meandering river across the tile (bool mask), a few pixels wide."""
    t = np.arange(n, dtype=np.float32)
    meander = value_noise(rng, (n, 1), n / 3)[:, 0] * np.float32(n * 0.12)
    phase = rng.uniform(0, 2 * np.pi)
    centre = (
        rng.uniform(0.25, 0.75) * n + np.float32(n * 0.06) * np.sin(t / n * 5 + phase) + meander
    )
    width = max(2.0, n / 160)
    across = np.arange(n, dtype=np.float32)[None, :]
    mask: Array = np.abs(across - centre[:, None]) < width / 2
    return mask if rng.random() < 0.5 else mask.T.copy()


def _parcels(
    rng: np.random.Generator, n: int, cell: float, cropland: Array, visible: int
) -> tuple[Array, Array]:
    """Elongated polygon fields inside ``cropland``; returns (parcel ids 1..N, margin mask).

    Voronoi cells in a rotated, stretched frame: straight field edges, one dominant field
    orientation per tile, as in consolidated farmland.
    """
    theta = rng.uniform(0, np.pi)
    stretch = float(np.sqrt(rng.uniform(1.4, 2.6)))
    c, s = float(np.cos(theta)), float(np.sin(theta))

    def coords(iy: Array, ix: Array) -> tuple[Array, Array]:
        y, x = iy.astype(np.float32), ix.astype(np.float32)
        return (c * y - s * x) * np.float32(stretch), (c * x + s * y) / np.float32(stretch)

    corners = np.array([[0, 0], [0, n], [n, 0], [n, n]], dtype=np.float32)
    v, u = coords(corners[:, 0], corners[:, 1])
    seeds = JitteredSeeds(
        rng, (float(v.min()), float(u.min()), float(v.max()), float(u.max())), cell
    )
    ids = _voronoi(seeds, coords, (n, n))
    edge = np.zeros((n, n), dtype=bool)
    edge[:, :-1] |= ids[:, :-1] != ids[:, 1:]
    edge[:-1, :] |= ids[:-1, :] != ids[1:, :]
    margin = cropland & edge
    inside = cropland & ~edge
    del edge
    # Consecutive ids; fragments too small to be a field — counted on the visible tile, so a
    # field mostly beyond the edge does not leave a one-pixel parcel — become margin (grass).
    min_px = max(6, int(cell * cell) // 10)
    view = (slice(0, visible), slice(0, visible))
    counts = np.bincount(ids[view][inside[view]], minlength=seeds.count)
    keep = counts >= min_px
    new_id = np.zeros(seeds.count, dtype=np.uint32)
    new_id[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.uint32)
    parcels = new_id[ids]
    del ids
    parcels[~inside] = 0
    margin |= inside & (parcels == 0)
    return parcels, margin


def _grain(rng: np.random.Generator, n: int) -> Array:
    """Fixed fine-scale variation (~N(0, 1)): 3 px lattice noise plus a white component.

    Cheaper than a second fine octave (which would need a lattice as large as the tile).
    """
    grain = value_noise(rng, (n, n), 3.0)
    for r0 in range(0, n, 512):
        rows = grain[r0 : r0 + 512]
        rows += np.float32(0.5) * rng.standard_normal(rows.shape, dtype=np.float32)
    grain -= np.float32(grain.mean())
    grain /= np.float32(grain.std())
    return grain


def build_landscape(grid: TileGrid, preset: SynthPreset, seed: int) -> Landscape:
    """Draw the land cover, parcels and crop types of one tile (deterministic per seed and tile)."""
    n = grid.padded
    rng = rng_for(seed, "landscape", grid.id)

    region, n_regions = _regions(rng, n, preset.region_px)
    sizes = np.bincount(region.ravel(), minlength=n_regions)
    # Elevation is smooth at the region scale: a 1-in-4 sample gives the region means.
    sub = region[::4, ::4]
    elevation = fbm(rng, sub.shape, preset.region_px * 3 / 4, octaves=3)
    sub_sizes = np.maximum(np.bincount(sub.ravel(), minlength=n_regions), 1)
    mean_elev = np.bincount(sub.ravel(), weights=elevation.ravel(), minlength=n_regions) / sub_sizes
    # Slivers cut by the tile edge would let a rare class vanish; they become grassland and only
    # regions of a meaningful size take part in the balanced assignment.
    big = sizes >= (preset.region_px**2) / 4
    present = np.flatnonzero(big) if big.sum() >= len(_LANDCOVER_WEIGHTS) else np.flatnonzero(sizes)
    mean_elev = mean_elev[present]
    # Rank along the elevation gradient with jitter: coherent but not a strict banding.
    order = present[np.argsort(mean_elev + rng.normal(0, 0.35, len(present)))]
    counts = balanced_counts(len(order), _LANDCOVER_WEIGHTS)
    region_class = np.full(n_regions, LandCover.GRASSLAND, dtype=np.uint8)
    start = 0
    for cls in _ELEVATION_ORDER:
        k = counts[cls]
        region_class[order[start : start + k]] = cls
        start += k
    landcover = region_class[region]

    river = _river(rng, n) if n >= 192 else np.zeros((n, n), dtype=bool)
    landcover[river] = LandCover.WATER

    cropland = landcover == LandCover.CROPLAND
    parcels, margin = _parcels(rng, n, preset.parcel_px, cropland, grid.size)
    landcover[margin] = LandCover.GRASSLAND
    n_parcels = int(parcels.max())
    crop_of_parcel = np.zeros(n_parcels + 1, dtype=np.uint8)
    if n_parcels:
        crop_of_parcel[1:] = balanced_choice(rng, n_parcels, _CROP_WEIGHTS)
    croptype = crop_of_parcel[parcels]

    # Units: one per region, one per parcel, one for all margins, one for the river.
    margin_unit = n_regions + n_parcels
    river_unit = margin_unit + 1
    unit = region.astype(np.int32)
    in_parcel = parcels > 0
    unit[in_parcel] = n_regions + parcels[in_parcel].astype(np.int32) - 1
    unit[margin] = margin_unit
    unit[river] = river_unit
    unit_profile = [LANDCOVER_PROFILE[int(c)] if c else "grassland" for c in region_class]
    unit_profile += [CROP_PROFILE[int(c)] for c in crop_of_parcel[1:]]
    unit_profile += ["grassland", "water"]
    del region, river, margin, cropland, in_parcel  # before the last tile-sized draw

    grain = _grain(rng, n)
    return Landscape(
        grid=grid,
        landcover=landcover,
        croptype=croptype,
        parcels=parcels,
        unit=unit,
        unit_profile=unit_profile,
        grain=grain,
        n_parcels=n_parcels,
    )
