"""Small, idempotent, concurrency-safe helpers over ``deltalake``.

Re-running a job must be safe, so writes that carry a natural key go through MERGE: unseen keys
are inserted, keys whose content changed are updated (compared by a ``row_hash`` column when the
table has one), and an identical re-run changes nothing.

Many writers share these tables (two ingests, a label sync and a sweep at once is normal on a
cluster), and Delta's concurrency is optimistic: a commit that lost the race for the next log
version fails instead of waiting. So every writer here

* creates a missing table *empty* first (a lost creation race is fine: the table exists) and then
  always MERGEs, so no two writers can both "insert" the same key into a new table;
* retries a conflicting commit with exponential backoff and full jitter, re-evaluating the MERGE
  against the new snapshot each time (rows another writer inserted meanwhile are matched, not
  inserted twice);
* raises :class:`StoreWriteError` (how many rows, which table, how many attempts) when the
  attempts are spent, so that a caller counts what could not be written instead of dying with a
  library traceback.

A writer that loses a race leaves the parquet files it wrote but never committed in the table
folder. Readers never see them (only the log decides what a table holds); ``vacuum`` removes them
once they are older than the retention period. Never vacuum with a short retention while other
writers may be running: it deletes the files of their commits in flight. See docs/storage.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
from deltalake import DeltaTable, WriterProperties, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError

from earthloop.errors import EarthloopError
from earthloop.store.fs import pyarrow_filesystem

log = logging.getLogger("earthloop.store")

# Environment variable → object_store option. Credentials and the endpoint come from here only,
# never from a config file (configs are committed, printed and stored with runs).
_S3_ENV = {
    "AWS_ACCESS_KEY_ID": "aws_access_key_id",
    "AWS_SECRET_ACCESS_KEY": "aws_secret_access_key",
    "AWS_SESSION_TOKEN": "aws_session_token",
    "AWS_REGION": "aws_region",
    "AWS_ENDPOINT_URL": "aws_endpoint_url",
}
_TRUE = {"1", "true", "yes"}

T = TypeVar("T")


class StoreWriteError(EarthloopError, RuntimeError):
    """Rows that could not be committed: the table kept conflicting after every attempt.

    The rows are simply not in the table (a failed commit changes nothing a reader sees); the
    caller decides whether to record the loss and go on (an ingest does) or to stop.
    """

    def __init__(self, uri: str, rows: int, attempts: int, cause: Exception) -> None:
        self.uri, self.rows, self.attempts, self.cause = uri, rows, attempts, cause
        first_line = str(cause).strip().splitlines()[0] if str(cause).strip() else repr(cause)
        super().__init__(
            f"could not write {rows} row(s) to {uri}: the commit still conflicted with other "
            f"writers after {attempts} attempt(s) ({type(cause).__name__}: {first_line})"
        )


@dataclass(frozen=True)
class RetryPolicy:
    """How long a writer keeps trying against concurrent commits.

    Defaults: 10 attempts with full-jitter backoff from 50 ms doubling to at most 2 s, about
    8 s of waiting in the worst case; enough for a handful of writers committing at once.
    ``EARTHLOOP_COMMIT_ATTEMPTS`` overrides the attempt count for a whole process.
    """

    attempts: int = 10
    base_s: float = 0.05
    max_s: float = 2.0

    def delay(self, attempt: int) -> float:
        """Full jitter: writers that collided once must not collide again in lockstep."""
        return random.uniform(0.0, min(self.max_s, self.base_s * 2**attempt))


def default_retry() -> RetryPolicy:
    raw = os.environ.get("EARTHLOOP_COMMIT_ATTEMPTS")
    if raw is None:
        return RetryPolicy()
    try:
        attempts = int(raw)
    except ValueError:
        raise ValueError(f"EARTHLOOP_COMMIT_ATTEMPTS must be an integer, got {raw!r}") from None
    if attempts < 1:
        raise ValueError(f"EARTHLOOP_COMMIT_ATTEMPTS must be at least 1, got {attempts}")
    return RetryPolicy(attempts=attempts)


@dataclass(frozen=True)
class TableRef:
    """A table read at a known version: what a run records to be reproducible."""

    uri: str
    version: int

    def as_dict(self) -> dict[str, Any]:
        return {"uri": self.uri, "version": self.version}


def storage_options(uri: str) -> dict[str, str] | None:
    """Object-store options for ``uri``, taken from the environment only (never from config).

    On S3 every commit is a conditional put of the next log file (``aws_conditional_put=etag``,
    i.e. ``If-None-Match: *``): the store itself refuses a second writer of the same version,
    which is what makes concurrent commits safe without a lock service. AWS S3 and MinIO honour
    it; deltalake 1.x no longer ships the DynamoDB lock, so there is no other safe mode. The
    returned mapping holds secrets: pass it to the library, never log it.
    """
    if not uri.startswith(("s3://", "s3a://")):
        return None
    opts = {opt: os.environ[env] for env, opt in _S3_ENV.items() if os.environ.get(env)}
    if os.environ.get("AWS_ALLOW_HTTP", "").lower() in _TRUE:
        opts["allow_http"] = "true"
    opts["aws_conditional_put"] = "etag"
    return opts


@dataclass(frozen=True)
class FileLayout:
    """How a writer cuts a table into parquet files and row groups.

    A table that Ray tasks read (the chip index: 1–10 M rows) is read one slice of a file per
    task (:mod:`earthloop.stream.index`), so its files and row groups must stay small: one Delta
    write of 10 M rows otherwise makes one ~120 MB file of 1 M-row row groups, which a single
    task decodes while the rest of the cluster waits (issue 11: 88.5 s to the first batch).
    ``row_group_rows`` bounds the smallest piece a reader can start on, ``target_file_bytes``
    (also stored as the table property ``delta.targetFileSize``, so every later MERGE and
    OPTIMIZE by any writer keeps to it) how many pieces a file holds. Compression stays
    delta-rs's default, Snappy (a ``WriterProperties`` without one writes uncompressed).
    """

    row_group_rows: int = 65536
    target_file_bytes: int = 8 * 2**20

    def writer_properties(self) -> WriterProperties:
        return WriterProperties(max_row_group_size=self.row_group_rows, compression="SNAPPY")

    def configuration(self) -> dict[str, str | None]:
        return {"delta.targetFileSize": str(self.target_file_bytes)}


#: the chip index's layout: 64 k-row row groups (one index block of the streams), ~8 MB files
INDEX_LAYOUT = FileLayout()


def table_exists(uri: str) -> bool:
    return bool(DeltaTable.is_deltatable(uri, storage_options=storage_options(uri)))


def _open(uri: str, version: int | None = None) -> DeltaTable:
    if not table_exists(uri):
        raise FileNotFoundError(f"no Delta table at {uri} (has the stage that writes it run?)")
    return DeltaTable(uri, version=version, storage_options=storage_options(uri))


def _open_latest(uri: str) -> DeltaTable:
    """The newest snapshot; opened afresh on every attempt so a retry sees the winners' rows."""
    return DeltaTable(uri, storage_options=storage_options(uri))


