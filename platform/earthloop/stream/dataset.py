"""Ray Data sources over the chip index: chips for pixel/scene models, date tuples for SeCo.

The index (a Delta table, read at a pinned version) is small metadata; the pixels are read lazily
by Ray tasks in read groups (see :mod:`earthloop.stream.reader`), so a training job streams an
arbitrarily large data set with bounded memory and never materialises it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from rasterio.enums import Resampling

from earthloop.observe.recorders import StreamMetrics
from earthloop.store.delta import TableRef, read_table, table_version
from earthloop.stream.reader import plan_groups, read_group, read_location

log = logging.getLogger("earthloop.stream")


def load_index(
    uri: str,
    *,
    version: int | None = None,
    split: str | None = None,
    max_cloud: float = 1.0,
) -> tuple[list[dict[str, Any]], TableRef]:
    """Read the chip index at a pinned version (the latest when None) and filter it."""
    ver = table_version(uri) if version is None else version
    table = read_table(uri, ver)
    if split is not None:
        table = table.filter(pc.equal(table["split"], split))
    mask = pc.less_equal(pc.add(table["cloud_fraction"], table["shadow_fraction"]), max_cloud)
    table = table.filter(mask)
    return _rows(table), TableRef(uri, ver)


def _rows(table: pa.Table) -> list[dict[str, Any]]:
    rows = table.to_pylist()
    for r in rows:
        r["datetime"] = r["datetime"].timestamp()
    return rows


class _ReadChips:
    """Ray Data ``flat_map`` callable: one read group in, its chips out."""

    def __init__(
        self,
        bands: Sequence[str] | None,
        cachemax_mb: int,
        resampling: str,
        labels: dict[str, str] | None = None,
        keep_errors: bool = False,
    ) -> None:
        self.keep_errors = keep_errors
        self.bands = list(bands) if bands else None
        self.cachemax_mb = cachemax_mb
        self.resampling = Resampling[resampling]
        self.labels = labels

    def __call__(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        rows = json.loads(item["group"])
        out = list(
            read_group(
                rows,
                self.bands,
                cachemax_mb=self.cachemax_mb,
                resampling=self.resampling,
                labels=self.labels,
            )
        )
        _count(out)
        # errors are counted above and dropped here: a row-wise Dataset.filter costs a pass
        return out if self.keep_errors else [r for r in out if not r["error"]]


class _ReadLocation:
    """Ray Data ``flat_map`` callable: one location in, one SeCo sample (T dates) out."""

    def __init__(self, bands: Sequence[str] | None, dates: int, seed: int | None, cache: int):
        self.bands = list(bands) if bands else None
        self.dates = dates
        self.seed = seed
        self.cachemax_mb = cache

    def __call__(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        rows = json.loads(item["rows"])
        # seed None: fresh dates every epoch (SeCo's augmentation); else reproducible per location
        if self.seed is None:
            rng = np.random.default_rng()
        else:
            rng = np.random.default_rng([self.seed, int(rows[0]["location_id"][:8], 16)])
        sample = read_location(rows, self.bands, self.dates, rng=rng, cachemax_mb=self.cachemax_mb)
        if sample is None:
            _count([{"error": "too_few_dates"}])
            return []
        _count([{"error": ""}])
        return [sample]


def _count(rows: list[dict[str, Any]]) -> None:
    """Export delivered/failed chip counts; metrics must never break reading."""
    try:
        ok = sum(1 for r in rows if not r.get("error"))
        StreamMetrics().chips_delivered(ok)
    except Exception as exc:  # a metrics backend failure must not stop the data
        _warn_once("chip metrics not exported", exc)


def _internal_tile(href: str) -> int:
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


def _blocks(n: int) -> int:
    return max(1, min(n, 512))


def chip_dataset(
    uri: str,
    *,
    version: int | None = None,
    split: str | None = "train",
    bands: Sequence[str] | None = None,
    max_cloud: float = 1.0,
    group_px: int | None = None,
    max_chips_per_group: int | None = None,
    cachemax_mb: int = 64,
    keep_errors: bool = False,
    resampling: str = "bilinear",
    labels: dict[str, str] | None = None,
) -> tuple[Any, TableRef]:
    """A streaming ``ray.data.Dataset`` of chips with columns image (C,H,W), valid (H,W), ids."""
    import ray.data

    rows, ref = load_index(uri, version=version, split=split, max_cloud=max_cloud)
    if not rows:
        raise ValueError(f"no chips in {uri}@v{ref.version} (split={split}, max_cloud={max_cloud})")
    if group_px is None:
        group_px = _internal_tile(rows[0]["hrefs"][0])
    if max_chips_per_group is None:
        max_chips_per_group = max(1, group_px // int(rows[0]["chip_size"])) ** 2
    groups = plan_groups(rows, group_px, max_chips_per_group)
    items = [{"group": json.dumps(g)} for g in groups]
    ds: Any = ray.data.from_items(items, override_num_blocks=_blocks(len(items)))
    ds = ds.flat_map(_ReadChips(bands, cachemax_mb, resampling, labels, keep_errors))
    log.info(
        "chip stream: %d chips in %d read groups from %s@v%d",
        len(rows),
        len(groups),
        uri,
        ref.version,
    )
    return ds, ref


def seco_dataset(
    uri: str,
    *,
    version: int | None = None,
    split: str | None = "train",
    bands: Sequence[str] | None = None,
    dates: int = 3,
    max_cloud: float = 1.0,
    seed: int | None = None,
    cachemax_mb: int = 64,
) -> tuple[Any, TableRef, int]:
    """A streaming dataset of per-location date tuples: images (T, C, H, W), valid (T, H, W).

    Returns the dataset, the index version read, and the number of locations it covers.
    """
    import ray.data

    rows, ref = load_index(uri, version=version, split=split, max_cloud=max_cloud)
    by_loc: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_loc.setdefault(r["location_id"], []).append(r)
    usable = {k: v for k, v in by_loc.items() if len({r["season"] for r in v}) >= dates}
    if not usable:
        raise ValueError(
            f"no location in {uri}@v{ref.version} has {dates} distinct seasons "
            f"({len(by_loc)} locations); ingest more dates per location"
        )
    items = [{"rows": json.dumps(v)} for _, v in sorted(usable.items())]
    # a few locations per read task: one task per location spends more on scheduling than reading
    ds: Any = ray.data.from_items(items, override_num_blocks=_blocks(-(-len(items) // 4)))
    ds = ds.flat_map(_ReadLocation(bands, dates, seed, cachemax_mb))
    return ds, ref, len(usable)
