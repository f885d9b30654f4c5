"""The ingest stage: catalogue search → seasonal sampling → per-chip SCL check → Delta index.

Every failure is local: a season window whose search fails, a scene with a missing asset or a
wrong CRS, a chip whose COG cannot be read — each is logged with its reason, counted, and the
rest of the ingest carries on. Chip ids are derived from (location, scene, window), and the index
is written by MERGE, so re-running the same ingest adds nothing.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pystac
from rasterio.warp import transform as warp_transform
from shapely.geometry import Point, shape

from earthloop.config import EarthloopConfig, IngestConfig, resolve_path
from earthloop.ingest.sampling import Location, aoi_from, sample_locations, spatial_split
from earthloop.ingest.scenes import Scene, chip_bounds, describe_scene
from earthloop.ingest.stac import Catalogue, SearchError, SearchRequest, season_windows
from earthloop.observe.logs import redact_url
from earthloop.observe.progress import Progress
from earthloop.raster.read import ChipReadError, gdal_env, read_window
from earthloop.s2.bands import resolve_bands
from earthloop.s2.scl import chip_quality
from earthloop.store.delta import (
    INDEX_LAYOUT,
    StoreWriteError,
    append_rows,
    merge_rows,
    row_hash,
)
from earthloop.store.tables import CHIPS, INGEST_RUNS

log = logging.getLogger("earthloop.ingest")


@dataclass
class IngestReport:
    """What an ingest did; printed at the end of the job and stored as an ``ingest_runs`` row."""

    run_id: str
    scenes: int = 0
    locations: int = 0
    chips: int = 0
    inserted: int = 0
    updated: int = 0
    failed: int = 0  # chips found but not written (commit conflicts outlasted every retry)
    table_version: int = -1
    rejected: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    mode: str = ""

    def summary(self) -> str:
        rej = ", ".join(f"{k}={v}" for k, v in sorted(self.rejected.items())) or "none"
        return (
            f"ingest {self.run_id}: {self.scenes} scenes, {self.locations} locations, "
            f"{self.chips} chips ({self.inserted} new, {self.updated} updated"
            + (f", {self.failed} NOT WRITTEN" if self.failed else "")
            + "), "
            f"chips table v{self.table_version}; rejected: {rej}"
        )


Hook = Callable[[str, int], None]


def _noop(_: str, __: int) -> None:
    return None


def search_scenes(
    cfg: EarthloopConfig, report: IngestReport, on_reject: Hook = _noop
) -> list[tuple[int, pystac.Item]]:
    """One search per season window; returns (season index, item) pairs, deduplicated."""
    ing = cfg.ingest
    geojson = (
        json.loads(Path(resolve_path(ing.aoi_geojson)).read_text()) if ing.aoi_geojson else None
    )
    intersects = None
    if geojson is not None:
        intersects = aoi_from(None, geojson, []).__geo_interface__
    source = cfg.stac.url if "://" in cfg.stac.url else resolve_path(cfg.stac.url)
    catalogue = Catalogue(
        source,
        timeout_s=cfg.stac.timeout_s,
        max_retries=cfg.stac.max_retries,
        backoff_s=cfg.stac.backoff_s,
    )
    found: list[tuple[int, pystac.Item]] = []
    seen: set[str] = set()
    for season, window in enumerate(season_windows(ing.datetime, ing.dates_per_location)):
        req = SearchRequest(cfg.stac.collection, ing.bbox, intersects, window, ing.max_scene_cloud)
        try:
            items = list(catalogue.search(req))
        except SearchError as exc:
            report.rejected["search_error"] += 1
            on_reject("search_error", 1)
            report.errors.append(str(exc))
            log.error("season %d (%s): %s", season, window, exc)
            continue
        for it in items:
            if it.id not in seen:
                seen.add(it.id)
                found.append((season, it))
        log.info("season %d (%s): %d scenes", season, window, len(items))
    report.mode = catalogue.mode_used
    if not found:
        msg = (
            f"the search returned no scenes ({redact_url(cfg.stac.url)}, {ing.datetime},"
            f" bbox={ing.bbox})"
        )
        report.errors.append(msg)
        log.warning(msg)
    return found


def _to_crs(lon: float, lat: float, crs: str) -> tuple[float, float]:
    xs, ys = warp_transform("EPSG:4326", crs, [lon], [lat])
    return float(xs[0]), float(ys[0])


def _plan_location(
    loc: Location, scenes: list[tuple[int, Scene]], size: int
) -> tuple[list[tuple[int, Scene, tuple[float, float, float, float], tuple[int, int]]], str]:
    """Candidate (season, scene, bounds) for one location, on the grid that covers most seasons.

    With no candidate, also says why, so the location is counted as a rejection rather than
    silently missing: ``tile_edge`` (a scene covers it but the chip does not fit inside) or
    ``no_scene`` (no scene covers it).
    """
    by_grid: dict[str, list[tuple[int, Scene, Any, Any]]] = {}
    pt = Point(loc.lon, loc.lat)
    covered = False
    for season, sc in scenes:
        if sc.geometry and not shape(sc.geometry).contains(pt):
            continue
        covered = True
        x, y = _to_crs(loc.lon, loc.lat, sc.crs)
        fit = chip_bounds(sc, x, y, size)
        if fit is None:
            continue
        by_grid.setdefault(sc.grid_key, []).append((season, sc, fit[0], fit[1]))
    if not by_grid:
        return [], "tile_edge" if covered else "no_scene"
    best = max(by_grid.values(), key=lambda c: (len({s for s, *_ in c}), len(c)))
    # within a season: clearest scene first (scene cloud cover is a hint, the SCL decides)
    return sorted(best, key=lambda c: (c[0], c[1].cloud_cover or 0.0, c[1].item_id)), ""


def _chip_row(
    loc: Location,
    season: int,
    sc: Scene,
    bounds: Any,
    off: Any,
    size: int,
    q: dict[str, float],
    split: str,
) -> dict[str, Any]:
    chip_id = f"{loc.location_id}-{sc.item_id}-{off[0]}-{off[1]}-{size}"
    row: dict[str, Any] = {
        "chip_id": chip_id,
        "location_id": loc.location_id,
        "item_id": sc.item_id,
        "tile": sc.tile,
        "grid_key": sc.grid_key,
        "datetime": sc.datetime,
        "season": season,
        "lon": loc.lon,
        "lat": loc.lat,
        "crs": sc.crs,
        "minx": bounds[0],
        "miny": bounds[1],
        "maxx": bounds[2],
        "maxy": bounds[3],
        "col_off": int(off[0]),
        "row_off": int(off[1]),
        "chip_size": size,
        "bands": [b.band for b in sc.bands],
        "hrefs": [b.href for b in sc.bands],
        "scales": [b.scale for b in sc.bands],
        "offsets": [b.offset for b in sc.bands],
        "nodata": sc.bands[0].nodata,
        "scl_href": sc.scl.href,
        "cloud_fraction": q["cloud_fraction"],
        "shadow_fraction": q["shadow_fraction"],
        "nodata_fraction": q["nodata_fraction"],
        "scene_cloud_cover": sc.cloud_cover,
        "processing_baseline": sc.baseline,
        "split": split,
    }
    row["row_hash"] = row_hash({k: v for k, v in row.items() if k != "row_hash"})
    return row


def _describe_scenes(
    cfg: EarthloopConfig,
    found: list[tuple[int, pystac.Item]],
    report: IngestReport,
    on_reject: Hook,
) -> list[tuple[int, Scene]]:
    """Scenes whose assets can be described; each one that cannot is counted and skipped."""
    bands = resolve_bands(cfg.ingest.bands)
    scenes: list[tuple[int, Scene]] = []
    for season, item in found:
        try:
            scenes.append((season, describe_scene(item, bands, cfg.stac.href_map)))
        except ChipReadError as exc:
            report.rejected[f"scene_{exc.reason}"] += 1
            on_reject(f"scene_{exc.reason}", 1)
            report.errors.append(str(exc))
            log.warning("skipping scene %s: %s", item.id, exc)
    return scenes


def _sample(ing: IngestConfig, scenes: list[tuple[int, Scene]]) -> list[Location]:
    aoi = aoi_from(
        ing.bbox,
        json.loads(Path(resolve_path(ing.aoi_geojson)).read_text()) if ing.aoi_geojson else None,
        [sc.geometry for _, sc in scenes if sc.geometry],
    )
    return sample_locations(
        aoi,
        ing.num_locations,
        method=ing.sampling,
        centers=ing.centers,
        sigma_m=ing.sigma_m,
        seed=ing.seed,
    )


LocationResult = tuple[list[dict[str, Any]], Counter[str], list[str]]


def _chips_for_location(
    loc: Location, scenes: list[tuple[int, Scene]], ing: IngestConfig
) -> LocationResult:
    """One chip per season for a location (clearest scene first), and why the others failed."""
    out: list[dict[str, Any]] = []
    rej: Counter[str] = Counter()
    errs: list[str] = []
    done_seasons: set[int] = set()
    split = spatial_split(loc.lon, loc.lat, ing.val_fraction)
    candidates, dropped = _plan_location(loc, scenes, ing.chip_size)
    if dropped:
        rej[dropped] += 1
    for season, sc, bounds, off in candidates:
        if season in done_seasons:
            continue
        ratio = round(sc.scl.res / sc.ref.res) or 1
        shape_ = (max(ing.chip_size // ratio, 1),) * 2
        try:
            scl = read_window(sc.scl.href, sc.crs, bounds, shape_)
        except ChipReadError as exc:
            rej[exc.reason] += 1
            errs.append(str(exc))
            continue
        q = chip_quality(scl)
        if q["nodata_fraction"] > ing.max_chip_nodata:
            rej["nodata"] += 1
            continue
        if q["cloud_fraction"] + q["shadow_fraction"] > ing.max_chip_cloud:
            rej["cloud"] += 1
            continue
        out.append(_chip_row(loc, season, sc, bounds, off, ing.chip_size, q, split))
        done_seasons.add(season)
    return out, rej, errs


def _chip_rows(
    ing: IngestConfig,
    scenes: list[tuple[int, Scene]],
    locations: list[Location],
    report: IngestReport,
    on_reject: Hook,
    on_chip: Hook,
) -> list[dict[str, Any]]:
    """Check every location's chips in a thread pool (reads release the GIL)."""
    rows: list[dict[str, Any]] = []
    with (
        Progress("ingest", len(locations), unit="locations", every_s=5.0, logger=log) as progress,
        gdal_env(),
        ThreadPoolExecutor(max_workers=ing.workers) as pool,
    ):
        for out, rej, errs in pool.map(
            lambda loc: _chips_for_location(loc, scenes, ing), locations
        ):
            rows.extend(out)
            report.rejected.update(rej)
            for reason, n in rej.items():
                on_reject(reason, n)
            report.errors.extend(errs[:5])
            on_chip("accepted", len(out))
            progress.update(1, chips=len(rows))
    return rows