def table_version(uri: str) -> int:
    return int(_open(uri).version())


def arrow_dataset(table: DeltaTable, uri: str) -> pads.FileSystemDataset:
    """``table``'s snapshot as a pyarrow dataset that reads through pyarrow's own filesystem.

    deltalake's default reads every file through a Python ``PyFileSystem`` callback; pyarrow's
    I/O threads then call into Python, and a process that exits soon after a read aborted with
    "terminate called without an active exception" (SIGABRT) about one run in two: a job that
    had finished its work reported failure to ``ray job submit``. pyarrow's native local and S3
    filesystems (configured like every other earthloop reader, :func:`pyarrow_filesystem`) have
    no such callback, and are faster too.
    """
    fs, root = pyarrow_filesystem(uri)
    return table.to_pyarrow_dataset(filesystem=pafs.SubTreeFileSystem(root, fs))


def read_table(uri: str, version: int | None = None, columns: list[str] | None = None) -> pa.Table:
    """Read a whole table (optionally at a pinned version); fine for index-sized tables."""
    return arrow_dataset(_open(uri, version), uri).to_table(columns=columns)


def row_hash(values: dict[str, Any]) -> str:
    """Stable content hash of one row, used to skip no-op updates on re-runs."""
    blob = json.dumps(values, sort_keys=True, default=str).encode()
    return hashlib.sha1(blob).hexdigest()


def _ensure_parent(uri: str) -> None:
    if "://" not in uri:
        Path(uri).parent.mkdir(parents=True, exist_ok=True)


def ensure_table(uri: str, schema: pa.Schema, layout: FileLayout | None = None) -> None:
    """Create an empty table with ``schema`` unless one exists; safe against concurrent creators.

    Creating empty and then merging is what keeps a new table free of duplicates: appending the
    first batch instead lets two writers that both saw "no table" both append (issue 8). A
    ``layout`` is stored with a new table, so that every writer's files keep to it.
    """
    if table_exists(uri):
        return
    _ensure_parent(uri)
    try:
        DeltaTable.create(
            uri,
            schema,
            mode="ignore",
            configuration=layout.configuration() if layout else None,
            storage_options=storage_options(uri),
        )
    except DeltaError:
        if not table_exists(uri):  # anything but "someone else created it first" is real
            raise
        log.debug("lost the race to create %s; another writer created it", uri)


