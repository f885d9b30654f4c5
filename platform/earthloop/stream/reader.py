"""Cutting chips out of per-band COGs, one decode per tile region (no Ray here).

With Earth Search's layout (1024×1024 internal tiles) a 256-px window decodes a whole tile per
band, and a naive per-chip reader decodes the same tile again for every neighbouring chip. We
read the union window of a *group* of nearby chips of one scene once per band and cut every chip
from it, so each tile is decoded once however many chips it feeds.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from rasterio.enums import Resampling

from earthloop.raster.read import ChipReadError, gdal_env, read_window
from earthloop.s2.scl import scl_invalid_mask

log = logging.getLogger("earthloop.stream")

Row = dict[str, Any]


def _band_indices(row: Row, bands: Sequence[str] | None) -> list[int]:
    available = list(row["bands"])
    if bands is None:
        return list(range(len(available)))
    missing = [b for b in bands if b not in available]
    if missing:
        raise ChipReadError("missing_asset", f"chip {row['chip_id']} lacks bands {missing}")
    return [available.index(b) for b in bands]


def _union(rows: Sequence[Row]) -> tuple[float, float, float, float]:
    return (
        min(r["minx"] for r in rows),
        min(r["miny"] for r in rows),
        max(r["maxx"] for r in rows),
        max(r["maxy"] for r in rows),
    )


def read_group(
    rows: Sequence[Row],
    bands: Sequence[str] | None = None,
    *,
    mask_clouds: bool = True,
    resampling: Resampling = Resampling.bilinear,
    cachemax_mb: int = 64,
    labels: Mapping[str, str] | None = None,
) -> Iterator[Row]:
    """Yield one output row per chip of ``rows`` (all from the same scene and grid).

    Output: ``image`` float32 (C, H, W) reflectance with invalid pixels set to 0, ``valid`` bool
    (H, W) (nodata, cloud, shadow and saturated pixels are False), plus identifying metadata;
    with ``labels`` (tile → label raster) also ``label`` int64 (H, W), read nearest-neighbour.
    A group whose files cannot be read yields rows with ``error`` set instead of raising, so a
    consumer can count and skip them.
    """
    if not rows:
        return
    first = rows[0]
    size = int(first["chip_size"])
    res = (first["maxx"] - first["minx"]) / size
    ub = _union(rows)
    width = round((ub[2] - ub[0]) / res)
    height = round((ub[3] - ub[1]) / res)
    try:
        idx = _band_indices(first, bands)
        with gdal_env(cachemax_mb):
            stack = np.empty((len(idx), height, width), dtype=np.float32)
            valid = np.ones((height, width), dtype=bool)
            for out_i, band_i in enumerate(idx):
                dn = read_window(
                    first["hrefs"][band_i],
                    first["crs"],
                    ub,
                    (height, width),
                    resampling=resampling,
                )
                valid &= dn != first["nodata"]
                stack[out_i] = dn.astype(np.float32) * np.float32(
                    first["scales"][band_i]
                ) + np.float32(first["offsets"][band_i])
            if mask_clouds and first.get("scl_href"):
                scl = read_window(first["scl_href"], first["crs"], ub, (height, width))
                valid &= ~scl_invalid_mask(scl)
            label = None
            if labels is not None:
                href = labels.get(first["tile"])
                if href is None:
                    raise ChipReadError("missing_label", f"no label raster for {first['tile']}")
                label = read_window(href, first["crs"], ub, (height, width)).astype(np.int64)
    except ChipReadError as exc:
        log.warning("group of %d chips from %s unreadable: %s", len(rows), first["item_id"], exc)
        for r in rows:
            yield _meta(r) | {"error": f"{exc.reason}: {exc}"}
        return
    for r in rows:
        c0 = round((r["minx"] - ub[0]) / res)
        r0 = round((ub[3] - r["maxy"]) / res)
        img = stack[:, r0 : r0 + size, c0 : c0 + size].copy()
        ok = valid[r0 : r0 + size, c0 : c0 + size].copy()
        img[:, ~ok] = 0.0
        out = _meta(r) | {"image": img, "valid": ok, "error": ""}
        if label is not None:
            out["label"] = label[r0 : r0 + size, c0 : c0 + size].copy()
        yield out


def _meta(r: Row) -> Row:
    return {
        "chip_id": r["chip_id"],
        "location_id": r["location_id"],
        "item_id": r["item_id"],
        "tile": r.get("tile", ""),
        "season": int(r["season"]),
        "timestamp": float(r["datetime"].timestamp())
        if hasattr(r["datetime"], "timestamp")
        else float(r["datetime"]),
    }


def group_key(row: Row, group_px: int) -> tuple[str, int, int]:
    """Chips of one scene within the same ``group_px`` block are read together."""
    return (row["item_id"], int(row["row_off"]) // group_px, int(row["col_off"]) // group_px)


def plan_groups(rows: Sequence[Row], group_px: int = 1024, max_chips: int = 64) -> list[list[Row]]:
    """Partition chip rows into read groups (same scene, same block), at most ``max_chips`` each."""
    buckets: dict[tuple[str, int, int], list[Row]] = {}
    for r in rows:
        buckets.setdefault(group_key(r, group_px), []).append(r)
    groups: list[list[Row]] = []
    for key in sorted(buckets):
        b = sorted(buckets[key], key=lambda r: (r["row_off"], r["col_off"], r["chip_id"]))
        groups.extend(b[i : i + max_chips] for i in range(0, len(b), max_chips))
    return groups


def read_location(
    rows: Sequence[Row],
    bands: Sequence[str] | None,
    dates: int,
    *,
    rng: np.random.Generator | None = None,
    cachemax_mb: int = 64,
) -> Row | None:
    """SeCo sample: ``dates`` acquisitions of one location → images (T, C, H, W).

    Picks ``dates`` distinct seasons (randomly when ``rng`` is given, else the first ones in time)
    and returns None when the location has fewer readable dates than that.
    """
    by_season: dict[int, Row] = {}
    for r in sorted(rows, key=lambda r: (r["season"], r["cloud_fraction"])):
        by_season.setdefault(int(r["season"]), r)
    seasons = sorted(by_season)
    if len(seasons) < dates:
        return None
    chosen = (
        sorted(rng.choice(seasons, size=dates, replace=False).tolist())
        if rng is not None
        else seasons[:dates]
    )
    images, valids, stamps = [], [], []
    for s in chosen:
        out = next(read_group([by_season[s]], bands, cachemax_mb=cachemax_mb))
        if out["error"]:
            return None
        images.append(out["image"])
        valids.append(out["valid"])
        stamps.append(out["timestamp"])
    return {
        "location_id": rows[0]["location_id"],
        "images": np.stack(images),
        "valid": np.stack(valids),
        "timestamps": np.asarray(stamps, dtype=np.float64),
    }
