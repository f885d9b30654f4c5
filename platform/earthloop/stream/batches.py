"""Read tasks of the streams: an Arrow batch of index rows in, columnar pixel batches out.

Ray Data pays per row it converts, not per byte: the first stream emitted one Python dict per
chip and spent ~1.3 ms per 64-px chip turning them into blocks (issue 11). These callables emit
one ``(N, C, H, W)`` array per batch and the ids as arrays, and they plan their read groups from
the Arrow columns of the index batch they are given, in the read task, so neither the driver nor
the pipeline ever handles a chip as a Python object.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
from rasterio.enums import Resampling

from earthloop.observe.recorders import StreamMetrics
from earthloop.stream.index import timestamps
from earthloop.stream.reader import ChipGroup, read_group_arrays, read_location

log = logging.getLogger("earthloop.stream")

Columns = dict[str, np.ndarray]

#: scene-level index fields a read group takes from its first row
SCENE_FIELDS = (
    "item_id",
    "tile",
    "crs",
    "chip_size",
    "bands",
    "hrefs",
    "scales",
    "offsets",
    "nodata",
    "scl_href",
)

#: a read task yields its chips in batches of about this many bytes of pixels
OUT_BYTES = 16 << 20


def _codes(values: np.ndarray) -> np.ndarray:
    """Sortable integer codes of a string column (the order of the strings themselves)."""
    return np.unique(values, return_inverse=True)[1]


def _block_px(table: pa.Table, items: np.ndarray, group_px: int | None) -> np.ndarray:
    """Group size per row: ``group_px``, else each scene's internal COG tile size."""
    if group_px is not None:
        return np.full(len(items), int(group_px), dtype=np.int64)
    out = np.empty(len(items), dtype=np.int64)
    uniq, first, inv = np.unique(items, return_index=True, return_inverse=True)
    hrefs = table["hrefs"]
    for k, i in enumerate(first.tolist()):
        out[inv == k] = internal_tile(str(hrefs[i][0].as_py()))
    return out


