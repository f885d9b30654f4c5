"""Orchestration: tiles → landscape → scenes → COGs + STAC + labels + manifest.

Each scene is rendered band by band and written immediately, so memory stays at a handful of
tile-sized float32 arrays regardless of how many bands or dates a preset asks for. Every random
draw is keyed by (seed, purpose, tile, date, band) — see :func:`fields.rng_for` — so the output
is byte-for-byte reproducible and independent of the order in which scenes are written.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from earthloop.s2.bands import BANDS, Band, resolve_bands
from earthloop.synth.clouds import (
    CloudLayer,
    SunPosition,
    make_clouds,
    scene_classification,
    scl_statistics,
)
from earthloop.synth.cog import write_cog
from earthloop.synth.fields import Array, block_mean, rng_for
from earthloop.synth.landscape import (
    CROPTYPE_CLASSES,
    LANDCOVER_CLASSES,
    Landscape,
    build_landscape,
)
from earthloop.synth.manifest import (
    MANIFEST_NAME,
    SceneRecord,
    SynthManifest,
    TileLabels,
    load_manifest,
)
from earthloop.synth.presets import SynthPreset, resolve_preset
from earthloop.synth.spectra import (
    Atmosphere,
    DateState,
    UnitTables,
    date_state,
    ground_reflectance,
    unit_tables,
)
from earthloop.synth.stac import (
    band_asset,
    check_item,
    collection_dict,
    footprint,
    scene_item,
    scl_asset,
    write_json,
    write_ndjson,
    write_static_catalog,
)
from earthloop.synth.tiles import TileGrid, tile_grid
from earthloop.synth.world import WORLD_CLASSES, WorldTile, build_world_tile
from earthloop.synth.world_render import WorldUnitTables, render_world_scene, world_unit_tables

GENERATOR_VERSION = "1"
"""Bump when the same preset + seed would produce different data, so old archives regenerate."""

MODERN_BASELINE = "05.10"
LEGACY_BASELINE = "03.01"
BASELINE_OFFSET_DN = 1000  # baseline >= 04.00: DN = reflectance * 10000 + 1000

ProgressFn = Callable[[int, int, str], None]
"""Called as ``progress(done, total, message)`` after each scene."""


@dataclass(frozen=True)
class ScenePlan:
    """Everything about one acquisition that is decided before rendering."""

    tile_index: int
    date_index: int
    grid: TileGrid
    acquired: datetime
    platform: str
    baseline: str
    cloud_target: float
    swath_edge: bool

    @property
    def item_id(self) -> str:
        letter = self.platform[-1].upper()
        return f"S2{letter}_{self.grid.id}_{self.acquired:%Y%m%d}_0_L2A"

    @property
    def doy(self) -> float:
        return float(self.acquired.timetuple().tm_yday)

    @property
    def offset_dn(self) -> int:
        return 0 if self.baseline == LEGACY_BASELINE else BASELINE_OFFSET_DN


def _tile_hash(tile: str) -> int:
    return zlib.crc32(tile.encode())


def plan_scenes(preset: SynthPreset, seed: int) -> list[ScenePlan]:
    """Dates, platforms, baselines and cloud targets of every scene, tile by tile.

    Tiles on different orbits are seen on different days, so each tile's dates are shifted by a
    few days; cloud targets are permuted per tile so that clear and cloudy seasons differ between
    tiles (a SeCo sampler must cope with that).
    """
    plans: list[ScenePlan] = []
    legacy = set(preset.legacy_baseline)
    edges = set(preset.nodata_edge)
    for ti, tile in enumerate(preset.tiles):
        grid = tile_grid(tile, preset.size_px)
        lon, _ = grid.centre_lonlat()
        day_shift = _tile_hash(tile) % 5 - 2
        # Overpass ~10:30 local solar time.
        utc_hours = 10.5 - lon / 15.0
        covers = [preset.cloud_cover[i % len(preset.cloud_cover)] for i in range(len(preset.dates))]
        covers = list(rng_for(seed, "cloud-schedule", tile).permutation(covers))
        for di, mmdd in enumerate(preset.dates):
            month, day = (int(x) for x in mmdd.split("-"))
            try:
                d = date(preset.year, month, day) + timedelta(days=day_shift)
            except ValueError as exc:
                raise ValueError(f"invalid date {mmdd!r} in {preset.year}: {exc}") from None
            if d.year != preset.year:  # keep shifted dates inside the year
                d = date(preset.year, month, day)
            seconds = int(utc_hours * 3600) + (_tile_hash(tile) + di * 37) % 90
            acquired = datetime(d.year, d.month, d.day, tzinfo=UTC) + timedelta(
                seconds=seconds, milliseconds=(_tile_hash(tile) // 7 + di * 113) % 1000
            )
            platform = "sentinel-2a" if (ti + di) % 2 == 0 else "sentinel-2b"
            plans.append(
                ScenePlan(
                    tile_index=ti,
                    date_index=di,
                    grid=grid,
                    acquired=acquired,
                    platform=platform,
                    baseline=LEGACY_BASELINE if (ti, di) in legacy else MODERN_BASELINE,
                    cloud_target=float(covers[di]),
                    swath_edge=(ti, di) in edges,
                )
            )
    ids = [p.item_id for p in plans]
    if len(set(ids)) != len(ids):
        raise ValueError("two scenes of one tile fall on the same day; spread the preset's dates")
    return plans


@dataclass(frozen=True)
class SwathEdge:
    """The edge of the 290 km swath: a near north-south line, nodata on one side.

    Coordinates are metres from the tile's upper-left corner, y growing southwards, so the same
    edge cuts the 10, 20 and 60 m grids consistently.
    """

    x0: float
    slope: float  # dx/dy
    keep_west: bool

    @staticmethod
    def draw(rng: np.random.Generator, width_m: float) -> SwathEdge:
        keep_west = bool(rng.random() < 0.5)
        frac = rng.uniform(0.55, 0.8) if keep_west else rng.uniform(0.2, 0.45)
        slope = -math.tan(math.radians(rng.uniform(8.0, 14.0)))  # the track heads SSW
        # x0 is where the edge meets the tile's mid-height row.
        return SwathEdge(x0=frac * width_m, slope=slope, keep_west=keep_west)

    def _inside(self, x: Array | float, y: Array | float, height_m: float) -> Array | bool:
        line = self.x0 + self.slope * (y - height_m / 2)
        res: Array | bool = (x < line) if self.keep_west else (x >= line)
        return res

    def valid(self, shape: tuple[int, int], res_m: int, height_m: float) -> Array:
        ys = (np.arange(shape[0]) + 0.5)[:, None] * res_m
        xs = (np.arange(shape[1]) + 0.5)[None, :] * res_m
        return np.asarray(self._inside(xs, ys, height_m))

    def clip_ring(self, width_m: float, height_m: float) -> list[tuple[float, float]]:
        """The tile rectangle clipped to the valid side (one Sutherland–Hodgman pass)."""
        box = [(0.0, 0.0), (width_m, 0.0), (width_m, height_m), (0.0, height_m)]
        out: list[tuple[float, float]] = []

        def f(p: tuple[float, float]) -> float:
            line = self.x0 + self.slope * (p[1] - height_m / 2)
            return (line - p[0]) if self.keep_west else (p[0] - line)

        for i, cur in enumerate(box):
            prev = box[i - 1]
            fc, fp = f(cur), f(prev)
            if (fc >= 0) != (fp >= 0):
                t = fp / (fp - fc)
                out.append((prev[0] + t * (cur[0] - prev[0]), prev[1] + t * (cur[1] - prev[1])))
            if fc >= 0:
                out.append(cur)
        return out


def encode_dn(refl: Array, offset_dn: int) -> Array:
    """Reflectance → L2A digital numbers; valid pixels never become 0 (the nodata value)."""
    dn = np.rint(refl * np.float32(10000.0))
    dn += np.float32(offset_dn)
    np.clip(dn, 1, 65535, out=dn)
    return dn.astype(np.uint16)


_STRIP_ROWS = 768  # rows rendered at once (a multiple of 6 so every grid splits evenly)
_HALO = 2  # extra rows so the PSF blur is seamless across strips


def _render_band(
    land: Landscape,
    tables: UnitTables,
    state: DateState,
    layer: CloudLayer,
    atmos: Atmosphere,
    band: Band,
    rng: np.random.Generator,
    offset_dn: int,
) -> Array:
    """One band's DN at its native resolution, rendered in row strips.

    Coarser bands integrate the 10 m field over their pixel (20 m over the tile, 60 m over the
    padded grid). Strips keep the float temporaries of a 4096 px tile near 100 MB instead of 1 GB.
    """
    grid = land.grid
    full, n, res = grid.padded, grid.size, band.resolution_m
    if res not in (10, 20, 60):
        raise ValueError(f"unsupported resolution {res} m for {band.name}")
    dn = np.empty(grid.shape(res), dtype=np.uint16)
    for r0 in range(0, full if res == 60 else n, _STRIP_ROWS):
        r1 = min(full, r0 + _STRIP_ROWS)
        a, b = max(0, r0 - _HALO), min(full, r1 + _HALO)
        refl = ground_reflectance(land, tables, state, band.name, rng, rows=slice(a, b))
        refl = refl[r0 - a : r1 - a]
        layer.composite(refl, band.name, rows=slice(r0, r1))
        atmos.apply(refl, band.name)
        if res == 60:
            dn[r0 // 6 : r1 // 6] = encode_dn(block_mean(refl, 6), offset_dn)
            continue
        e = min(r1, n)
        if res == 10:
            dn[r0:e] = encode_dn(refl[: e - r0, :n], offset_dn)
        else:
            dn[r0 // 2 : e // 2] = encode_dn(block_mean(refl[: e - r0, :n], 2), offset_dn)
    return dn


def _cog_dir(root: Path, plan: ScenePlan) -> Path:
    """Earth Search layout: ``<zone>/<band>/<square>/<year>/<month>/<item id>/``."""
    m = plan.grid.mgrs
    return (
        root
        / "cogs"
        / str(m.zone)
        / m.band
        / m.square
        / str(plan.acquired.year)
        / str(plan.acquired.month)
        / plan.item_id
    )


@dataclass(frozen=True)
class _SceneContext:
    """What every raster of one scene shares: its grid, date state, clouds and valid swath."""

    root: Path
    plan: ScenePlan
    land: Any  # Landscape, or WorldTile for the benchmark world
    tables: Any  # UnitTables or WorldUnitTables
    preset: SynthPreset
    seed: int
    sun: SunPosition
    state: Any
    layer: Any
    atmos: Any  # Atmosphere or SceneEffects
    edge: SwathEdge | None

    @property
    def size_m(self) -> float:
        return self.plan.grid.size * 10.0

    def valid(self, res: int) -> Array:
        shape = self.plan.grid.shape(res)
        if self.edge is None:
            return np.ones(shape, dtype=bool)
        return self.edge.valid(shape, res, self.size_m)

    def write(self, name: str, data: Array, res: int, resampling: str, description: str) -> Path:
        grid = self.plan.grid
        return write_cog(
            _cog_dir(self.root, self.plan) / f"{name}.tif",
            data,
            crs=grid.crs,
            transform=grid.transform(res),
            nodata=0,
            blocksize=self.preset.blocksize,
            resampling=resampling,
            description=description,
        )


def _scene_context(
    root: Path, plan: ScenePlan, land: Landscape, tables: UnitTables, preset: SynthPreset, seed: int
) -> _SceneContext:
    grid = plan.grid
    tile, key = grid.id, plan.acquired.strftime("%Y%m%d")
    _, lat = grid.centre_lonlat()
    sun = SunPosition.at(lat, plan.doy)
    layer = make_clouds(
        rng_for(seed, "clouds", tile, key), grid.padded, grid.size, plan.cloud_target, sun
    )
    size_m = grid.size * 10.0
    return _SceneContext(
        root=root,
        plan=plan,
        land=land,
        tables=tables,
        preset=preset,
        seed=seed,
        sun=sun,
        state=date_state(tables, plan.doy, (seed, "state", tile, key)),
        layer=layer,
        atmos=Atmosphere.draw(rng_for(seed, "atmosphere", tile, key)),
        edge=SwathEdge.draw(rng_for(seed, "swath", tile, key), size_m) if plan.swath_edge else None,
    )


def _render_bands(ctx: _SceneContext, bands: list[Band]) -> dict[str, dict[str, Any]]:
    grid, tile, key = ctx.plan.grid, ctx.plan.grid.id, ctx.plan.acquired.strftime("%Y%m%d")
    assets: dict[str, dict[str, Any]] = {}
    offset = -0.1 if ctx.plan.offset_dn else 0.0
    for band in bands:
        rng = rng_for(ctx.seed, "pixel", tile, key, band.name)
        dn = _render_band(
            ctx.land, ctx.tables, ctx.state, ctx.layer, ctx.atmos, band, rng, ctx.plan.offset_dn
        )
        dn[~ctx.valid(band.resolution_m)] = 0
        path = ctx.write(
            band.name,
            dn,
            band.resolution_m,
            ctx.preset.overview_resampling,
            band.common_name,
        )
        assets[band.common_name] = band_asset(band, str(path), grid, offset)
    return assets


def _render_scl(ctx: _SceneContext) -> Array:
    grid, tile, key = ctx.plan.grid, ctx.plan.grid.id, ctx.plan.acquired.strftime("%Y%m%d")
    n = grid.size
    green20 = np.empty(grid.shape(20), dtype=np.float32)
    for r0 in range(0, n, _STRIP_ROWS):
        e = min(n, r0 + _STRIP_ROWS)
        green20[r0 // 2 : e // 2] = block_mean(
            ctx.state.pixels(ctx.land, slice(r0, e))[0][:, :n], 2
        )
    return scene_classification(
        ctx.land.landcover[:n, :n],
        green20,
        ctx.layer,
        ctx.valid(20),
        rng_for(ctx.seed, "scl", tile, key),
    )


def _render_scene(
    root: Path,
    plan: ScenePlan,
    land: Landscape,
    tables: UnitTables,
    bands: list[Band],
    preset: SynthPreset,
    seed: int,
) -> dict[str, Any]:
    ctx = _scene_context(root, plan, land, tables, preset, seed)
    grid = plan.grid
    assets = _render_bands(ctx, bands)
    scl = _render_scl(ctx)
    if preset.include_scl:
        assets["scl"] = scl_asset(str(ctx.write("SCL", scl, 20, "nearest", "scl")), grid)

    return _scene_item(ctx, assets, scl, {})


def _scene_item(
    ctx: _SceneContext,
    assets: dict[str, dict[str, Any]],
    scl: Array,
    properties: dict[str, Any],
) -> dict[str, Any]:
    """The STAC item of a rendered scene (footprint clipped to the swath, SCL statistics)."""
    plan, grid, size_m, root, seed = ctx.plan, ctx.plan.grid, ctx.size_m, ctx.root, ctx.seed
    x0, y0 = grid.mgrs.origin
    ring_local = (
        ctx.edge.clip_ring(size_m, size_m)
        if ctx.edge
        else [(0.0, 0.0), (size_m, 0.0), (size_m, size_m), (0.0, size_m)]
    )
    # Earth Search rings run counter-clockwise in lon/lat; local y grows southwards.
    ring = [(x0 + x, y0 - y) for x, y in reversed(ring_local)]
    geometry, bbox = footprint(grid, ring)
    item = scene_item(
        item_id=plan.item_id,
        grid=grid,
        acquired=plan.acquired,
        platform=plan.platform,
        baseline=plan.baseline,
        relative_orbit=_tile_hash(grid.id) % 143 + 1,
        geometry=geometry,
        bbox=bbox,
        scl_stats=scl_statistics(scl),
        sun_zenith=ctx.sun.zenith,
        sun_azimuth=ctx.sun.azimuth,
        assets=assets,
        collection_href=str(root / "collection.json"),
        extra_properties={"earthloop:synthetic": True, "earthloop:seed": seed, **properties},
    )
    check_item(item)
    return item


def _write_labels(
    root: Path,
    land: Landscape | WorldTile,
    blocksize: int,
    landcover_classes: dict[int, str] = LANDCOVER_CLASSES,
) -> TileLabels:
    grid = land.grid
    out = root / "labels" / grid.id
    paths: dict[str, Path] = {}
    for name, classes in (
        ("landcover", landcover_classes),
        ("croptype", CROPTYPE_CLASSES),
        ("parcels", None),
    ):
        tags = (
            {f"CLASS_{k}": v for k, v in classes.items()}
            if classes
            else {"ZERO": "outside parcels"}
        )
        paths[name] = write_cog(
            out / f"{name}.tif",
            land.label(name),
            crs=grid.crs,
            transform=grid.transform(10),
            nodata=0,
            blocksize=blocksize,
            resampling="nearest",
            description=name,
            tags=tags,
        )
    left, bottom, right, top = grid.bounds()
    _, bbox = footprint(grid, [(left, bottom), (right, bottom), (right, top), (left, top)])
    return TileLabels(
        tile=grid.id,
        epsg=grid.epsg,
        landcover=paths["landcover"],
        croptype=paths["croptype"],
        parcels=paths["parcels"],
        shape=(grid.size, grid.size),
        transform=tuple(grid.transform(10))[:6],
        bbox=tuple(bbox),
    )


_OUTPUTS = ("cogs", "labels", "catalog", "collection.json", "items.ndjson", MANIFEST_NAME)


def _clear_previous(root: Path) -> None:
    """Remove a previous archive's outputs — only the names this generator writes."""
    for name in _OUTPUTS:
        p = root / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def _existing(root: Path, preset: str, seed: int, params: dict[str, Any]) -> SynthManifest | None:
    if not (root / MANIFEST_NAME).exists():
        return None
    try:
        m = load_manifest(root)
    except (ValueError, OSError):
        return None
    same = (
        m.preset == preset
        and m.seed == seed
        and m.generator_version == GENERATOR_VERSION
        and json.dumps(m.params, sort_keys=True) == json.dumps(params, sort_keys=True)
    )
    return m if same and not m.missing_files() else None


