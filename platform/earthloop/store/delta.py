"""Small, idempotent helpers over ``deltalake``.

Re-running a job must be safe, so writes that carry a natural key go through MERGE: unseen keys
are inserted, keys whose content changed are updated (compared by a ``row_hash`` column when the
table has one), and an identical re-run changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

_S3_ENV = {
    "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN": "AWS_SESSION_TOKEN",
    "AWS_REGION": "AWS_REGION",
    "AWS_ENDPOINT_URL": "AWS_ENDPOINT_URL",
}


@dataclass(frozen=True)
class TableRef:
    """A table read at a known version: what a run records to be reproducible."""

    uri: str
    version: int

    def as_dict(self) -> dict[str, Any]:
        return {"uri": self.uri, "version": self.version}


def storage_options(uri: str) -> dict[str, str] | None:
    """Credentials for object stores, taken from the environment only (never from config)."""
    if not uri.startswith(("s3://", "s3a://")):
        return None
    opts = {k.lower(): os.environ[v] for k, v in _S3_ENV.items() if os.environ.get(v)}
    if os.environ.get("AWS_ALLOW_HTTP"):
        opts["allow_http"] = "true"
    opts.setdefault("aws_conditional_put", "etag")
    return opts


def table_exists(uri: str) -> bool:
    return bool(DeltaTable.is_deltatable(uri, storage_options=storage_options(uri)))


def _open(uri: str, version: int | None = None) -> DeltaTable:
    if not table_exists(uri):
        raise FileNotFoundError(f"no Delta table at {uri} (has the stage that writes it run?)")
    return DeltaTable(uri, version=version, storage_options=storage_options(uri))


def table_version(uri: str) -> int:
    return int(_open(uri).version())


def read_table(uri: str, version: int | None = None, columns: list[str] | None = None) -> pa.Table:
    """Read a whole table (optionally at a pinned version); fine for index-sized tables."""
    return _open(uri, version).to_pyarrow_table(columns=columns)


def row_hash(values: dict[str, Any]) -> str:
    """Stable content hash of one row, used to skip no-op updates on re-runs."""
    blob = json.dumps(values, sort_keys=True, default=str).encode()
    return hashlib.sha1(blob).hexdigest()


def _ensure_parent(uri: str) -> None:
    if "://" not in uri:
        Path(uri).parent.mkdir(parents=True, exist_ok=True)


def merge_rows(uri: str, rows: pa.Table, keys: list[str]) -> dict[str, int]:
    """Upsert ``rows`` by ``keys``; creates the table on first use.

    Returns counts (inserted, updated) and the resulting table version.
    """
    if rows.num_rows == 0:
        version = table_version(uri) if table_exists(uri) else -1
        return {"inserted": 0, "updated": 0, "version": version}
    dup = rows.group_by(keys).aggregate([([], "count_all")])
    if dup.num_rows != rows.num_rows:
        raise ValueError(f"merge source has duplicate keys {keys}")
    opts = storage_options(uri)
    if not table_exists(uri):
        _ensure_parent(uri)
        write_deltalake(uri, rows, mode="append", storage_options=opts)
        return {"inserted": rows.num_rows, "updated": 0, "version": table_version(uri)}
    dt = DeltaTable(uri, storage_options=opts)
    predicate = " AND ".join(f"t.{k} = s.{k}" for k in keys)
    merger = dt.merge(rows, predicate=predicate, source_alias="s", target_alias="t")
    if "row_hash" in rows.column_names:
        merger = merger.when_matched_update_all(predicate="t.row_hash != s.row_hash")
    else:
        merger = merger.when_matched_update_all()
    stats = merger.when_not_matched_insert_all().execute()
    return {
        "inserted": int(stats.get("num_target_rows_inserted", 0)),
        "updated": int(stats.get("num_target_rows_updated", 0)),
        "version": table_version(uri),
    }


def append_rows(uri: str, rows: pa.Table) -> int:
    """Append rows (for logs such as run metrics); returns the new version."""
    _ensure_parent(uri)
    write_deltalake(uri, rows, mode="append", storage_options=storage_options(uri))
    return table_version(uri)
