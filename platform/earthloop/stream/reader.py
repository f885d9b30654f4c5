"""Cutting chips out of per-band COGs, one decode per tile region (no Ray here).

With Earth Search's layout (1024×1024 internal tiles) a 256-px window decodes a whole tile per
band, and a naive per-chip reader decodes the same tile again for every neighbouring chip. We
read the union window of a *group* of nearby chips of one scene once per band and cut every chip
from it, so each tile is decoded once however many chips it feeds.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from rasterio.enums import Resampling

from earthloop.raster.read import ChipReadError, gdal_env, read_window, read_windows
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


@dataclass
class ChipGroup:
    """One read group in columnar form: the scene-level fields once, the per-chip ones as arrays.

    The Ray pipeline builds it from an Arrow index batch without a Python dict per chip;
    :func:`group_of_rows` builds it from dict rows for the driver-side callers.
    """

    scene: Row  # chip_size, crs, hrefs, bands, scales, offsets, nodata, scl_href, tile, item_id
    bounds: np.ndarray  # (N, 4) float64: minx, miny, maxx, maxy of each chip
    ids: dict[str, np.ndarray]  # ID_COLUMNS, each (N,)

    def __len__(self) -> int:
        return int(self.bounds.shape[0])


#: identifying columns of every chip a stream delivers
ID_COLUMNS = ("chip_id", "location_id", "item_id", "tile", "season", "timestamp")


def _timestamp(value: Any) -> float:
    return float(value.timestamp()) if hasattr(value, "timestamp") else float(value)


def group_of_rows(rows: Sequence[Row]) -> ChipGroup:
    """The columnar form of dict rows (all from the same scene and grid)."""
    return ChipGroup(
        scene=dict(rows[0]),
        bounds=np.asarray(
            [[r["minx"], r["miny"], r["maxx"], r["maxy"]] for r in rows], dtype=np.float64
        ),
        ids={
            "chip_id": np.asarray([r["chip_id"] for r in rows], dtype=object),
            "location_id": np.asarray([r["location_id"] for r in rows], dtype=object),
            "item_id": np.asarray([r["item_id"] for r in rows], dtype=object),
            "tile": np.asarray([r.get("tile", "") for r in rows], dtype=object),
            "season": np.asarray([int(r["season"]) for r in rows], dtype=np.int64),
            "timestamp": np.asarray([_timestamp(r["datetime"]) for r in rows], dtype=np.float64),
        },
    )


def _read_union(
    scene: Row,
    idx: Sequence[int],
    ub: tuple[float, float, float, float],
    shape: tuple[int, int],
    *,
    mask_clouds: bool,
    resampling: Resampling,
    labels: Mapping[str, str] | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Reflectance (C, h, w), validity (h, w) and optional label (h, w) of one union window."""
    stack = np.empty((len(idx), *shape), dtype=np.float32)
    valid = np.ones(shape, dtype=bool)
    # one call for every band: over HTTP the band files' range requests go out together (one
    # round trip, not one per band; benchmarks/remote_bench.py); local files are read in turn
    dns = read_windows(
        [scene["hrefs"][i] for i in idx], scene["crs"], ub, shape, resampling=resampling
    )
    for out_i, (band_i, dn) in enumerate(zip(idx, dns, strict=True)):
        valid &= dn != scene["nodata"]
        # in place, in float32: the same values as dn.astype(float32) * scale + offset
        np.multiply(dn, np.float32(scene["scales"][band_i]), out=stack[out_i], casting="unsafe")
        stack[out_i] += np.float32(scene["offsets"][band_i])
    if mask_clouds and scene.get("scl_href"):
        scl = read_window(scene["scl_href"], scene["crs"], ub, shape)
        valid &= ~scl_invalid_mask(scl)
    label = None
    if labels is not None:
        href = labels.get(scene["tile"])
        if href is None:
            raise ChipReadError("missing_label", f"no label raster for {scene['tile']}")
        label = read_window(href, scene["crs"], ub, shape).astype(np.int64)
    return stack, valid, label


