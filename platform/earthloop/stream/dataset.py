"""Ray Data sources over the chip index: chips for pixel/scene models, date tuples for SeCo.

The index (a Delta table, read at a pinned version) is read, filtered and planned by Ray tasks
(:mod:`earthloop.stream.index`); the pixels are read lazily by Ray tasks in read groups and
leave them as columnar batches (:mod:`earthloop.stream.batches`), so a training job streams an
arbitrarily large data set with bounded memory, and the driver holds neither the index nor the
chips. :func:`load_index` remains for small driver-side users (labelling, fine-tuning pools).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from earthloop.store.delta import TableRef, read_table, table_version
from earthloop.stream.batches import ChipReader, GroupPlanner, LocationPlanner, LocationReader
from earthloop.stream.index import count_index, index_dataset, snapshot
from earthloop.stream.reader import ID_COLUMNS

log = logging.getLogger("earthloop.stream")


def load_index(
    uri: str,
    *,
    version: int | None = None,
    split: str | None = None,
    max_cloud: float = 1.0,
) -> tuple[list[dict[str, Any]], TableRef]:
    """Read the chip index at a pinned version (the latest when None) and filter it, on the driver.

    For small driver-side users only: it holds every row as a dict (≈6 GB at 1 M rows); the
    streams read the index in Ray tasks instead.
    """
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


#: index rows per read block of the chip stream's planner
INDEX_BLOCK_ROWS = 65536


def _cluster_cpus() -> int:
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def _rows_per_task(n: int, lo: int, hi: int = 4096, tasks_per_cpu: int = 4) -> int:
    """Index rows per read task: about ``tasks_per_cpu`` tasks per cluster CPU, within
    ``[lo, hi]``.

    Few rows per task leave CPUs idle on a small index; many make the first batch slow.
    """
    return max(lo, min(hi, -(-n // (tasks_per_cpu * _cluster_cpus()))))


def _groups_per_task(n_chips: int, chips_per_group: int = 64) -> int:
    """Read groups per read task for ``n_chips``: about four tasks per cluster CPU, 1–64 groups.

    ``chips_per_group`` is a guess (a 512-px COG tile holds 64 chips of 64 px, a 1024-px tile
    16 of 256 px): it only decides how finely the stream is cut, never which chips are read.
    """
    return _rows_per_task(-(-n_chips // chips_per_group), lo=1, hi=64)


#: Ray remote args of a chip read task: a memory hint of a typical read task's peak (its
#: output batch and GDAL's block cache). Given explicitly, it also differs from the planner's
#: args, so Ray Data never fuses the readers into the planner before them: fused, one task
#: would read every chip of an index piece (all of a small index), where the readers should
#: split the planned groups between them.
READER_REMOTE_ARGS: dict[str, Any] = {"memory": 512 * 2**20}


def _checked_columns(
    columns: Sequence[str] | None, labels: bool, keep_errors: bool
) -> tuple[str, ...] | None:
    """``columns`` as the reader's output list; an unknown name fails here, before any read."""
    if columns is None:
        return None
    known = {"image", "valid", "error", *ID_COLUMNS} | ({"label"} if labels else set())
    unknown = [c for c in columns if c not in known]
    if unknown or not columns:
        raise ValueError(
            f"chip stream columns {unknown or '[]'} unknown; choose from {sorted(known)}"
        )
    cols = tuple(dict.fromkeys(columns))
    return cols if not keep_errors or "error" in cols else (*cols, "error")


