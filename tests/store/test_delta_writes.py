"""Store writes under contention: race-free creation, retried conflicts, counted failures.

Conflicts here are real Delta conflicts, made deterministic: the table handle a write uses is
opened, then another writer commits before the write does (exactly what a concurrent process
does, without relying on timing). Multi-process races are in tests/integration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from concurrent_writers import race, rows_for
from deltalake import DeltaTable, write_deltalake
from earthloop.store import delta
from earthloop.store.delta import (
    RetryPolicy,
    StoreWriteError,
    append_rows,
    merge_rows,
    read_table,
    storage_options,
)

FAST = RetryPolicy(attempts=4, base_s=0.001, max_s=0.01)


def _keys(uri: str) -> list[str]:
    return sorted(read_table(uri, columns=["key"]).column("key").to_pylist())


def _expected(lo: int, hi: int) -> list[str]:
    return [f"k{i:05d}" for i in range(lo, hi)]


def _interfere(monkeypatch: pytest.MonkeyPatch, uri: str, times: int) -> list[int]:
    """The next ``times`` writes to ``uri`` each lose to another writer's commit."""
    real = delta._open_latest
    done = [0]

    def open_then_lose(u: str) -> DeltaTable:
        dt = real(u)
        if u == uri and done[0] < times:
            n = 90000 + done[0]
            write_deltalake(u, rows_for(n, n + 1), mode="append")  # the other writer wins
            done[0] += 1
        return dt

    monkeypatch.setattr(delta, "_open_latest", open_then_lose)
    return done


def test_merge_creates_the_table_then_is_idempotent(tmp_path: Path) -> None:
    uri = str(tmp_path / "t")
    first = merge_rows(uri, rows_for(0, 10), ["key"], retry=FAST)
    assert (first["inserted"], first["updated"]) == (10, 0)
    again = merge_rows(uri, rows_for(5, 15), ["key"], retry=FAST)
    assert (again["inserted"], again["updated"]) == (5, 0)  # same row_hash: no update
    assert _keys(uri) == _expected(0, 15)
    ops = [h["operation"] for h in DeltaTable(uri).history()]
    assert ops.count("CREATE TABLE") == 1 and "WRITE" not in ops  # created empty, then merged


def test_a_conflicting_merge_is_retried_against_the_new_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = str(tmp_path / "t")
    merge_rows(uri, rows_for(0, 5), ["key"], retry=FAST)
    lost = _interfere(monkeypatch, uri, times=2)
    res = merge_rows(uri, rows_for(3, 8), ["key"], retry=FAST)
    assert lost[0] == 2  # two real conflicts, then the third attempt committed
    assert (res["inserted"], res["updated"]) == (3, 0)
    assert _keys(uri) == _expected(0, 8) + ["k90000", "k90001"]
    assert res["version"] == DeltaTable(uri).version()


def test_exhausted_retries_raise_a_counted_project_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = str(tmp_path / "t")
    merge_rows(uri, rows_for(0, 5), ["key"], retry=FAST)
    _interfere(monkeypatch, uri, times=100)
    with pytest.raises(StoreWriteError) as info:
        merge_rows(uri, rows_for(10, 17), ["key"], retry=FAST)
    err = info.value
    assert (err.uri, err.rows, err.attempts) == (uri, 7, 4)
    assert "could not write 7 row(s)" in str(err) and uri in str(err)
    assert not set(_expected(10, 17)) & set(_keys(uri))  # nothing half-written


def test_attempts_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = str(tmp_path / "t")
    merge_rows(uri, rows_for(0, 1), ["key"])
    monkeypatch.setenv("EARTHLOOP_COMMIT_ATTEMPTS", "1")
    _interfere(monkeypatch, uri, times=1)
    with pytest.raises(StoreWriteError, match="after 1 attempt"):
        merge_rows(uri, rows_for(1, 2), ["key"])
    monkeypatch.setenv("EARTHLOOP_COMMIT_ATTEMPTS", "zero")
    with pytest.raises(ValueError, match="EARTHLOOP_COMMIT_ATTEMPTS"):
        merge_rows(uri, rows_for(1, 2), ["key"])


def test_append_adds_new_columns_to_an_old_log_table(tmp_path: Path) -> None:
    uri = str(tmp_path / "runs")
    append_rows(uri, pa.table({"run": ["a"]}))
    append_rows(uri, pa.table({"run": ["b"], "failed": pa.array([3], pa.int64())}))
    rows = sorted(read_table(uri).to_pylist(), key=lambda r: r["run"])
    assert rows == [{"run": "a", "failed": None}, {"run": "b", "failed": 3}]


def test_storage_options_come_from_the_environment_only(monkeypatch: pytest.MonkeyPatch) -> None:
    assert storage_options("/tmp/x") is None
    for var in ("AWS_SESSION_TOKEN", "AWS_REGION", "AWS_ALLOW_HTTP"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "id-from-env")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-from-env")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    opts = storage_options("s3://b/t")
    assert opts == {
        "aws_access_key_id": "id-from-env",
        "aws_secret_access_key": "secret-from-env",
        "aws_endpoint_url": "http://127.0.0.1:1",
        "aws_conditional_put": "etag",  # safe concurrent commits; never left out
    }
    monkeypatch.setenv("AWS_ALLOW_HTTP", "true")
    assert (storage_options("s3://b/t") or {})["allow_http"] == "true"


def test_two_processes_creating_and_merging_agree(tmp_path: Path) -> None:
    """A quick real race (the long ones are in tests/integration/test_concurrent_writes.py)."""
    rounds: list[list[dict[str, Any]]] = [
        [{"uri": str(tmp_path / f"t{r}"), "range": [w * 30, w * 30 + 60]} for w in range(2)]
        for r in range(3)
    ]
    results = race(tmp_path / "race", "merge", rounds)
    for r, res in enumerate(results):
        assert all(x["ok"] for x in res), res
        uri = rounds[r][0]["uri"]
        assert _keys(uri) == _expected(0, 90)  # no duplicates, nothing missing
        assert sum(x["inserted"] for x in res) == 90  # each key inserted exactly once
