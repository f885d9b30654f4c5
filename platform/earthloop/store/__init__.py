"""Delta Lake tables: every durable fact of the loop (chips, runs, trials, embeddings, labels).

Storage knows nothing of training; stages hand it Arrow tables and get versions back, and a run
records those versions so that the exact inputs of any model can be read again later. Writes are
safe with any number of concurrent writers (see :mod:`earthloop.store.delta`).
"""

from earthloop.store.delta import (
    RetryPolicy,
    StoreWriteError,
    TableRef,
    append_rows,
    ensure_table,
    merge_rows,
    read_table,
    storage_options,
    table_exists,
    table_version,
)
from earthloop.store.fs import pyarrow_filesystem

__all__ = [
    "RetryPolicy",
    "StoreWriteError",
    "TableRef",
    "append_rows",
    "ensure_table",
    "merge_rows",
    "pyarrow_filesystem",
    "read_table",
    "storage_options",
    "table_exists",
    "table_version",
]
