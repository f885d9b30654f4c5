"""The table contracts: every table named once, keys inside schemas, writers using them."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from earthloop.config import load_config
from earthloop.ingest.pipeline import run_ingest
from earthloop.store.delta import read_table
from earthloop.store.tables import ALL_TABLES, CHIPS, INGEST_RUNS, TableSpec, table_uri


def test_names_are_unique_and_keys_are_columns() -> None:
    names = [t.name for t in ALL_TABLES]
    assert len(names) == len(set(names))
    for t in ALL_TABLES:
        assert set(t.key) <= set(t.schema.names), t.name


def test_a_key_outside_the_schema_is_refused() -> None:
    with pytest.raises(ValueError, match=r"key columns \['nope'\]"):
        TableSpec("x", ("nope",), pa.schema([("a", pa.string())]), "test")


def test_uri_is_under_the_workdir() -> None:
    assert table_uri("s3://b/run/", CHIPS) == "s3://b/run/tables/chips"
    cfg = load_config(None, ["workdir=s3://bucket/demo"])
    assert cfg.table_uri(INGEST_RUNS) == "s3://bucket/demo/tables/ingest_runs"
    assert cfg.table_uri("chips") == cfg.table_uri(CHIPS)


def test_ingest_writes_exactly_the_declared_schemas(
    synthetic_demo: dict[str, object], tmp_path: Path
) -> None:
    base = [o for o in synthetic_demo["overrides"] if not str(o).startswith("workdir=")]  # type: ignore[attr-defined]
    cfg = load_config(None, [*base, f"workdir={tmp_path}"])
    run_ingest(cfg)
    for spec in (CHIPS, INGEST_RUNS):
        got = read_table(cfg.table_uri(spec)).schema
        assert got.names == spec.schema.names, spec.name