#: the index is written clustered by grid and blocks of this many pixels (Earth Search's COG tile)
CLUSTER_PX = 1024


def clustered(table: pa.Table) -> pa.Table:
    """Rows ordered by grid, ``CLUSTER_PX`` block, scene and window.

    The stream's read tasks plan read groups (same scene, same COG tile) from the contiguous rows
    they are given (:mod:`earthloop.stream.batches`): in this order a tile's chips are
    neighbours, so a group is split only where a task's rows end, and the driver never has to
    gather the index to plan. MERGE appends new rows in the source's order.
    """
    if table.num_rows == 0:
        return table
    row_block = pc.divide(table["row_off"], CLUSTER_PX)
    col_block = pc.divide(table["col_off"], CLUSTER_PX)
    keyed = table.append_column("_rb", row_block).append_column("_cb", col_block)
    order = pc.sort_indices(
        keyed,
        sort_keys=[
            (k, "ascending")
            for k in ("grid_key", "_rb", "_cb", "item_id", "row_off", "col_off", "chip_id")
        ],
    )
    return table.take(order)


def _write_chips(cfg: EarthloopConfig, rows: list[dict[str, Any]], report: IngestReport) -> None:
    report.chips = len(rows)
    table = clustered(pa.Table.from_pylist(rows, schema=CHIPS.schema))
    try:
        # small files and row groups: the streams read the index one piece per Ray task
        res = merge_rows(cfg.table_uri(CHIPS), table, CHIPS.keys, layout=INDEX_LAYOUT)
        report.inserted, report.updated, report.table_version = (
            res["inserted"],
            res["updated"],
            res["version"],
        )
    except StoreWriteError as exc:
        # Other writers kept winning: the chips are not in the table, but the run still gets
        # its ingest_runs row (with the loss counted) so that it can be seen and re-run.
        report.failed = exc.rows
        report.errors.append(str(exc))
        log.error("%s", exc)