def _repeat(index: Any, epochs: int) -> Any:
    """``epochs`` passes over a materialised index, epoch after epoch, as one dataset.

    One pipeline serves every epoch, so the reads of epoch e+1 start while epoch e drains and no
    epoch pays a pipeline start (issue 11). The driver holds one block reference per index block
    and epoch, never rows.
    """
    import ray.data

    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    if epochs == 1:
        return index
    return ray.data.from_arrow_refs(index.to_arrow_refs() * epochs)


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
    epochs: int = 1,
    columns: Sequence[str] | None = None,
) -> tuple[Any, TableRef]:
    """A streaming ``ray.data.Dataset`` of chips, ``epochs`` passes over the index in one pipeline.

    Columns: ``image`` float32 (N, C, H, W) per batch, ``valid`` bool (N, H, W), optional
    ``label`` (with ``labels``, tile → label raster), ``error`` and the ids (chip_id,
    location_id, item_id, tile, season, timestamp); only ``columns`` when given. Select columns
    here rather than with ``select_columns`` afterwards: the readers are an operator of their
    own, so a later projection is another operator and another pass of every block through the
    object store. The index is read, filtered and planned in
    Ray tasks (:mod:`earthloop.stream.index`, :mod:`earthloop.stream.batches`); each read task
    groups its rows by scene and internal COG tile (``group_px``; default the COG's block size),
    which ingest's clustered index order keeps together.

    With ``epochs`` > 1 the epochs follow each other when the dataset preserves order (the
    pretraining runner's ``data_config`` does); otherwise they overlap by the blocks in flight.

    Raises:
        ValueError: no chip passes the filters, or ``epochs`` < 1.
    """
    ref = snapshot(uri, version)
    n = count_index(ref, split=split, max_cloud=max_cloud)
    if n == 0:
        raise ValueError(f"no chips in {uri}@v{ref.version} (split={split}, max_cloud={max_cloud})")
    # The index is read in ~64 k-row pieces (earthloop.stream.pieces), planned in the same task
    # and cut into blocks of ``per_task`` groups there: with one epoch Ray Data fuses read,
    # planner and repartition into one operator (same remote args); the chip readers are a
    # second one (never fused: READER_REMOTE_ARGS) that takes whole groups from it, in
    # parallel. With several epochs the cut blocks are materialised once and repeated, so the
    # readers are the only operator of the training pipeline and Ray Data's per-operator
    # reservation (one task's CPU for every running operator) leaves them every CPU. Kept
    # apart (the planner at num_cpus=0.5, as before), read, planner and repartition were three
    # operators competing with the chip readers for the CPU budget: on a 2-CPU cluster the
    # readers got none until the whole 10 M-row index was read (issue 11: 88–135 s to the first
    # batch). The cloud bound is pushed into the scan, the split tested by the planner; a group
    # is cut only where a piece ends.
    per_task = _groups_per_task(n)
    groups: Any = index_dataset(
        ref,
        split=None,
        max_cloud=max_cloud,
        blocks=-(-n // INDEX_BLOCK_ROWS),
    ).map_batches(
        GroupPlanner(group_px, max_chips_per_group, split), batch_format="pyarrow", batch_size=None
    )
    groups = groups.repartition(target_num_rows_per_block=per_task)
    if epochs > 1:
        # in the object store, then repeated: the driver keeps one reference per planned block
        groups = _repeat(groups.materialize(), epochs)
    reader = ChipReader(
        bands,
        cachemax_mb=cachemax_mb,
        resampling=resampling,
        labels=labels,
        keep_errors=keep_errors,
        columns=_checked_columns(columns, labels is not None, keep_errors),
    )
    ds = groups.map_batches(reader, batch_format="pyarrow", batch_size=None, **READER_REMOTE_ARGS)
    log.info(
        "chip stream: %d chips x %d epoch(s) from %s@v%d, %d read groups per task",
        n,
        epochs,
        uri,
        ref.version,
        per_task,
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
    epochs: int = 1,
) -> tuple[Any, TableRef, int]:
    """A streaming dataset of per-location date tuples, ``epochs`` passes in one pipeline.

    Columns: ``images`` float32 (N, T, C, H, W), ``valid`` bool (N, T, H, W), ``timestamps``
    (N, T), ``location_id``. The index is sorted by location in the cluster (a distributed sort
    of the index rows, not of pixels) and materialised in the object store; each read task takes
    whole locations of one sorted block.

    Returns the dataset, the index version read, and the number of locations it covers.

    Raises:
        ValueError: no location has ``dates`` distinct seasons, or ``epochs`` < 1.
    """
    ref = snapshot(uri, version)
    n_rows = count_index(ref, split=split, max_cloud=max_cloud)
    # a sort of index rows (metadata) in as many partitions as 64 k-row blocks, then one row per
    # usable location: a location's dates stay together however the stream is cut afterwards
    locations = (
        index_dataset(ref, split=split, max_cloud=max_cloud)
        .repartition(num_blocks=max(1, -(-n_rows // INDEX_BLOCK_ROWS)))
        .sort("location_id")
        .map_batches(LocationPlanner(dates), batch_format="pyarrow", batch_size=None)
        .materialize()
    )
    n_loc = locations.count()
    if n_loc == 0:
        raise ValueError(
            f"no location in {uri}@v{ref.version} has {dates} distinct seasons "
            f"({n_rows} chips); ingest more dates per location"
        )
    # one task per CPU and epoch, up to 256 locations: a task reads its locations' dates grouped
    # by COG tile, and the more locations it holds the more of them share a tile (demo, one
    # core: 13 locations per task 116/s, 101 per task 321/s); with several epochs in one
    # pipeline the next epoch's tasks keep every CPU busy
    per_task = _rows_per_task(n_loc, lo=1, hi=256, tasks_per_cpu=1 if epochs > 1 else 4)
    # cut into read tasks once, in the object store: repeated, the blocks feed the readers
    # directly, with no repartition operator holding a CPU's reservation beside them
    locations = locations.repartition(target_num_rows_per_block=per_task).materialize()
    ds: Any = _repeat(locations, epochs).map_batches(
        LocationReader(bands, dates, seed, cachemax_mb),
        batch_format="pyarrow",
        batch_size=None,
    )
    return ds, ref, n_loc
