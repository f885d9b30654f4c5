"""Delta Lake tables: every durable fact of the loop (chips, runs, trials, embeddings, labels).

Storage knows nothing of training; stages hand it Arrow tables and get versions back, and a run
records those versions so that the exact inputs of any model can be read again later.
"""

from earthloop.store.delta import (
    TableRef,
    append_rows,
    merge_rows,
    read_table,
    storage_options,
    table_exists,
    table_version,
)

__all__ = [
    "TableRef",
    "append_rows",
    "merge_rows",
    "read_table",
    "storage_options",
    "table_exists",
    "table_version",
]