def _with_retries(uri: str, rows: int, retry: RetryPolicy | None, write: Callable[[], T]) -> T:
    policy = retry or default_retry()
    for attempt in range(policy.attempts):
        try:
            return write()
        except CommitFailedError as exc:
            if attempt + 1 >= policy.attempts:
                raise StoreWriteError(uri, rows, policy.attempts, exc) from exc
            pause = policy.delay(attempt)
            log.info(
                "commit to %s conflicted with another writer (attempt %d/%d); retrying in %.2fs",
                uri,
                attempt + 1,
                policy.attempts,
                pause,
            )
            time.sleep(pause)
    raise AssertionError("unreachable: RetryPolicy.attempts must be at least 1")


def merge_rows(
    uri: str,
    rows: pa.Table,
    keys: list[str],
    *,
    retry: RetryPolicy | None = None,
    layout: FileLayout | None = None,
) -> dict[str, int]:
    """Upsert ``rows`` by ``keys``; creates the table on first use; safe under concurrency.

    With ``layout`` the files this MERGE writes keep its row-group and file-size bounds (the
    chip index passes :data:`INDEX_LAYOUT`). Returns counts (inserted, updated) and the version
    this write committed. Raises :class:`StoreWriteError` when the commit still conflicts after
    ``retry.attempts``.
    """
    if rows.num_rows == 0:
        version = table_version(uri) if table_exists(uri) else -1
        return {"inserted": 0, "updated": 0, "version": version}
    dup = rows.group_by(keys).aggregate([([], "count_all")])
    if dup.num_rows != rows.num_rows:
        raise ValueError(f"merge source has duplicate keys {keys}")
    ensure_table(uri, rows.schema, layout)
    predicate = " AND ".join(f"t.{k} = s.{k}" for k in keys)
    props = layout.writer_properties() if layout else None

    def attempt() -> dict[str, int]:
        dt = _open_latest(uri)
        merger = dt.merge(
            rows, predicate=predicate, source_alias="s", target_alias="t", writer_properties=props
        )
        if "row_hash" in rows.column_names:
            merger = merger.when_matched_update_all(predicate="t.row_hash != s.row_hash")
        else:
            merger = merger.when_matched_update_all()
        stats = merger.when_not_matched_insert_all().execute()
        return {
            "inserted": int(stats.get("num_target_rows_inserted", 0)),
            "updated": int(stats.get("num_target_rows_updated", 0)),
            "version": int(dt.version()),
        }

    return _with_retries(uri, rows.num_rows, retry, attempt)


def overwrite_table(
    uri: str, data: pa.Table | pa.RecordBatchReader, *, layout: FileLayout | None = None
) -> int:
    """Write ``data`` as the whole table at ``uri`` in one commit (a bulk load: no key, no
    MERGE); returns the version written.

    For loads that own the table outright (a rebuilt or synthetic index); concurrent writers
    must use :func:`merge_rows`. ``data`` may be a stream of record batches, so a load larger
    than memory is written batch by batch; ``layout`` cuts it into files and row groups as
    :func:`merge_rows` would.
    """
    _ensure_parent(uri)
    if layout is None:
        write_deltalake(uri, data, mode="overwrite", storage_options=storage_options(uri))
    else:
        write_deltalake(
            uri,
            data,
            mode="overwrite",
            target_file_size=layout.target_file_bytes,
            writer_properties=layout.writer_properties(),
            configuration=layout.configuration(),
            storage_options=storage_options(uri),
        )
    return table_version(uri)


def delete_keys(uri: str, keys: pa.Table, *, retry: RetryPolicy | None = None) -> dict[str, int]:
    """Delete the rows whose key columns match a row of ``keys``; safe under concurrency.

    A MERGE with only a delete clause, retried like :func:`merge_rows`: a plain SQL predicate
    would have to spell every key into a string, and a concurrent writer's rows are re-read.
    Returns the rows deleted and the version committed (unchanged when nothing matched).
    """
    if keys.num_rows == 0 or not table_exists(uri):
        return {"deleted": 0, "version": table_version(uri) if table_exists(uri) else -1}
    predicate = " AND ".join(f"t.{k} = s.{k}" for k in keys.column_names)

    def attempt() -> dict[str, int]:
        dt = _open_latest(uri)
        merger = dt.merge(keys, predicate=predicate, source_alias="s", target_alias="t")
        stats = merger.when_matched_delete().execute()
        return {
            "deleted": int(stats.get("num_target_rows_deleted", 0)),
            "version": int(dt.version()),
        }

    return _with_retries(uri, keys.num_rows, retry, attempt)


def append_rows(uri: str, rows: pa.Table, *, retry: RetryPolicy | None = None) -> int:
    """Append rows (logs such as run records); returns a version that contains them.

    New columns are added to the table (``schema_mode="merge"``), so a log table written by an
    older release keeps accepting rows. Raises :class:`StoreWriteError` like :func:`merge_rows`.
    """
    ensure_table(uri, rows.schema)

    def attempt() -> int:
        dt = _open_latest(uri)
        write_deltalake(dt, rows, mode="append", schema_mode="merge")
        return int(dt.version())

    return _with_retries(uri, rows.num_rows, retry, attempt)
