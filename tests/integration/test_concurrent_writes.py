"""Many real writer processes against one table, on local disk and on S3 (issue 8 §2, §7).

Every round releases all writers at once (start-file barrier) and then checks the exact row
set: distinct keys == rows == the expected union, and the writers' "inserted" counts add up to
it (a key inserted twice, or lost, fails). The S3 backend is moto's server on loopback with
conditional puts; see docs/storage.md.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from concurrent_writers import race
from earthloop.store.delta import merge_rows, read_table

pytestmark = pytest.mark.integration

ROUNDS = 10
WRITERS = 3
SPAN, STEP = 80, 40  # writer w merges keys [w*STEP, w*STEP+SPAN): neighbours overlap


@pytest.fixture(params=["local", "s3"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "s3":
        return str(request.getfixturevalue("s3_root"))
    return str(tmp_path / "tables")


def _check_round(uri: str, results: list[dict[str, Any]], lo: int, hi: int) -> None:
    assert all(r["ok"] for r in results), results
    keys = read_table(uri, columns=["key"]).column("key").to_pylist()
    expected = {f"k{i:05d}" for i in range(lo, hi)}
    assert len(keys) == len(set(keys)), f"{uri}: {len(keys) - len(set(keys))} duplicate rows"
    assert set(keys) == expected, f"{uri}: missing {sorted(expected - set(keys))[:5]}"


def _merge_rounds(root: str, folder: Path, prefill: Callable[[str], int]) -> None:
    rounds: list[list[dict[str, Any]]] = []
    for r in range(ROUNDS):
        uri = f"{root}/chips-{r}"
        rounds.append([{"uri": uri, "range": [w * STEP, w * STEP + SPAN]} for w in range(WRITERS)])
    already = [prefill(jobs[0]["uri"]) for jobs in rounds]
    results = race(folder, "merge", rounds)
    top = (WRITERS - 1) * STEP + SPAN
    for r, res in enumerate(results):
        _check_round(rounds[r][0]["uri"], res, 0, top)
        assert sum(x["inserted"] for x in res) == top - already[r], res


def test_writers_racing_to_create_a_table(root: str, tmp_path: Path) -> None:
    """The table does not exist: every writer sees "no table"; none may append blindly."""
    _merge_rounds(root, tmp_path / "race", lambda uri: 0)


def test_writers_merging_into_an_existing_table(root: str, tmp_path: Path) -> None:
    def prefill(uri: str) -> int:
        from concurrent_writers import rows_for

        merge_rows(uri, rows_for(0, 20), ["key"])
        return 20

    _merge_rounds(root, tmp_path / "race", prefill)


def test_writers_appending_at_once(root: str, tmp_path: Path) -> None:
    rounds: list[list[dict[str, Any]]] = [
        [{"uri": f"{root}/log-{r}", "range": [w * 100, w * 100 + 25]} for w in range(WRITERS)]
        for r in range(ROUNDS)
    ]
    results = race(tmp_path / "race", "append", rounds)
    for r, res in enumerate(results):
        assert all(x["ok"] for x in res), res
        keys = read_table(rounds[r][0]["uri"], columns=["key"]).column("key").to_pylist()
        expected = {f"k{w * 100 + i:05d}" for w in range(WRITERS) for i in range(25)}
        assert len(keys) == len(expected) and set(keys) == expected


def test_two_ingests_at_once_into_one_workdir(
    root: str, synthetic_demo: dict[str, Any], tmp_path: Path
) -> None:
    """Two full ingests (different seeds) into one chips table: every chip once, both runs kept."""
    base = [o for o in synthetic_demo["overrides"] if not str(o).startswith("workdir=")]
    workdir = f"{root}/work"
    jobs = [
        {"overrides": [*base, f"workdir={workdir}", f"ingest.seed={seed}"]} for seed in (11, 12)
    ]
    results = race(tmp_path / "race", "ingest", [jobs])[0]
    assert all(r["ok"] for r in results), results
    assert all(r["failed"] == 0 for r in results), results
    chips = read_table(f"{workdir}/tables/chips", columns=["chip_id"]).column("chip_id").to_pylist()
    assert len(chips) == len(set(chips)) > 0
    assert sum(r["inserted"] for r in results) == len(chips)  # each chip inserted exactly once
    # the two seeds chose different chips: the union is larger than either run alone
    assert len(chips) > max(r["chips"] for r in results)
    runs = read_table(f"{workdir}/tables/ingest_runs").to_pylist()
    assert sorted(r["run_id"] for r in runs) == sorted(r["run_id"] for r in results)
    by_id = {r["run_id"]: r for r in runs}
    for r in results:
        assert by_id[r["run_id"]]["chips_inserted"] == r["inserted"]
        assert by_id[r["run_id"]]["chips_failed"] == 0
