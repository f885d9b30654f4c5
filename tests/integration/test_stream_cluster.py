"""Ray Data streaming on the real two-node local cluster."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from earthloop.config import load_config
from earthloop.ingest.pipeline import run_ingest
from earthloop.stream import chip_dataset, load_index, plan_groups, read_group, seco_dataset

pytestmark = [pytest.mark.integration, pytest.mark.shared_data]


@pytest.fixture(scope="module")
def real_index(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> str:
    work = tmp_path_factory.mktemp("stream")
    cfg = load_config(
        None,
        [
            f"workdir={work}",
            f"stac.url={shared_data / 'sentinel2-l2a/earth-search-static/catalog.json'}",
            "ingest.datetime=2023-08-01/2023-08-31",
            "ingest.dates_per_location=2",
            "ingest.chip_size=16",
            "ingest.num_locations=12",
            "ingest.max_chip_cloud=0.6",
        ],
    )
    report = run_ingest(cfg)
    assert report.chips >= 10
    return cfg.table_uri("chips")


def test_ray_data_chips_match_direct_reads(ray_cluster: str, real_index: str) -> None:
    from rasterio.enums import Resampling

    ds, ref = chip_dataset(real_index, split=None, resampling="nearest", group_px=64)
    got = {r["chip_id"]: r for r in ds.take_all()}
    rows, _ = load_index(real_index, version=ref.version, split=None)
    assert set(got) == {r["chip_id"] for r in rows}
    for group in plan_groups(rows, 64):
        for direct in read_group(group, resampling=Resampling.nearest):
            np.testing.assert_array_equal(got[direct["chip_id"]]["image"], direct["image"])
            np.testing.assert_array_equal(got[direct["chip_id"]]["valid"], direct["valid"])


def test_two_consumers_on_two_nodes_get_each_chip_once(ray_cluster: str, real_index: str) -> None:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    ds, ref = chip_dataset(real_index, split=None, group_px=64)
    shards = ds.streaming_split(2, equal=False)

    @ray.remote(num_cpus=0)
    class Consumer:
        def consume(self, it) -> tuple[str, list[str]]:  # type: ignore[no-untyped-def]
            ids: list[str] = []
            for batch in it.iter_batches(batch_size=4, batch_format="numpy"):
                assert batch["image"].shape[1:] == (4, 16, 16)
                ids.extend(batch["chip_id"].tolist())
            return ray.get_runtime_context().get_node_id(), ids

    nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]][:2]
    consumers = [
        Consumer.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)).remote()
        for n in nodes
    ]
    results = ray.get(
        [c.consume.remote(s) for c, s in zip(consumers, shards, strict=True)], timeout=300
    )
    assert {node for node, _ in results} == set(nodes)  # really two nodes
    a, b = results[0][1], results[1][1]
    rows, _ = load_index(real_index, version=ref.version, split=None)
    assert len(a) + len(b) == len(rows)  # no loss …
    assert not set(a) & set(b) and len(set(a)) == len(a) and len(set(b)) == len(b)  # … no dupes
    assert set(a) | set(b) == {r["chip_id"] for r in rows}


def test_seco_tuples(ray_cluster: str, real_index: str) -> None:
    ds, _, n_loc = seco_dataset(real_index, split=None, dates=2, seed=0)
    samples = ds.take_all()
    assert 0 < len(samples) <= n_loc
    for s in samples:
        assert s["images"].shape == (2, 4, 16, 16) and s["valid"].shape == (2, 16, 16)
        assert s["timestamps"][0] < s["timestamps"][1]  # two different seasons, in time order


def test_ingest_writes_the_index_clustered_by_scene_and_tile(real_index: str) -> None:
    from earthloop.ingest.pipeline import CLUSTER_PX
    from earthloop.store.delta import read_table

    t = read_table(real_index)
    keys = list(
        zip(
            t["item_id"].to_pylist(),
            [r // CLUSTER_PX for r in t["row_off"].to_pylist()],
            [c // CLUSTER_PX for c in t["col_off"].to_pylist()],
            strict=True,
        )
    )
    runs = [k for i, k in enumerate(keys) if i == 0 or keys[i - 1] != k]
    assert len(runs) == len(set(keys))  # each (scene, tile) is one run: read tasks see it whole


def test_epochs_stream_in_one_pipeline_epoch_after_epoch(ray_cluster: str, real_index: str) -> None:
    ds, ref = chip_dataset(real_index, split=None, group_px=64, epochs=3)
    ds.context.execution_options.preserve_order = True  # as pretraining's data_config sets it
    rows, _ = load_index(real_index, version=ref.version, split=None)
    every = {r["chip_id"] for r in rows}
    ids: list[str] = []
    for batch in ds.iter_batches(batch_size=7, batch_format="numpy"):  # one iteration
        ids.extend(batch["chip_id"].tolist())
    n = len(every)
    assert len(ids) == 3 * n
    for e in range(3):  # epoch-major: each epoch is every chip exactly once
        assert sorted(ids[e * n : (e + 1) * n]) == sorted(every)


def test_a_multi_epoch_stream_runs_only_its_readers(ray_cluster: str, real_index: str) -> None:
    """With several epochs the planned read tasks come from the object store: the readers are
    the pipeline's only operator, so Ray Data's per-operator reservation (one task's CPUs for
    each running operator) cannot hold them to one CPU while a planner or repartition waits."""
    chips, _ = chip_dataset(real_index, split=None, group_px=64, epochs=2, columns=["chip_id"])
    seco, _, _ = seco_dataset(real_index, split=None, dates=2, seed=0, epochs=2)
    for ds, reader in ((chips, "MapBatches(ChipReader)"), (seco, "MapBatches(LocationReader)")):
        assert ds.take_all()
        ops = re.findall(r"^Operator \d+ (\S+?):", ds.stats(), flags=re.M)
        assert ops[-1] == reader
        assert not [op for op in ops if "Repartition" in op or "Planner" in op], ops


def _private_mb() -> float:
    """This process's private resident memory (anonymous + file pages), in MB.

    Shared object-store pages the driver maps to read a batch (RssShmem) belong to the plasma
    store, not to the driver: counting them would measure the batch, not what the driver keeps.
    """
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            fields[name] = value
    return sum(int(fields[k].split()[0]) for k in ("RssAnon", "RssFile")) / 1024


class _PeakMemory:
    """Samples :func:`_private_mb` every 20 ms on a thread; ``peak`` is the largest sample."""

    def __init__(self) -> None:
        import threading

        self.peak = _private_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _private_mb())

    def __enter__(self) -> _PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _private_mb())


def test_a_million_row_index_never_reaches_the_driver(
    ray_cluster: str, shared_data: Path, tmp_path: Path
) -> None:
    """Building the stream over 1 M index rows and taking its first batch leaves the driver's
    peak memory nearly flat (load_index of the same index: ~5.7 GB, issue 11)."""
    import subprocess
    import sys
    import time

    folder = shared_data / "sentinel2-l2a/cogs-29RKH/S2A_29RKH_20200219_0_L2A"
    uri = tmp_path / "chips"
    script = Path(__file__).parents[1] / "stream" / "index_data.py"
    # built in another process: this one's memory must not hold the table we measure against
    subprocess.run(
        [sys.executable, str(script), str(uri), str(folder), "1000000", "10"], check=True
    )
    before = _private_mb()
    t0 = time.perf_counter()
    with _PeakMemory() as mem:
        ds, _ = chip_dataset(str(uri), split="train", max_cloud=0.85)
        batch = next(iter(ds.iter_batches(batch_size=32, batch_format="numpy")))
    first_s = time.perf_counter() - t0
    grown = mem.peak - before
    assert batch["image"].shape == (32, 4, 64, 64)
    assert all(int(c.split("-")[1]) % 10 != 0 for c in batch["chip_id"])  # split pushed down
    print(f"1 M-row index: first batch {first_s:.1f} s, driver private RSS peak +{grown:.0f} MB")
    assert grown < 300, f"the driver grew {grown:.0f} MB building a stream over 1 M rows"


def test_split_and_cloud_filters_on_an_ingested_index(ray_cluster: str, real_index: str) -> None:
    """Ingest writes by MERGE (strings stored as string_view): the filters still select."""
    rows, _ = load_index(real_index, split="train", max_cloud=0.3)
    assert 0 < len(rows) < len(load_index(real_index, split=None)[0])
    ds, _ = chip_dataset(real_index, split="train", max_cloud=0.3, group_px=64)
    got = [c for b in ds.iter_batches(batch_format="numpy") for c in b["chip_id"].tolist()]
    assert sorted(got) == sorted(r["chip_id"] for r in rows)


def test_the_stream_carries_only_the_columns_asked_for(ray_cluster: str, real_index: str) -> None:
    """``columns`` is applied by the readers: the same pixels, no projection operator after them."""
    full, _ = chip_dataset(real_index, split=None, group_px=64)
    ds, _ = chip_dataset(real_index, split=None, group_px=64, columns=["chip_id", "image"])
    rows = ds.take_all()
    assert rows and all(set(r) == {"chip_id", "image"} for r in rows)
    want = {r["chip_id"]: r["image"] for r in full.take_all()}
    assert len(rows) == len(want)
    for r in rows:
        np.testing.assert_array_equal(r["image"], want[r["chip_id"]])
    assert "Project" not in ds.stats()
    with pytest.raises(ValueError, match=r"\['label'\] unknown"):
        chip_dataset(real_index, split=None, columns=["image", "label"])  # no label rasters
