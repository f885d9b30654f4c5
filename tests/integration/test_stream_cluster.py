"""Ray Data streaming on the real two-node local cluster."""

from __future__ import annotations

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
