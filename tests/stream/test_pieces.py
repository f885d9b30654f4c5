"""The index is written in small files and row groups, and read in pieces, each row once.

Issue 11: a 10 M-row index written as one file took 88.5 s to its first batch, because one read
task decoded it. These tests fail if the writers go back to one huge file or row group, or if the
piece reader loses or repeats a row. The read tasks run in this process (a ``ReadTask`` is a
plain callable), so no Ray cluster is needed.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, WriterProperties, write_deltalake
from earthloop.store.delta import INDEX_LAYOUT, merge_rows, table_version
from earthloop.stream.index import arrow_filter, snapshot
from earthloop.stream.pieces import DeltaPiecesDatasource, file_pieces, row_groups_starting_in
from index_data import synthetic_index, synthetic_table

pytestmark = pytest.mark.shared_data

RKH = "sentinel2-l2a/cogs-29RKH/S2A_29RKH_20200219_0_L2A"


def _row_groups(uri: str) -> list[list[int]]:
    """Rows per row group, file by file, of the table's current snapshot."""
    out = []
    for f in DeltaTable(uri).file_uris():
        meta = pq.ParquetFile(f).metadata
        out.append([meta.row_group(i).num_rows for i in range(meta.num_row_groups)])
    return out


def _run(source: DeltaPiecesDatasource, parallelism: int = -1) -> list[list[str]]:
    """The chip ids each read task yields, task by task, read here rather than in Ray."""
    out = []
    for task in source.get_read_tasks(parallelism):
        out.append([c for block in task() for c in block["chip_id"].to_pylist()])
    return out


def _expected(uri: str, split: str | None, max_cloud: float) -> list[str]:
    dt = DeltaTable(uri)
    table = dt.to_pyarrow_dataset().to_table(
        columns=["chip_id"], filter=arrow_filter(split, max_cloud)
    )
    return [str(c) for c in table["chip_id"].to_pylist()]


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> str:
    uri = tmp_path_factory.mktemp("pieces") / "chips"
    return synthetic_index(uri, shared_data / RKH, 300_000, val_every=10)


def test_the_index_is_written_in_bounded_row_groups(index: str) -> None:
    groups = _row_groups(index)
    sizes = [n for f in groups for n in f]
    assert sum(sizes) == 300_000
    assert max(sizes) <= INDEX_LAYOUT.row_group_rows, groups
    assert len(sizes) >= 300_000 // INDEX_LAYOUT.row_group_rows, groups
    config = DeltaTable(index).metadata().configuration
    assert config.get("delta.targetFileSize") == str(INDEX_LAYOUT.target_file_bytes)


def test_the_index_read_starts_on_many_pieces_and_reads_each_row_once(index: str) -> None:
    ref = snapshot(index)
    source = DeltaPiecesDatasource(ref, ("chip_id", "split"), arrow_filter("train", 0.55))
    per_task = _run(source)
    assert sum(1 for ids in per_task if ids) >= 4, [len(t) for t in per_task]
    assert max(len(ids) for ids in per_task) <= INDEX_LAYOUT.row_group_rows
    got = [c for ids in per_task for c in ids]
    assert got == _expected(index, "train", 0.55)  # every row once, in the snapshot's order
    ks = [int(c.split("-")[1]) for c in got]
    assert all(k % 10 != 0 and k % 10 <= 5 for k in ks)  # val and clouds > 0.55 left out
    # fewer tasks than pieces (Ray's choice): neighbours are joined, nothing lost or repeated
    assert [c for ids in _run(source, parallelism=2) for c in ids] == got


def test_a_filter_that_keeps_nothing_yields_no_rows(index: str) -> None:
    source = DeltaPiecesDatasource(snapshot(index), ("chip_id",), arrow_filter("nope", 1.0))
    assert _run(source) and all(ids == [] for ids in _run(source))


def test_an_index_of_large_row_groups_is_still_read_exactly_once(
    tmp_path: Path, shared_data: Path
) -> None:
    """An index written before the layout (one file, row groups that do not line up with the
    pieces): each row group goes to the one piece its first row falls in."""
    uri = str(tmp_path / "old")
    table = synthetic_table(shared_data / RKH, 150_001)
    write_deltalake(uri, table, writer_properties=WriterProperties(max_row_group_size=50_000))
    assert _row_groups(uri) == [[50_000, 50_000, 50_000, 1]]
    source = DeltaPiecesDatasource(snapshot(uri), ("chip_id",), None)
    per_task = _run(source)
    assert [len(ids) for ids in per_task] == [100_000, 50_000, 1]  # starts 0, 50 k | 100 k | 150 k
    assert [c for ids in per_task for c in ids] == _expected(uri, None, 1.0)


def test_pieces_cover_a_file_and_row_groups_start_in_one_piece_each() -> None:
    assert file_pieces(None, 100, 65536) == [(0, None, 100)]
    assert file_pieces(65536, 100, 65536) == [(0, None, 100)]
    assert file_pieces(150_000, 90, 65536) == [
        (0, 65536, 30),
        (65536, 131072, 30),
        (131072, None, 30),
    ]
    schema = pa.schema([("x", pa.int64())])
    sink = pa.BufferOutputStream()
    with pq.ParquetWriter(sink, schema) as w:
        for n in (3, 3, 3, 1):
            w.write_table(pa.table({"x": list(range(n))}, schema=schema))
    meta = pq.ParquetFile(pa.BufferReader(sink.getvalue())).metadata  # starts 0, 3, 6, 9
    assert row_groups_starting_in(meta, 0, 4) == [0, 1]
    assert row_groups_starting_in(meta, 4, 8) == [2]
    assert row_groups_starting_in(meta, 8, None) == [3]
    assert row_groups_starting_in(meta, 10, None) == []


def test_ingest_merge_keeps_the_layout_and_an_identical_rerun_changes_nothing(
    tmp_path: Path, shared_data: Path
) -> None:
    uri = str(tmp_path / "chips")
    table = synthetic_table(shared_data / RKH, 200_000, val_every=4)
    first = merge_rows(uri, table, ["chip_id"], layout=INDEX_LAYOUT)
    assert first["inserted"] == 200_000
    sizes = [n for f in _row_groups(uri) for n in f]
    assert sum(sizes) == 200_000 and max(sizes) <= INDEX_LAYOUT.row_group_rows
    version = table_version(uri)
    again = merge_rows(uri, table, ["chip_id"], layout=INDEX_LAYOUT)
    assert (again["inserted"], again["updated"]) == (0, 0)
    assert table_version(uri) == version
