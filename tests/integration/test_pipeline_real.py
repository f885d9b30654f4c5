"""Ingest against a real STAC API (rustac) serving the real Earth Search items and JPEG2000 files."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from earthloop.config import EarthloopConfig, load_config
from earthloop.ingest.pipeline import run_ingest
from earthloop.store.delta import read_table, table_version

pytestmark = [pytest.mark.integration, pytest.mark.shared_data]


def _cfg(tmp_path: Path, url: str, *extra: str) -> EarthloopConfig:
    over = [
        f"workdir={tmp_path / 'work'}",
        f"stac.url={url}",
        "stac.max_retries=2",
        "stac.backoff_s=0.01",
        "ingest.datetime=2023-08-01/2023-08-31",
        "ingest.dates_per_location=2",
        "ingest.chip_size=16",
        "ingest.num_locations=8",
        "ingest.max_chip_cloud=0.5",
        "ingest.workers=2",
        *extra,
    ]
    return load_config(None, over)


def test_real_api_ingest_is_idempotent(tmp_path, real_static_catalog, stac_server, export_catalog):
    url = stac_server(export_catalog(real_static_catalog, tmp_path / "api"))
    cfg = _cfg(tmp_path, url)
    first = run_ingest(cfg)
    assert first.scenes == 10 and first.chips > 0 and first.inserted == first.chips
    assert first.mode == "client"  # rustac's memory backend promises neither filter nor query
    chips = read_table(cfg.table_uri("chips"))
    assert chips.num_rows == first.chips
    assert set(chips.column("bands")[0].as_py()) == {"B02", "B03", "B04", "B08"}
    # every chip has its own SCL verdict below the threshold
    assert (
        max(
            a + b
            for a, b in zip(
                chips.column("cloud_fraction").to_pylist(),
                chips.column("shadow_fraction").to_pylist(),
                strict=True,
            )
        )
        <= 0.5
    )
    version = table_version(cfg.table_uri("chips"))

    again = run_ingest(cfg)
    assert again.inserted == 0 and again.updated == 0
    assert table_version(cfg.table_uri("chips")) == version  # nothing rewritten
    assert read_table(cfg.table_uri("chips")).num_rows == chips.num_rows
    runs = read_table(cfg.table_uri("ingest_runs"))
    assert runs.num_rows == 2 and runs.column("chips_table_version").to_pylist() == [version] * 2


def test_static_catalog_walk_matches_api(
    tmp_path, real_static_catalog, stac_server, export_catalog
):
    url = stac_server(export_catalog(real_static_catalog, tmp_path / "api"))
    via_api = run_ingest(_cfg(tmp_path / "a", url))
    via_walk = run_ingest(_cfg(tmp_path / "b", str(real_static_catalog)))
    assert via_walk.mode == "static"
    ids_a = set(
        read_table(_cfg(tmp_path / "a", url).table_uri("chips")).column("chip_id").to_pylist()
    )
    ids_b = set(
        read_table(_cfg(tmp_path / "b", url).table_uri("chips")).column("chip_id").to_pylist()
    )
    assert via_api.chips == via_walk.chips and ids_a == ids_b


def test_scene_cloud_filter_is_enforced_client_side(
    tmp_path, real_static_catalog, stac_server, export_catalog
):
    url = stac_server(export_catalog(real_static_catalog, tmp_path / "api"))
    report = run_ingest(_cfg(tmp_path, url, "ingest.max_scene_cloud=1"))
    chips = read_table(_cfg(tmp_path, url).table_uri("chips"))
    assert report.scenes < 10
    assert max(chips.column("scene_cloud_cover").to_pylist()) <= 1


def test_bad_inputs_are_reported_and_the_rest_completes(
    tmp_path, real_static_catalog, stac_server, export_catalog
):
    """Missing asset, corrupt file, unreachable COG and wrong CRS: each counted, others ingested."""
    data_copy = tmp_path / "copy"
    shutil.copytree(real_static_catalog.parent, data_copy)
    corrupt_dir = data_copy / "sentinel-2-l2a" / "S2B_33TWM_20230813_0_L2A"
    (corrupt_dir / "B03.tif").write_bytes(b"this is not a JPEG2000 file")

    def mutate(d: dict[str, Any]) -> None:
        if d["id"] == "S2A_33TWL_20230815_0_L2A":
            del d["assets"]["scl"]  # missing asset
        if d["id"] == "S2B_33TWL_20230820_0_L2A":
            d["assets"]["red"]["href"] = "http://127.0.0.1:9/nowhere/B04.tif"  # unreachable
        if d["id"] == "S2A_33TWM_20230818_0_L2A":
            d["properties"].pop("proj:epsg", None)
            d["properties"]["proj:code"] = "EPSG:32634"  # wrong CRS

    url = stac_server(export_catalog(data_copy / "catalog.json", tmp_path / "api", mutate))
    report = run_ingest(_cfg(tmp_path, url))
    assert report.rejected["scene_missing_asset"] == 1
    assert report.rejected["scene_read_error"] == 2  # corrupt + unreachable
    assert report.rejected["scene_crs"] == 1
    assert report.scenes == 6 and report.chips > 0
    assert any("S2B_33TWM_20230813_0_L2A" in e or "B03.tif" in e for e in report.errors)
    item_ids = set(read_table(_cfg(tmp_path, url).table_uri("chips")).column("item_id").to_pylist())
    assert "S2A_33TWL_20230815_0_L2A" not in item_ids


def test_empty_search_is_reported(tmp_path, real_static_catalog, stac_server, export_catalog):
    url = stac_server(export_catalog(real_static_catalog, tmp_path / "api"))
    report = run_ingest(_cfg(tmp_path, url, "ingest.datetime=1999-01-01/1999-12-31"))
    assert report.scenes == 0 and report.chips == 0
    assert any("no scenes" in e for e in report.errors)


def test_server_5xx_is_retried_then_reported(
    tmp_path, real_static_catalog, stac_server, export_catalog, fault_proxy
):
    url = stac_server(export_catalog(real_static_catalog, tmp_path / "api"))
    first_window = "2023-08-01T00:00:00Z"
    proxy = fault_proxy(url, lambda body: str(body.get("datetime", "")).startswith(first_window))
    report = run_ingest(_cfg(tmp_path, proxy.url))
    assert report.rejected["search_error"] == 1
    assert proxy.failed == 3  # one try + stac.max_retries=2 retries
    assert report.scenes == 4 and report.chips > 0  # the second season window still ingested


def test_unreachable_server_is_a_clear_error(tmp_path):
    from earthloop.ingest.stac import SearchError

    with pytest.raises(SearchError, match="cannot open STAC API"):
        run_ingest(_cfg(tmp_path, "http://127.0.0.1:9", "stac.max_retries=0"))
