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
from earthloop.stream.index import split_mask, timestamps
from earthloop.stream.reader import (
    ChipGroup,
    Row,
    choose_dates,
    plan_groups,
    read_group,
    read_group_arrays,
)

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


#: per-chip index fields a group row carries as lists
CHIP_FIELDS = ("chip_id", "location_id", "season", "timestamp", "minx", "miny", "maxx", "maxy")


def plan_table(
    table: pa.Table, group_px: int | None = None, max_chips: int | None = None
) -> pa.Table:
    """The read groups of a batch of index rows, one row per group (Ray's ``map_batches`` input).

    A group is chips of one scene in one ``group_px`` block (default: each scene's internal COG
    tile), ``max_chips`` at most (default: as many as the block holds); groups are ordered by
    scene and block, chips by row, column and id: the partition of
    :func:`earthloop.stream.reader.plan_groups`, computed on Arrow columns. A group row holds the
    scene's fields once and the chips' fields (:data:`CHIP_FIELDS`) as lists, so a read task
    takes whole groups however Ray Data cuts the stream into blocks.
    """
    n = table.num_rows
    if n == 0:
        return _empty_plan(table)
    items = table["item_id"].to_numpy(zero_copy_only=False)
    row = table["row_off"].to_numpy().astype(np.int64)
    col = table["col_off"].to_numpy().astype(np.int64)
    size = table["chip_size"].to_numpy().astype(np.int64)
    gpx = _block_px(table, items, group_px)
    item_code = _codes(items)
    chip_code = _codes(table["chip_id"].to_numpy(zero_copy_only=False))
    order = np.lexsort((chip_code, col, row, col // gpx, row // gpx, item_code))
    key = np.stack([item_code, row // gpx, col // gpx], axis=1)[order]
    runs = np.flatnonzero(np.r_[True, (key[1:] != key[:-1]).any(axis=1)])
    starts: list[int] = []
    for s, e in zip(runs.tolist(), np.r_[runs[1:], n].tolist(), strict=True):
        first = int(order[s])
        cap = max_chips or max(1, int(gpx[first]) // int(size[first])) ** 2
        starts.extend(range(s, e, cap))
    offsets = pa.array(np.r_[starts, n].astype(np.int32))
    chips = table.take(pa.array(order))
    cols = {f: chips[f].combine_chunks() for f in CHIP_FIELDS if f != "timestamp"}
    cols["timestamp"] = pa.array(timestamps(chips))
    out = chips.select(list(SCENE_FIELDS)).take(pa.array(starts, pa.int64()))
    for f in CHIP_FIELDS:
        out = out.append_column(f, pa.ListArray.from_arrays(offsets, cols[f]))
    return out


def _empty_plan(table: pa.Table) -> pa.Table:
    fields = [table.schema.field(f) for f in SCENE_FIELDS]
    for f in CHIP_FIELDS:
        typ = pa.float64() if f == "timestamp" else table.schema.field(f).type
        fields.append(pa.field(f, pa.list_(typ)))
    return pa.schema(fields).empty_table()


class GroupPlanner:
    """``map_batches`` callable (``batch_format="pyarrow"``): index rows in, group rows out.

    With ``split`` it also drops the rows of other splits, in the same task (see
    :func:`earthloop.stream.index.split_mask`).
    """

    def __init__(
        self, group_px: int | None = None, max_chips: int | None = None, split: str | None = None
    ) -> None:
        self.group_px, self.max_chips, self.split = group_px, max_chips, split

    def __call__(self, table: pa.Table) -> pa.Table:
        mask = split_mask(table, self.split)
        if mask is not None:
            table = table.filter(mask)
        return plan_table(table, self.group_px, self.max_chips)


def groups_of(plan: pa.Table) -> Iterator[ChipGroup]:
    """The :class:`ChipGroup` of each row of a :func:`plan_table` table."""
    if plan.num_rows == 0:
        return
    scenes = plan.select(list(SCENE_FIELDS)).to_pylist()
    offsets = plan["chip_id"].combine_chunks().offsets.to_numpy()
    offsets = offsets - offsets[0]  # a slice of a list array keeps its parent's offsets
    flat = {
        f: plan[f].combine_chunks().flatten().to_numpy(zero_copy_only=False) for f in CHIP_FIELDS
    }
    bounds = np.stack([flat[f].astype(np.float64) for f in ("minx", "miny", "maxx", "maxy")], 1)
    for i, scene in enumerate(scenes):
        a, b = int(offsets[i]), int(offsets[i + 1])
        ids = {
            "chip_id": flat["chip_id"][a:b],
            "location_id": flat["location_id"][a:b],
            "item_id": np.full(b - a, scene["item_id"], dtype=object),
            "tile": np.full(b - a, scene["tile"] or "", dtype=object),
            "season": flat["season"][a:b].astype(np.int64),
            "timestamp": flat["timestamp"][a:b].astype(np.float64),
        }
        yield ChipGroup(scene, bounds[a:b], ids)


def _select(cols: Columns, keep: np.ndarray) -> Columns:
    return {k: v[keep] for k, v in cols.items()}


class ChipReader:
    """``map_batches`` callable (``batch_format="pyarrow"``): group rows in, chip columns out.

    Output columns: ``image`` float32 (N, C, H, W), ``valid`` bool (N, H, W), optional
    ``label`` int64 (N, H, W), ``error`` and the ids of
    :data:`earthloop.stream.reader.ID_COLUMNS`; only ``columns`` when given. Chips of
    unreadable groups are counted and dropped, unless ``keep_errors`` (then they come with
    ``error`` set and zero pixels).
    """

    def __init__(
        self,
        bands: Sequence[str] | None,
        *,
        cachemax_mb: int = 64,
        resampling: str = "bilinear",
        labels: Mapping[str, str] | None = None,
        keep_errors: bool = False,
        columns: Sequence[str] | None = None,
    ) -> None:
        self.bands = list(bands) if bands else None
        self.cachemax_mb = cachemax_mb
        self.resampling = Resampling[resampling]
        self.labels = dict(labels) if labels is not None else None
        self.keep_errors = keep_errors
        self.columns = tuple(columns) if columns is not None else None

    def __call__(self, table: pa.Table) -> Iterator[Columns]:
        chunk: list[ChipGroup] = []
        size = 0
        for group in groups_of(table):
            chunk.append(group)
            size += len(group) * self._chip_bytes(group)
            if size >= OUT_BYTES:
                yield from self._read(chunk)
                chunk, size = [], 0
        if chunk:
            yield from self._read(chunk)

    def _chip_bytes(self, group: ChipGroup) -> int:
        bands = len(self.bands) if self.bands else len(group.scene["bands"])
        return 4 * bands * int(group.scene["chip_size"]) ** 2

    def _read(self, groups: Sequence[ChipGroup]) -> Iterator[Columns]:
        """Read ``groups`` straight into one output batch (one copy per chip, no concatenation);
        groups of another chip size or band count (a mixed index) go to a batch of their own."""
        first = groups[0]
        size = int(first.scene["chip_size"])
        same = [g for g in groups if int(g.scene["chip_size"]) == size]
        n = sum(len(g) for g in same)
        bands = len(self.bands) if self.bands else len(first.scene["bands"])
        image = np.empty((n, bands, size, size), dtype=np.float32)
        valid = np.empty((n, size, size), dtype=bool)
        parts: list[Columns] = []
        at = 0
        for g in same:
            into = {"image": image[at : at + len(g)], "valid": valid[at : at + len(g)]}
            cols = read_group_arrays(
                g,
                self.bands,
                cachemax_mb=self.cachemax_mb,
                resampling=self.resampling,
                labels=self.labels,
                into=into,
            )
            if cols["image"] is not into["image"]:  # an unreadable group: zeros of its own
                into["image"][...] = cols["image"]
                into["valid"][...] = cols["valid"]
            parts.append({k: v for k, v in cols.items() if k not in ("image", "valid")})
            at += len(g)
        out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        out["image"], out["valid"] = image, valid
        ok = out["error"] == ""
        count_chips(int(ok.sum()))
        if not self.keep_errors and not ok.all():
            out = _select(out, ok)
        if len(out["error"]):
            yield out if self.columns is None else {c: out[c] for c in self.columns}
        rest = [g for g in groups if int(g.scene["chip_size"]) != size]
        if rest:
            yield from self._read(rest)


def location_runs(table: pa.Table) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` of each run of equal ``location_id`` in a batch sorted by it."""
    loc = table["location_id"].to_numpy(zero_copy_only=False)
    if len(loc) == 0:
        return
    starts = np.flatnonzero(np.r_[True, loc[1:] != loc[:-1]])
    yield from zip(starts.tolist(), np.r_[starts[1:], len(loc)].tolist(), strict=True)


def plan_locations(table: pa.Table, dates: int) -> pa.Table:
    """One row per usable location of a batch sorted by ``location_id``: ``location_id`` and
    ``dates``, the location's index rows as a list of structs.

    A location is usable with at least ``dates`` distinct seasons. As a row, a location stays
    whole however Ray Data cuts the stream into blocks after this step.
    """
    season = table["season"].to_numpy()
    runs = [(a, b) for a, b in location_runs(table) if len(np.unique(season[a:b])) >= dates]
    starts = [a for a, _ in runs]
    take = np.concatenate([np.arange(a, b) for a, b in runs]) if runs else np.empty(0, np.int64)
    rows = table.take(pa.array(take, pa.int64()))
    lengths = np.asarray([b - a for a, b in runs], dtype=np.int32)
    offsets = pa.array(np.r_[0, np.cumsum(lengths)].astype(np.int32))
    structs = pa.StructArray.from_arrays(
        [rows[c].combine_chunks() for c in rows.column_names], rows.column_names
    )
    loc = table["location_id"].combine_chunks().take(pa.array(starts, pa.int64()))
    return pa.table({"location_id": loc, "dates": pa.ListArray.from_arrays(offsets, structs)})


class LocationPlanner:
    """``map_batches`` callable over location-sorted index rows: usable locations as rows."""

    def __init__(self, dates: int) -> None:
        self.dates = dates

    def __call__(self, table: pa.Table) -> pa.Table:
        return plan_locations(table, self.dates)


class LocationReader:
    """``map_batches`` callable over location rows (:func:`plan_locations`): one SeCo sample each.

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
        chosen: list[tuple[str, list[Row]]] = []
        size = 0
        for loc in table.to_pylist():
            rows = loc["dates"]
            for r in rows:
                r["datetime"] = r["datetime"].timestamp()
            picked = choose_dates(rows, self.dates, self._rng(loc["location_id"]))
            if picked is None:
                continue
            chosen.append((loc["location_id"], picked))
            size += self.dates * self._chip_bytes(picked[0])
            if size >= OUT_BYTES:
                yield from self._read(chosen)
                chosen, size = [], 0
        if chosen:
            yield from self._read(chosen)

    def _chip_bytes(self, row: Row) -> int:
        bands = len(self.bands) if self.bands else len(row["bands"])
        return 4 * bands * int(row["chip_size"]) ** 2

    def _read(self, chosen: Sequence[tuple[str, list[Row]]]) -> Iterator[Columns]:
        """Read every chosen (location, date) chip of the batch grouped by scene and COG tile,
        then put each location's dates back together.

        One location's dates lie in different scenes, so reading location by location decoded
        a whole COG tile per band for every 64-px chip; neighbouring locations share scenes and
        tiles, so grouping the batch's chips reads each tile once (issue 11: the SeCo stream
        could not keep a small trainer fed). A location with an unreadable date is dropped,
        as :func:`earthloop.stream.reader.read_location` drops it.
        """
        slot: dict[int, tuple[int, int]] = {}
        rows: list[Row] = []
        for i, (_, picked) in enumerate(chosen):
            for t, r in enumerate(picked):
                slot[id(r)] = (i, t)
                rows.append(r)
        parts: list[list[Row | None]] = [[None] * self.dates for _ in chosen]
        ok = [True] * len(chosen)
        group_px = internal_tile(str(rows[0]["hrefs"][0]))
        for group in plan_groups(rows, group_px, max_chips=256):
            outs = read_group(group, self.bands, cachemax_mb=self.cachemax_mb)
            for r, out in zip(group, outs, strict=True):
                i, t = slot[id(r)]
                if out["error"]:
                    ok[i] = False
                parts[i][t] = out
        samples = []
        for (location_id, _), dates, good in zip(chosen, parts, ok, strict=True):
            count_chips(self.dates if good else 0)
            if not good:
                continue
            got = [d for d in dates if d is not None]
            samples.append(
                {
                    "location_id": location_id,
                    "images": np.stack([d["image"] for d in got]),
                    "valid": np.stack([d["valid"] for d in got]),
                    "timestamps": np.asarray([d["timestamp"] for d in got], dtype=np.float64),
                }
            )
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