def find_existing(
    out_dir: str | os.PathLike[str], *, preset: str = "demo", seed: int = 0, **overrides: Any
) -> SynthManifest | None:
    """The complete archive under ``out_dir`` if it was made with exactly these settings."""
    params = resolve_preset(preset, overrides).to_dict()
    return _existing(Path(out_dir).resolve(), preset, seed, params)


def generate(
    out_dir: str | os.PathLike[str],
    *,
    preset: str = "demo",
    seed: int = 0,
    force: bool = False,
    progress: ProgressFn | None = None,
    **overrides: Any,
) -> SynthManifest:
    """Write a synthetic Sentinel-2 L2A archive (COGs, STAC, labels, manifest) under ``out_dir``.

    Idempotent: if ``out_dir`` already holds a complete archive made from the same preset, seed,
    overrides and generator version, it is returned untouched unless ``force`` is set.
    ``overrides`` replace preset fields (see :class:`SynthPreset`), e.g. ``size_px=256``.
    """
    params_obj = resolve_preset(preset, overrides)
    params = params_obj.to_dict()
    root = Path(out_dir).resolve()
    if not force and (found := _existing(root, preset, seed, params)) is not None:
        return found
    bands = resolve_bands(list(params_obj.bands))
    bands.sort(key=lambda b: list(BANDS).index(b.name))
    plans = plan_scenes(params_obj, seed)  # may still reject the dates; nothing written yet
    root.mkdir(parents=True, exist_ok=True)
    if (root / MANIFEST_NAME).exists():  # ours: safe to clear; anything else is left alone
        _clear_previous(root)

    items, labels, scenes_assets = _render_all(root, plans, bands, params_obj, seed, progress)
    manifest = _write_catalogue(root, items, labels, scenes_assets, preset, seed, params_obj)
    manifest.save()
    return manifest


