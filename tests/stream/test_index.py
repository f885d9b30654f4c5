"""The driver's bounded views of the chip index: a random sample and rows by id (no Ray)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from earthloop.store.delta import merge_rows
from earthloop.stream.index import rows_with_ids, sample_index, snapshot
from index_data import synthetic_table

pytestmark = pytest.mark.shared_data

RKH = "sentinel2-l2a/cogs-29RKH/S2A_29RKH_20200219_0_L2A"


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> str:
    uri = str(tmp_path_factory.mktemp("index") / "chips")
    # written as ingest writes it (MERGE stores strings as string_view: filters must cope)
    merge_rows(uri, synthetic_table(shared_data / RKH, 20_000, val_every=4), ["chip_id"])
    return uri


def _k(rows: list[dict[str, object]]) -> np.ndarray:
    return np.asarray([int(str(r["chip_id"]).split("-")[1]) for r in rows])


def test_sample_is_bounded_filtered_uniform_and_seeded(index: str) -> None:
    ref = snapshot(index)
    rows = sample_index(ref, split="train", max_cloud=0.45, n=1000, seed=3)
    k = _k(rows)
    assert len(rows) == 1000 and len(set(k.tolist())) == 1000
    assert (k % 4 != 0).all()  # val rows filtered out
    assert all(float(str(r["cloud_fraction"])) <= 0.45 for r in rows)
    assert (np.diff(k) > 0).all()  # index order
    # uniform over the whole index, not its first batches: each fifth holds ~a fifth
    counts = np.bincount(k * 5 // 20_000, minlength=5)
    assert counts.min() > 150, counts
    assert isinstance(rows[0]["datetime"], float)
    assert (
        _k(sample_index(ref, split="train", max_cloud=0.45, n=1000, seed=3)).tolist() == k.tolist()
    )
    assert (
        _k(sample_index(ref, split="train", max_cloud=0.45, n=1000, seed=4)).tolist() != k.tolist()
    )


def test_sample_smaller_index_than_asked_returns_all(index: str) -> None:
    rows = sample_index(snapshot(index), split="val", max_cloud=0.05, n=10_000)
    assert sorted(_k(rows).tolist()) == [k for k in range(0, 20_000, 4) if k % 10 == 0]


def test_bad_cloud_fraction_is_named(index: str) -> None:
    with pytest.raises(ValueError, match="max_cloud"):
        sample_index(snapshot(index), split=None, max_cloud=30, n=10)


def test_rows_with_ids_reads_only_those(index: str) -> None:
    ids = ["chip-1", "chip-4", "chip-19999", "chip-123456"]  # chip-4: val; 123456: absent
    rows = rows_with_ids(snapshot(index), ids, split="train", max_cloud=1.0)
    assert sorted(r["chip_id"] for r in rows) == ["chip-1", "chip-19999"]