def read_group_arrays(
    group: ChipGroup,
    bands: Sequence[str] | None = None,
    *,
    mask_clouds: bool = True,
    resampling: Resampling = Resampling.bilinear,
    cachemax_mb: int = 64,
    labels: Mapping[str, str] | None = None,
    into: Mapping[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Read every chip of ``group`` from one union window per band, as columns.

    Returns ``image`` float32 (N, C, H, W) reflectance with invalid pixels set to 0, ``valid``
    bool (N, H, W) (nodata, cloud, shadow and saturated pixels are False), the id columns of
    :data:`ID_COLUMNS` and ``error`` (N,) ("" when read); with ``labels`` (tile → label raster)
    also ``label`` int64 (N, H, W), read nearest-neighbour. A group whose files cannot be read
    comes back with ``error`` set on every chip and zero pixels instead of raising, so a
    consumer can count and skip it. ``into`` (``image`` and ``valid`` arrays of those shapes,
    e.g. slices of a read task's output batch) receives the pixels instead of new arrays, so a
    task assembling many groups into one batch copies each chip once.
    """
    scene, n = group.scene, len(group)
    size = int(scene["chip_size"])
    b = group.bounds
    res = (b[0, 2] - b[0, 0]) / size
    ub = (float(b[:, 0].min()), float(b[:, 1].min()), float(b[:, 2].max()), float(b[:, 3].max()))
    shape = (round((ub[3] - ub[1]) / res), round((ub[2] - ub[0]) / res))
    out: dict[str, np.ndarray] = dict(group.ids)
    try:
        idx = _band_indices(scene, bands)
        with gdal_env(cachemax_mb):
            stack, valid, label = _read_union(
                scene, idx, ub, shape, mask_clouds=mask_clouds, resampling=resampling, labels=labels
            )
    except ChipReadError as exc:
        log.warning("group of %d chips from %s unreadable: %s", n, scene["item_id"], exc)
        nb = len(bands) if bands is not None else len(scene["bands"])
        out["image"] = np.zeros((n, nb, size, size), dtype=np.float32)
        out["valid"] = np.zeros((n, size, size), dtype=bool)
        if labels is not None:
            out["label"] = np.zeros((n, size, size), dtype=np.int64)
        out["error"] = np.full(n, f"{exc.reason}: {exc}", dtype=object)
        return out
    c0s = np.rint((b[:, 0] - ub[0]) / res).astype(np.int64).tolist()
    r0s = np.rint((ub[3] - b[:, 3]) / res).astype(np.int64).tolist()
    if into is not None:
        images, valids = into["image"], into["valid"]
    else:
        images = np.empty((n, stack.shape[0], size, size), dtype=np.float32)
        valids = np.empty((n, size, size), dtype=bool)
    for i, (r0, c0) in enumerate(zip(r0s, c0s, strict=True)):
        images[i] = stack[:, r0 : r0 + size, c0 : c0 + size]
        valids[i] = valid[r0 : r0 + size, c0 : c0 + size]
    np.copyto(images, np.float32(0.0), where=~valids[:, None])
    out["image"], out["valid"] = images, valids
    if label is not None:
        out["label"] = np.stack(
            [label[r : r + size, c : c + size] for r, c in zip(r0s, c0s, strict=True)]
        )
    out["error"] = np.full(n, "", dtype=object)
    return out


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

    The per-chip form of :func:`read_group_arrays` for driver-side callers (labelling previews,
    fine-tuning pools, probes): the same pixels, one dict per chip with ``image`` (C, H, W),
    ``valid`` (H, W), optional ``label`` (H, W), ``error`` and the identifying metadata. Rows
    of an unreadable group carry ``error`` and no pixels.
    """
    if not rows:
        return
    cols = read_group_arrays(
        group_of_rows(rows),
        bands,
        mask_clouds=mask_clouds,
        resampling=resampling,
        cachemax_mb=cachemax_mb,
        labels=labels,
    )
    failed = bool(cols["error"][0])
    for i in range(len(rows)):
        out: Row = {
            k: cols[k][i].item() if k in ("season", "timestamp") else cols[k][i] for k in ID_COLUMNS
        }
        out["error"] = str(cols["error"][i])
        if not failed:
            out["image"], out["valid"] = cols["image"][i], cols["valid"][i]
            if "label" in cols:
                out["label"] = cols["label"][i]
        yield out


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


def choose_dates(
    rows: Sequence[Row], dates: int, rng: np.random.Generator | None = None
) -> list[Row] | None:
    """The index rows of one location a SeCo sample reads: ``dates`` distinct seasons, the
    least cloudy row of each, in season order (drawn with ``rng``, else the first seasons).

    None when the location has fewer seasons than that. Kept apart from the reading so that a
    read task can choose every location's dates first and then read them grouped by COG tile.
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
    return [by_season[s] for s in chosen]


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
    chosen = choose_dates(rows, dates, rng)
    if chosen is None:
        return None
    images, valids, stamps = [], [], []
    for row in chosen:
        out = next(read_group([row], bands, cachemax_mb=cachemax_mb))
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