def _render_all(
    root: Path,
    plans: list[ScenePlan],
    bands: list[Band],
    params_obj: SynthPreset,
    seed: int,
    progress: ProgressFn | None,
) -> tuple[list[dict[str, Any]], dict[str, TileLabels], list[dict[str, Path]]]:
    """Every scene, tile by tile: a tile's landscape is built once and freed before the next."""
    total = len(plans)
    items: list[dict[str, Any]] = []
    labels: dict[str, TileLabels] = {}
    scenes_assets: list[dict[str, Path]] = []
    for ti, tile in enumerate(params_obj.tiles):
        tile_plans = [p for p in plans if p.tile_index == ti]
        if params_obj.world is not None:
            _render_world_tile(root, tile_plans, bands, params_obj, seed, items, labels)
            scenes_assets.extend(
                {k: Path(a["href"]) for k, a in it["assets"].items()}
                for it in items[len(scenes_assets) :]
            )
            if progress is not None:
                progress(len(items), total, f"{tile} ({params_obj.world.regions[ti]})")
            continue
        land = build_landscape(tile_plans[0].grid, params_obj, seed)
        tables = unit_tables(land, seed)
        labels[tile] = _write_labels(root, land, params_obj.blocksize)
        for plan in tile_plans:
            t0 = time.perf_counter()
            item = _render_scene(root, plan, land, tables, bands, params_obj, seed)
            items.append(item)
            scenes_assets.append({k: Path(a["href"]) for k, a in item["assets"].items()})
            if progress is not None:
                cc = item["properties"]["eo:cloud_cover"]
                progress(
                    len(items),
                    total,
                    f"{item['id']} cloud {cc:5.1f}% ({time.perf_counter() - t0:.2f} s)",
                )
        del land, tables
    return items, labels, scenes_assets


