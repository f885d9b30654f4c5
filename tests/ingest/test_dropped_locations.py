"""Every sampled location ends as chips or as a counted rejection (issue 8 §6): a chip that does
not fit inside the tile used to drop its location without a trace."""

from __future__ import annotations

from pathlib import Path

from earthloop.config import load_config
from earthloop.ingest.pipeline import run_ingest


def test_locations_whose_chip_cannot_fit_are_counted(
    synthetic_demo: dict[str, object], tmp_path: Path
) -> None:
    base = [o for o in synthetic_demo["overrides"] if not str(o).startswith("workdir=")]  # type: ignore[attr-defined]
    # a chip larger than any demo scene fits nowhere: every covered location is a tile-edge drop
    cfg = load_config(None, [*base, f"workdir={tmp_path}", "ingest.chip_size=4096"])
    report = run_ingest(cfg)
    assert report.scenes > 0 and report.locations > 0
    assert report.chips == 0
    assert report.rejected["tile_edge"] + report.rejected["no_scene"] == report.locations
    assert report.rejected["tile_edge"] > 0


def test_normal_ingest_accounts_for_every_location(
    synthetic_demo: dict[str, object], tmp_path: Path
) -> None:
    base = [o for o in synthetic_demo["overrides"] if not str(o).startswith("workdir=")]  # type: ignore[attr-defined]
    cfg = load_config(None, [*base, f"workdir={tmp_path}", "ingest.chip_size=256"])
    report = run_ingest(cfg)
    from earthloop.store.delta import read_table

    chipped = {r["location_id"] for r in read_table(cfg.table_uri("chips")).to_pylist()}
    dropped = report.rejected["tile_edge"] + report.rejected["no_scene"]
    # a location without chips was either dropped (counted) or had every candidate rejected
    # for a counted reason (cloud, nodata, read errors)
    assert len(chipped) + dropped <= report.locations
    if len(chipped) + dropped < report.locations:
        assert sum(report.rejected.values()) - dropped > 0