def _write_run_row(cfg: EarthloopConfig, report: IngestReport, started: datetime) -> None:
    # the run row is kept for ever and read by anyone with the table: no credentials in it
    params = {
        "stac": cfg.redacted_dump()["stac"],
        "ingest": cfg.ingest.model_dump(),
    }
    run_row = {
        "run_id": report.run_id,
        "started_at": started,
        "finished_at": datetime.now(UTC),
        "params": json.dumps(params, sort_keys=True, default=str),
        "source": redact_url(cfg.stac.url),
        "cloud_filter_mode": report.mode,
        "scenes": report.scenes,
        "locations": report.locations,
        "chips_written": report.chips,
        "chips_inserted": report.inserted,
        "chips_failed": report.failed,
        "rejected": json.dumps(dict(report.rejected), sort_keys=True),
        "chips_table_version": report.table_version,
    }
    append_rows(
        cfg.table_uri(INGEST_RUNS), pa.Table.from_pylist([run_row], schema=INGEST_RUNS.schema)
    )


def run_ingest(
    cfg: EarthloopConfig,
    *,
    on_reject: Hook = _noop,
    on_chip: Hook = _noop,
) -> IngestReport:
    """Run the ingest stage described by ``cfg``; never raises for per-scene/per-chip problems."""
    started = datetime.now(UTC)
    report = IngestReport(run_id=uuid.uuid4().hex[:12])
    found = search_scenes(cfg, report, on_reject)
    scenes = _describe_scenes(cfg, found, report, on_reject)
    report.scenes = len(scenes)
    rows: list[dict[str, Any]] = []
    if scenes:
        locations = _sample(cfg.ingest, scenes)
        report.locations = len(locations)
        rows = _chip_rows(cfg.ingest, scenes, locations, report, on_reject, on_chip)
    _write_chips(cfg, rows, report)
    _write_run_row(cfg, report, started)
    log.info(report.summary())
    return report


def season_counts(table: pa.Table) -> dict[str, int]:
    """Locations by how many distinct seasons they have (for SeCo readiness reporting)."""
    if table.num_rows == 0:
        return {}
    loc = np.asarray(table.column("location_id").to_pylist())
    _, counts = np.unique(loc, return_counts=True)
    return {str(k): int(v) for k, v in zip(*np.unique(counts, return_counts=True), strict=True)}