def _render_world_tile(
    root: Path,
    tile_plans: list[ScenePlan],
    bands: list[Band],
    preset: SynthPreset,
    seed: int,
    items: list[dict[str, Any]],
    labels: dict[str, TileLabels],
) -> None:
    """Every scene of one tile of the benchmark world (docs/world.md), appended to ``items``."""
    spec = preset.world
    assert spec is not None
    ti = tile_plans[0].tile_index
    land = build_world_tile(tile_plans[0].grid, preset, seed, ti)
    tables = world_unit_tables(land, spec, seed)
    labels[land.grid.id] = _write_labels(root, land, preset.blocksize, WORLD_CLASSES)
    for plan in tile_plans:
        items.append(_render_world_scene(root, plan, land, tables, bands, preset, seed))


def _render_world_scene(
    root: Path,
    plan: ScenePlan,
    land: WorldTile,
    tables: WorldUnitTables,
    bands: list[Band],
    preset: SynthPreset,
    seed: int,
) -> dict[str, Any]:
    """One world scene as COGs + STAC item; the item names its region and role."""
    spec = preset.world
    assert spec is not None
    grid, key = plan.grid, plan.acquired.strftime("%Y%m%d")
    _, lat = grid.centre_lonlat()
    sun = SunPosition.at(lat, plan.doy)
    size_m = grid.size * 10.0
    edge = SwathEdge.draw(rng_for(seed, "swath", grid.id, key), size_m) if plan.swath_edge else None

    def valid(res: int) -> Array:
        shape = grid.shape(res)
        return np.ones(shape, dtype=bool) if edge is None else edge.valid(shape, res, size_m)

    scene = render_world_scene(
        land, tables, spec, doy=plan.doy, sun=sun, cloud_target=plan.cloud_target, seed=seed,
        key=key, bands=[b.name for b in bands], valid20=valid(20),
    )  # fmt: skip
    ctx = _SceneContext(
        root=root, plan=plan, land=land, tables=tables, preset=preset, seed=seed, sun=sun,
        state=None, layer=scene.clouds, atmos=scene.effects, edge=edge,
    )  # fmt: skip
    assets: dict[str, dict[str, Any]] = {}
    n = grid.size
    for band in bands:
        refl = scene.reflectance[band.name]
        res = band.resolution_m
        if res == 10:
            dn = encode_dn(refl[:n, :n], plan.offset_dn)
        elif res == 20:
            dn = encode_dn(block_mean(refl[:n, :n], 2), plan.offset_dn)
        else:
            dn = encode_dn(block_mean(refl, 6), plan.offset_dn)
        dn[~valid(res)] = 0
        path = ctx.write(band.name, dn, res, preset.overview_resampling, band.common_name)
        assets[band.common_name] = band_asset(
            band, str(path), grid, -0.1 if plan.offset_dn else 0.0
        )
    if preset.include_scl:
        assets["scl"] = scl_asset(str(ctx.write("SCL", scene.scl, 20, "nearest", "scl")), grid)
    return _scene_item(ctx, assets, scene.scl, {
        "earthloop:region": spec.regions[plan.tile_index],
        "earthloop:role": spec.roles[plan.tile_index],
    })  # fmt: skip


