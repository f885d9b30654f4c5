"""The chip index at archive scale: read by Ray tasks, sampled on the driver, never held whole.

A SeCo-scale index is 1–10 M rows; ``to_pylist`` of it on the driver costs minutes and gigabytes
(issue 11: 5.7 GB peak RSS at 1 M rows). Here the pinned Delta snapshot's parquet files are read
by Ray read tasks in pieces of ~64 k rows (:mod:`earthloop.stream.pieces`), with the split and
cloud filters pushed into the parquet scan and only the columns the readers need; the driver
opens the transaction log only.
What the driver does need from the index (normalisation statistics, the kNN probe) comes from
:func:`sample_index`, a bounded random sample taken in one streaming scan.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from deltalake import DeltaTable

from earthloop.store.delta import TableRef, arrow_dataset, storage_options, table_version

Row = dict[str, Any]

#: index columns the chip and SeCo readers use (projection pushed into the parquet scan)
READ_COLUMNS = (
    "chip_id",
    "location_id",
    "item_id",
    "tile",
    "datetime",
    "season",
    "crs",
    "minx",
    "miny",
    "maxx",
    "maxy",
    "col_off",
    "row_off",
    "chip_size",
    "bands",
    "hrefs",
    "scales",
    "offsets",
    "nodata",
    "scl_href",
    "cloud_fraction",
    "shadow_fraction",  # the filter's columns are read too: a filter that is not pushed into
    "split",  # the scan still finds them
)


#: rows per read task of :func:`count_index`
COUNT_PIECE_ROWS = 1 << 20


def snapshot(uri: str, version: int | None = None) -> TableRef:
    """The index version a stream pins (the latest when ``version`` is None)."""
    return TableRef(uri, table_version(uri) if version is None else int(version))


def _check_cloud(max_cloud: float) -> None:
    if not 0.0 <= max_cloud <= 1.0:
        raise ValueError(f"max_cloud must be a fraction in [0, 1], got {max_cloud}")


def _text(name: str) -> pads.Expression:
    """A string column as ``string``: files written by MERGE store ``string_view``, which
    pyarrow's comparison kernels do not match against a ``string`` value."""
    return pads.field(name).cast(pa.string())


def arrow_filter(split: str | None, max_cloud: float) -> pads.Expression:
    """The same filter for a pyarrow dataset scan on the driver."""
    _check_cloud(max_cloud)
    expr = (pads.field("cloud_fraction") + pads.field("shadow_fraction")) <= max_cloud
    if split is not None:
        expr = expr & (_text("split") == pa.scalar(split, pa.string()))
    return expr


def index_dataset(
    ref: TableRef,
    *,
    split: str | None,
    max_cloud: float,
    columns: tuple[str, ...] = READ_COLUMNS,
    blocks: int | None = None,
    rows_per_piece: int | None = None,
) -> Any:
    """A lazy ``ray.data.Dataset`` of the filtered index rows at ``ref``'s version.

    Read in pieces of ~64 k rows (:mod:`earthloop.stream.pieces`: ranges of row groups, one read
    task each), so the first blocks leave after one row group is decoded and every CPU reads at
    once, however few files the index has; the filter and the projection run in the parquet
    scan. Rows keep the snapshot's order (ingest writes it clustered by scene and tile, so the
    chips of one COG tile are neighbours); nothing is read until the dataset executes.
    ``blocks``: how many blocks the read yields (default: Ray Data's choice);
    ``rows_per_piece``: rows per read task (default :data:`~earthloop.stream.pieces.PIECE_ROWS`).
    """
    import ray.data

    from earthloop.stream.pieces import PIECE_ROWS, DeltaPiecesDatasource

    source = DeltaPiecesDatasource(
        ref, columns, arrow_filter(split, max_cloud), rows_per_piece or PIECE_ROWS
    )
    return ray.data.read_datasource(source, override_num_blocks=blocks)


