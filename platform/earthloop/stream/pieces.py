"""A Ray Data source over a Delta snapshot that reads it in small pieces: row ranges of files.

``ray.data.read_delta`` makes one read task per parquet file, and a task hands its rows on only
when a whole ~128 MB block is decoded: an index written as one 10 M-row file was read by one task
that decoded ≈2.3 M rows before the first block reached the planner (part of issue 11's 88.5 s
to the first batch; the rest was the operators' CPU budget, see ``chip_dataset``). Here every
file is cut into ranges of about ``rows_per_piece`` rows by the row counts the Delta log already
holds, and each range is a read task of its own, so the first blocks leave after one row group
is decoded and all the cluster's CPUs read at once.

A task reads the row groups that *start* in its range (the task opens the file's footer; the
driver never does): every row group starts in exactly one range, so every row is read exactly
once, whatever the row-group sizes. An index written with :data:`earthloop.store.delta.
INDEX_LAYOUT` has one 64 k-row row group per range; an older one with 1 M-row row groups still
reads one row group per task, in parallel, with the other ranges of the file yielding nothing.

The driver holds per file only its path, row count, size and statistics expression (the
``partition_expression`` deltalake builds, which lets pyarrow skip files and row groups that the
filter rules out); never rows.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from deltalake import DeltaTable
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from earthloop.store.delta import TableRef, arrow_dataset, storage_options

#: rows per read task: one row group of the index layout, one planner block of the streams
PIECE_ROWS = 65536
#: rows per record batch a read task decodes at a time
BATCH_ROWS = 16384


@dataclass(frozen=True)
class Piece:
    """Rows ``lo`` (inclusive) to ``hi`` (exclusive; None: to the file's end) of one file, by
    the start of their row groups."""

    path: str
    partition: pads.Expression
    lo: int
    hi: int | None
    size_bytes: int


def file_pieces(
    rows: int | None, size: int, rows_per_piece: int
) -> list[tuple[int, int | None, int]]:
    """``(lo, hi, bytes)`` ranges covering a file of ``rows`` rows (None: unknown, one range).

    The last range is open-ended, so a row group the log's count does not cover is still read.
    """
    if not rows or rows <= rows_per_piece:
        return [(0, None, size)]
    n = -(-rows // rows_per_piece)
    bounds = [i * rows_per_piece for i in range(n)]
    return [(lo, bounds[i + 1] if i + 1 < n else None, size // n) for i, lo in enumerate(bounds)]


def row_groups_starting_in(meta: pq.FileMetaData, lo: int, hi: int | None) -> list[int]:
    """The row groups of a file whose first row lies in ``[lo, hi)``."""
    sizes = np.array([meta.row_group(i).num_rows for i in range(meta.num_row_groups)], np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]) if len(sizes) else sizes
    keep = (starts >= lo) & (starts < hi if hi is not None else True)
    return [int(i) for i in np.flatnonzero(keep)]


def _read(
    fmt: pads.ParquetFileFormat,
    filesystem: Any,
    schema: pa.Schema,
    columns: list[str],
    filter_expr: pads.Expression | None,
    pieces: Sequence[Piece],
) -> Iterator[pa.Table]:
    for piece in pieces:
        fragment = fmt.make_fragment(piece.path, filesystem, piece.partition)
        groups = row_groups_starting_in(fragment.metadata, piece.lo, piece.hi)
        if not groups:
            continue
        part = fragment.subset(row_group_ids=groups)
        for batch in part.to_batches(
            schema=schema, columns=columns, filter=filter_expr, batch_size=BATCH_ROWS
        ):
            if batch.num_rows:
                yield pa.Table.from_batches([batch])


class DeltaPiecesDatasource(Datasource):
    """The rows of ``columns`` of a Delta snapshot that pass ``filter_expr``, in row ranges.

    ``get_read_tasks`` keeps the pieces in file order and joins neighbours only when Ray asks for
    fewer tasks than there are pieces, so the index's clustered order (scene by scene) holds
    within and across tasks.
    """

    def __init__(
        self,
        ref: TableRef,
        columns: Sequence[str],
        filter_expr: pads.Expression | None,
        rows_per_piece: int = PIECE_ROWS,
    ) -> None:
        super().__init__()
        dt = DeltaTable(ref.uri, version=ref.version, storage_options=storage_options(ref.uri))
        dataset = arrow_dataset(dt, ref.uri)  # raises on deletion vectors / column mapping
        adds = pa.table(dt.get_add_actions(flatten=True)).select(
            ["path", "num_records", "size_bytes"]
        )
        counts = dict(zip(adds["path"].to_pylist(), adds["num_records"].to_pylist(), strict=True))
        sizes = dict(zip(adds["path"].to_pylist(), adds["size_bytes"].to_pylist(), strict=True))
        self._format = dataset.format
        self._filesystem = dataset.filesystem
        self._schema = dataset.schema
        self._columns = list(columns)
        self._filter = filter_expr
        self._pieces = [
            Piece(frag.path, frag.partition_expression, lo, hi, size)
            for frag in dataset.get_fragments()
            for lo, hi, size in file_pieces(
                counts.get(frag.path), int(sizes.get(frag.path) or 0), rows_per_piece
            )
        ]

    @property
    def pieces(self) -> list[Piece]:
        return list(self._pieces)

    def get_name(self) -> str:
        return "ReadDeltaPieces"

    def estimate_inmemory_data_size(self) -> int | None:
        """On-disk bytes of the projected share of the columns, times a guessed 4× decoding."""
        share = len(self._columns) / max(1, len(self._schema))
        return int(sum(p.size_bytes for p in self._pieces) * share * 4)

    def get_read_tasks(
        self,
        parallelism: int,
        per_task_row_limit: int | None = None,
        data_context: Any = None,
    ) -> list[ReadTask]:
        n = len(self._pieces) if parallelism <= 0 else max(1, min(parallelism, len(self._pieces)))
        out_schema = pa.schema([self._schema.field(c) for c in self._columns])
        tasks = []
        for chunk in np.array_split(np.arange(len(self._pieces)), n):
            if len(chunk) == 0:
                continue
            pieces = [self._pieces[i] for i in chunk]
            meta = BlockMetadata(
                num_rows=None,
                size_bytes=sum(p.size_bytes for p in pieces),
                input_files=tuple(sorted({p.path for p in pieces})),
                exec_stats=None,
            )
            read = functools.partial(
                _read, self._format, self._filesystem, self._schema, self._columns, self._filter
            )
            tasks.append(
                ReadTask(
                    functools.partial(read, pieces),
                    meta,
                    schema=out_schema,
                    per_task_row_limit=per_task_row_limit,
                )
            )
        return tasks