def _write_catalogue(
    root: Path,
    items: list[dict[str, Any]],
    labels: dict[str, TileLabels],
    scenes_assets: list[dict[str, Path]],
    preset: str,
    seed: int,
    params_obj: SynthPreset,
) -> SynthManifest:
    """The STAC collection, items (ndjson + static catalog) and the manifest that indexes them."""
    coll = collection_dict(
        items,
        description=(
            f"Synthetic Sentinel-2 L2A scenes (preset {preset!r}, seed {seed}) with land-cover and "
            "crop-type ground truth, laid out like Earth Search v1."
        ),
    )
    collection_path = write_json(coll, root / "collection.json")
    items_ndjson = write_ndjson(items, root / "items.ndjson")
    catalog_path, item_paths = write_static_catalog(coll, items, root / "catalog")
    return SynthManifest(
        root=root,
        preset=preset,
        seed=seed,
        params=params_obj.to_dict(),
        generator_version=GENERATOR_VERSION,
        collection_path=collection_path,
        items_ndjson=items_ndjson,
        catalog_path=catalog_path,
        item_paths=item_paths,
        scenes=[
            SceneRecord(
                item_id=item["id"],
                tile=item["properties"]["s2:mgrs_tile"],
                datetime=item["properties"]["datetime"],
                processing_baseline=item["properties"]["s2:processing_baseline"],
                cloud_cover=float(item["properties"]["eo:cloud_cover"]),
                item_path=path,
                assets=assets,
            )
            for item, path, assets in zip(items, item_paths, scenes_assets, strict=True)
        ],
        labels=labels,
        landcover_classes=dict(WORLD_CLASSES if params_obj.world else LANDCOVER_CLASSES),
        croptype_classes=dict(CROPTYPE_CLASSES),
        tiles=list(params_obj.tiles),
        regions=_tile_regions(params_obj),
    )


def _tile_regions(preset: SynthPreset) -> dict[str, dict[str, str]]:
    """Region and role of every tile of a world preset (empty for the original presets)."""
    if preset.world is None:
        return {}
    w = preset.world
    return {
        t: {"region": r, "role": o}
        for t, r, o in zip(preset.tiles, w.regions, w.roles, strict=True)
    }
