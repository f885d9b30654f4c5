"""Synthetic chip indexes of any size, built column-wise (1 M rows in seconds, no row dicts).

Every row points at the same real COGs (the 29RKH scene), on a grid of ``size``-px windows,
so a stream over it reads real pixels; ids, scenes, seasons and splits vary by row number.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import rasterio
from earthloop.store.delta import INDEX_LAYOUT, overwrite_table
from earthloop.store.tables import CHIPS

BANDS = ("B02", "B03", "B04", "B08")


def _repeat(value: object, typ: pa.DataType, n: int) -> pa.Array:
    return pa.array([value], typ).take(pa.array(np.zeros(n, dtype=np.int64)))


def synthetic_table(
    folder: Path,
    n: int,
    *,
    size: int = 64,
    val_every: int = 0,
    scl: bool = False,
    start: int = 0,
) -> pa.Table:
    """Index rows ``start`` … ``start + n - 1``, clustered as ingest writes them (scene by
    scene, tile by tile).

    Row k: chip ``chip-k``, location k // 2 (two seasons each), scene k // (windows per scene);
    every ``val_every``-th row (when > 0) is in the ``val`` split, the others in ``train``;
    ``cloud_fraction`` is (k mod 10) / 10, so a cloud filter keeps a known share.
    """
    with rasterio.open(folder / f"{BANDS[0]}.tif") as src:
        t, crs, w, h = src.transform, src.crs.to_string(), src.width, src.height
    per_col = w // size
    per_scene = (h // size) * per_col
    k = np.arange(start, start + n, dtype=np.int64)
    cell = k % per_scene
    r, c = (cell // per_col) * size, (cell % per_col) * size
    minx, maxy = t.c + c * t.a, t.f - r * t.a
    ks = pa.array(k).cast(pa.string())
    split = np.where((k % val_every == 0) if val_every else np.zeros(n, bool), "val", "train")
    micros = 1582070400_000000 + (k % 2) * 100 * 86400_000000
    cols = {
        "chip_id": pc.binary_join_element_wise("chip-", ks, ""),
        "location_id": pc.binary_join_element_wise(
            "0000abcd", pa.array(k // 2).cast(pa.string()), ""
        ),
        "item_id": pc.binary_join_element_wise(
            "scene-", pa.array(k // per_scene).cast(pa.string()), ""
        ),
        "tile": _repeat("29RKH", pa.string(), n),
        "grid_key": _repeat("29RKH", pa.string(), n),
        "datetime": pa.array(micros).cast(pa.timestamp("us", tz="UTC")),
        "season": pa.array((k % 2).astype(np.int32)),
        "lon": pa.array(np.zeros(n)),
        "lat": pa.array(np.zeros(n)),
        "crs": _repeat(crs, pa.string(), n),
        "minx": pa.array(minx),
        "miny": pa.array(maxy - size * t.a),
        "maxx": pa.array(minx + size * t.a),
        "maxy": pa.array(maxy),
        "col_off": pa.array(c.astype(np.int32)),
        "row_off": pa.array(r.astype(np.int32)),
        "chip_size": pa.array(np.full(n, size, np.int32)),
        "bands": _repeat(list(BANDS), pa.list_(pa.string()), n),
        "hrefs": _repeat([str(folder / f"{b}.tif") for b in BANDS], pa.list_(pa.string()), n),
        "scales": _repeat([1e-4] * len(BANDS), pa.list_(pa.float64()), n),
        "offsets": _repeat([0.0] * len(BANDS), pa.list_(pa.float64()), n),
        "nodata": pa.array(np.zeros(n)),
        "scl_href": _repeat(str(folder / "SCL.tif") if scl else None, pa.string(), n),
        "cloud_fraction": pa.array((k % 10) / 10.0),
        "shadow_fraction": pa.array(np.zeros(n)),
        "nodata_fraction": pa.array(np.zeros(n)),
        "scene_cloud_cover": pa.array(np.zeros(n)),
        "processing_baseline": _repeat("02.14", pa.string(), n),
        "split": pa.array(split),
        "row_hash": ks,
    }
    return pa.table([cols[f.name].cast(f.type) for f in CHIPS.schema], schema=CHIPS.schema)


def synthetic_index(
    uri: str | Path, folder: Path, n: int, *, size: int = 64, val_every: int = 0, scl: bool = False
) -> str:
    """Write :func:`synthetic_table` as a Delta table at ``uri`` (version 0); returns the URI.

    Streamed in chunks of 1 M rows, so 10 M rows need the memory of one chunk, not of the table.
    Cut into files and row groups as ingest cuts the index (:data:`INDEX_LAYOUT`): a benchmark
    over one huge file would measure a table no ingest writes.
    """
    chunk = 1_000_000

    def batches() -> Iterator[pa.RecordBatch]:
        for a in range(0, n, chunk):
            part = synthetic_table(
                folder, min(chunk, n - a), size=size, val_every=val_every, scl=scl, start=a
            )
            yield from part.to_batches()

    reader = pa.RecordBatchReader.from_batches(CHIPS.schema, batches())
    overwrite_table(str(uri), reader, layout=INDEX_LAYOUT)
    return str(uri)


def main(argv: list[str] | None = None) -> None:
    """``python index_data.py URI FOLDER N [VAL_EVERY]``: write an index from another process,
    so a memory measurement in the caller does not see the table being built."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    val_every = int(args[3]) if len(args) > 3 else 0
    synthetic_index(args[0], Path(args[1]), int(args[2]), val_every=val_every)


if __name__ == "__main__":
    main()
