"""An ingest that cannot commit its chips still records its run, with the loss counted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from earthloop.config import load_config
from earthloop.ingest.pipeline import run_ingest
from earthloop.store import delta
from earthloop.store.delta import read_table


@pytest.fixture
def losing_overrides(
    synthetic_demo: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> list[str]:
    """Config overrides of an ingest whose chip commits always lose to another writer."""
    base = [o for o in synthetic_demo["overrides"] if not str(o).startswith("workdir=")]
    overrides = [*base, f"workdir={tmp_path}"]
    chips_uri = load_config(None, overrides).table_uri("chips")
    real = delta._open_latest

    def always_lose(uri: str) -> DeltaTable:  # another writer commits before every attempt
        dt = real(uri)
        if uri == chips_uri:
            write_deltalake(uri, pa.table({"chip_id": ["x"]}), mode="append", schema_mode="merge")
        return dt

    monkeypatch.setattr(delta, "_open_latest", always_lose)
    monkeypatch.setenv("EARTHLOOP_COMMIT_ATTEMPTS", "2")
    return overrides


def test_ingest_counts_chips_it_could_not_write(losing_overrides: list[str]) -> None:
    cfg = load_config(None, losing_overrides)
    report = run_ingest(cfg)
    assert report.chips > 0 and report.failed == report.chips and report.inserted == 0
    assert "NOT WRITTEN" in report.summary()
    assert any("could not write" in e for e in report.errors)
    runs = read_table(cfg.table_uri("ingest_runs")).to_pylist()
    assert [(r["run_id"], r["chips_failed"], r["chips_inserted"]) for r in runs] == [
        (report.run_id, report.chips, 0)
    ]


def test_ingest_job_exits_non_zero_when_chips_were_not_written(
    losing_overrides: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from earthloop.ingest import entry

    code = entry.main([*losing_overrides, "ray.address=null"])
    err = capsys.readouterr().err
    assert code == 1
    assert "chips could not be committed" in err and "re-run the ingest" in err