def plan_table(
    table: pa.Table, group_px: int | None = None, max_chips: int | None = None
) -> Iterator[ChipGroup]:
    """Read groups of one index batch: same scene, same ``group_px`` block, ``max_chips`` at most.

    The same partition as :func:`earthloop.stream.reader.plan_groups` applied to these rows
    (groups ordered by scene and block, chips by row, column and id), from Arrow columns: the
    only Python objects made are one dict of scene fields per group.
    """
    n = table.num_rows
    if n == 0:
        return
    items = table["item_id"].to_numpy(zero_copy_only=False)
    row = table["row_off"].to_numpy().astype(np.int64)
    col = table["col_off"].to_numpy().astype(np.int64)
    size = table["chip_size"].to_numpy().astype(np.int64)
    gpx = _block_px(table, items, group_px)
    item_code = _codes(items)
    chip_code = _codes(table["chip_id"].to_numpy(zero_copy_only=False))
    order = np.lexsort((chip_code, col, row, col // gpx, row // gpx, item_code))
    key = np.stack([item_code, row // gpx, col // gpx], axis=1)[order]
    starts = np.flatnonzero(np.r_[True, (key[1:] != key[:-1]).any(axis=1)])
    ends = np.r_[starts[1:], n]
    bounds = np.stack(
        [table[c].to_numpy().astype(np.float64) for c in ("minx", "miny", "maxx", "maxy")], axis=1
    )
    ids = {
        "chip_id": table["chip_id"].to_numpy(zero_copy_only=False),
        "location_id": table["location_id"].to_numpy(zero_copy_only=False),
        "item_id": items,
        "tile": table["tile"].fill_null("").to_numpy(zero_copy_only=False),
        "season": table["season"].to_numpy().astype(np.int64),
        "timestamp": timestamps(table),
    }
    scene_cols = table.select(list(SCENE_FIELDS))
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        cap = max_chips or max(1, int(gpx[order[s]]) // int(size[order[s]])) ** 2
        for a in range(s, e, cap):
            sel = order[a : min(a + cap, e)]
            scene = scene_cols.slice(int(sel[0]), 1).to_pylist()[0]
            yield ChipGroup(scene, bounds[sel], {k: v[sel] for k, v in ids.items()})


def _concat(parts: Sequence[Columns]) -> Columns:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _select(cols: Columns, keep: np.ndarray) -> Columns:
    return {k: v[keep] for k, v in cols.items()}


class ChipReader:
    """``map_batches`` callable (``batch_format="pyarrow"``): index rows in, chip columns out.

    Output columns: ``image`` float32 (N, C, H, W), ``valid`` bool (N, H, W), optional
    ``label`` int64 (N, H, W), ``error`` and the ids of
    :data:`earthloop.stream.reader.ID_COLUMNS`. Chips of unreadable groups are counted and
    dropped, unless ``keep_errors`` (then they come with ``error`` set and zero pixels).
    """

    def __init__(
        self,
        bands: Sequence[str] | None,
        *,
        cachemax_mb: int = 64,
        resampling: str = "bilinear",
        labels: Mapping[str, str] | None = None,
        keep_errors: bool = False,
        group_px: int | None = None,
        max_chips: int | None = None,
    ) -> None:
        self.bands = list(bands) if bands else None
        self.cachemax_mb = cachemax_mb
        self.resampling = Resampling[resampling]
        self.labels = dict(labels) if labels is not None else None
        self.keep_errors = keep_errors
        self.group_px, self.max_chips = group_px, max_chips

    def __call__(self, table: pa.Table) -> Iterator[Columns]:
        parts: list[Columns] = []
        size = 0
        for group in plan_table(table, self.group_px, self.max_chips):
            cols = read_group_arrays(
                group,
                self.bands,
                cachemax_mb=self.cachemax_mb,
                resampling=self.resampling,
                labels=self.labels,
            )
            ok = cols["error"] == ""
            count_chips(int(ok.sum()))
            if not self.keep_errors and not ok.all():
                cols = _select(cols, ok)
            if len(cols["error"]):
                parts.append(cols)
                size += cols["image"].nbytes
            if size >= OUT_BYTES:
                yield _concat(parts)
                parts, size = [], 0
        if parts:
            yield _concat(parts)


def location_runs(table: pa.Table) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` of each run of equal ``location_id`` in a batch sorted by it."""
    loc = table["location_id"].to_numpy(zero_copy_only=False)
    if len(loc) == 0:
        return
    starts = np.flatnonzero(np.r_[True, loc[1:] != loc[:-1]])
    yield from zip(starts.tolist(), np.r_[starts[1:], len(loc)].tolist(), strict=True)


def usable_locations(table: pa.Table, dates: int) -> int:
    """Locations of a location-sorted batch with at least ``dates`` distinct seasons."""
    season = table["season"].to_numpy()
    return sum(1 for a, b in location_runs(table) if len(np.unique(season[a:b])) >= dates)


class LocationReader:
    """``map_batches`` callable over location-sorted index rows: one SeCo sample per location.

    Output columns: ``images`` float32 (N, T, C, H, W), ``valid`` bool (N, T, H, W),
    ``timestamps`` float64 (N, T), ``location_id`` (N,). Dates are drawn per location as
    :func:`earthloop.stream.reader.read_location` draws them: freshly every epoch when ``seed`` is
    None, else reproducibly per location.
    """

    def __init__(
        self, bands: Sequence[str] | None, dates: int, seed: int | None, cachemax_mb: int
    ) -> None:
        self.bands = list(bands) if bands else None
        self.dates, self.seed, self.cachemax_mb = dates, seed, cachemax_mb

    def _rng(self, location_id: str) -> np.random.Generator:
        if self.seed is None:
            return np.random.default_rng()
        return np.random.default_rng([self.seed, int(location_id[:8], 16)])

    def __call__(self, table: pa.Table) -> Iterator[Columns]:
        samples: list[dict[str, Any]] = []
        size = 0
        season = table["season"].to_numpy()
        for a, b in location_runs(table):
            if len(np.unique(season[a:b])) < self.dates:
                continue  # not a sample: not counted in the stream's size either
            rows = table.slice(a, b - a).to_pylist()
            for r in rows:
                r["datetime"] = r["datetime"].timestamp()
            s = read_location(
                rows,
                self.bands,
                self.dates,
                rng=self._rng(rows[0]["location_id"]),
                cachemax_mb=self.cachemax_mb,
            )
            count_chips(0 if s is None else self.dates)
            if s is None:
                continue
            samples.append(s)
            size += s["images"].nbytes
            if size >= OUT_BYTES:
                yield _stack(samples)
                samples, size = [], 0
        if samples:
            yield _stack(samples)


def _stack(samples: Sequence[dict[str, Any]]) -> Columns:
    return {
        "location_id": np.asarray([s["location_id"] for s in samples], dtype=object),
        "images": np.stack([s["images"] for s in samples]),
        "valid": np.stack([s["valid"] for s in samples]),
        "timestamps": np.stack([s["timestamps"] for s in samples]),
    }


def count_chips(ok: int) -> None:
    """Export the delivered-chip count; metrics must never break reading."""
    try:
        StreamMetrics().chips_delivered(ok)
    except Exception as exc:  # a metrics backend failure must not stop the data
        _warn_once("chip metrics not exported", exc)


def internal_tile(href: str) -> int:
    """Block size of the COG: a read group is one internal tile, so no tile is decoded twice."""
    from earthloop.raster.read import cached_raster

    try:
        return int(cached_raster(href).block_shapes[0][0])
    except Exception as exc:  # the read itself reports the broken file, counted, per chip
        _warn_once(f"cannot read the block size of {href}; grouping by 1024 px", exc)
        return 1024


_warned: set[str] = set()


def _warn_once(what: str, exc: BaseException) -> None:
    """Log a recoverable problem once per process, not once per chip."""
    if what not in _warned:
        _warned.add(what)
        log.warning("%s: %s: %s", what, type(exc).__name__, exc)
