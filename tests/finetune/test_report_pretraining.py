"""The sweep report says how much pretraining stands behind each ``run:`` initialisation."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
from earthloop.config import load_config
from earthloop.finetune.plan import pretraining_facts
from earthloop.finetune.report import _setup_lines
from earthloop.store.delta import merge_rows, read_table, table_version
from earthloop.store.tables import PRETRAIN_RUNS


def test_facts_name_steps_wall_time_and_places_seen(tiny_data: Any, tmp_path: Path) -> None:
    over = tiny_data.overrides(tmp_path, name="facts")
    cfg = load_config(
        None,
        [*over, "finetune.inits=[{name: random}, {name: seco, run: r1}, {name: x, run: gone}]"],
    )
    chips_uri = cfg.table_uri("chips")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    row: dict[str, Any] = {name: None for name in PRETRAIN_RUNS.schema.names}
    row.update(
        run_name="r1",
        method="seco",
        chips_table=chips_uri,
        chips_table_version=table_version(chips_uri),
        final_step=90,
        config=json.dumps({"stream": {"split": None}}),
        started_at=t0,
        finished_at=t0 + timedelta(minutes=3),
        status="finished",
    )
    merge_rows(
        cfg.table_uri("pretrain_runs"),
        pa.Table.from_pylist([row], schema=PRETRAIN_RUNS.schema),
        list(PRETRAIN_RUNS.keys),
    )
    facts = pretraining_facts(cfg, cfg.finetune)
    chips = read_table(chips_uri)
    assert set(facts) == {"seco"}  # random has no run; a run missing from the table is skipped
    f = facts["seco"]
    assert (f["steps"], f["wall_s"], f["method"]) == (90, 180.0, "seco")
    assert f["chips"] == chips.num_rows  # split None: every chip of the version it read
    assert f["locations"] == len(set(chips["location_id"].to_pylist()))
    text = "\n".join(_setup_lines({"pretraining": facts}, "miou", "segmentation"))
    assert "`seco` = pretraining run `r1` (seco): 90 optimiser steps in 3.0 min" in text
    assert f"on {f['locations']} train-split locations" in text