def split_mask(table: pa.Table, split: str | None) -> pa.Array | None:
    """Rows of ``table`` in ``split`` (None: no split test), for a filter inside a read task."""
    if split is None:
        return None
    return pc.equal(table["split"].cast(pa.string()), pa.scalar(split, pa.string()))


def count_index(ref: TableRef, *, split: str | None, max_cloud: float) -> int:
    """Rows passing the filter, counted by read tasks that read only the filter's columns.

    Pieces of 1 M rows: three numeric and short columns decode in a fraction of a second per
    million rows, so smaller pieces would cost more in task overhead than they save.
    """
    ds = index_dataset(
        ref,
        split=split,
        max_cloud=max_cloud,
        columns=("cloud_fraction", "shadow_fraction", "split"),
        rows_per_piece=COUNT_PIECE_ROWS,
    )
    return int(ds.count())


def _scan(ref: TableRef, split: str | None, max_cloud: float, columns: list[str]) -> pads.Scanner:
    dt = DeltaTable(ref.uri, version=ref.version, storage_options=storage_options(ref.uri))
    return arrow_dataset(dt, ref.uri).scanner(
        columns=columns, filter=arrow_filter(split, max_cloud), batch_size=65536
    )


def sample_index(
    ref: TableRef,
    *,
    split: str | None,
    max_cloud: float,
    n: int,
    seed: int = 0,
    columns: tuple[str, ...] = READ_COLUMNS,
) -> list[Row]:
    """A uniform random sample of at most ``n`` filtered index rows, as dicts.

    One streaming scan with a bounded reservoir (each row gets a seeded random key; the ``n``
    smallest keys are kept), so the driver holds ``n`` rows plus one record batch whatever the
    index size. Rows come back in index order with ``datetime`` as POSIX seconds, like
    :func:`earthloop.stream.load_index`'s.
    """
    if n <= 0:
        return []
    rng = np.random.default_rng(seed)
    kept: pa.Table | None = None
    keys = np.empty(0)
    order = np.empty(0, dtype=np.int64)
    seen = 0
    for batch in _scan(ref, split, max_cloud, list(columns)).to_batches():
        if batch.num_rows == 0:
            continue
        table = pa.Table.from_batches([batch])
        cand = table if kept is None else pa.concat_tables([kept, table])
        ck = np.concatenate([keys, rng.random(batch.num_rows)])
        co = np.concatenate([order, np.arange(seen, seen + batch.num_rows)])
        seen += batch.num_rows
        if cand.num_rows > n:
            pick = np.argpartition(ck, n - 1)[:n]
            cand, ck, co = cand.take(pick), ck[pick], co[pick]
        kept, keys, order = cand.combine_chunks(), ck, co
    if kept is None:
        return []
    rows = kept.take(np.argsort(order, kind="stable")).to_pylist()
    if "datetime" in columns:
        for r in rows:
            r["datetime"] = r["datetime"].timestamp()
    return rows


def timestamps(table: pa.Table) -> np.ndarray:
    """The ``datetime`` column as float64 POSIX seconds (what the streams deliver)."""
    micros = pc.cast(table["datetime"], pa.timestamp("us", tz="UTC")).cast(pa.int64())
    return np.asarray(micros.to_numpy(zero_copy_only=False), dtype=np.float64) / 1e6


def rows_with_ids(
    ref: TableRef,
    chip_ids: Iterable[str],
    *,
    split: str | None,
    max_cloud: float,
    columns: tuple[str, ...] = ("chip_id",),
) -> list[Row]:
    """The filtered index rows whose ``chip_id`` is one of ``chip_ids`` (a scan that keeps only
    those rows: the driver holds as many rows as there are ids, not the index)."""
    ids = pa.array(sorted({str(i) for i in chip_ids}), pa.string())
    expr = arrow_filter(split, max_cloud) & _text("chip_id").isin(ids)
    dt = DeltaTable(ref.uri, version=ref.version, storage_options=storage_options(ref.uri))
    return arrow_dataset(dt, ref.uri).to_table(columns=list(columns), filter=expr).to_pylist()
