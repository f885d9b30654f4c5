"""A process that reads a Delta table exits with status 0.

deltalake's default pyarrow dataset reads through a Python filesystem callback; with it about
one process in two aborted on exit (SIGABRT, "terminate called without an active exception")
after its work was done, so ``ray job submit`` and the label sync reported a failure for a job
that had succeeded. Each run here is a fresh interpreter doing what a short job does: write,
merge, read, exit.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CHILD = """
import sys
import pyarrow as pa
from earthloop.store.delta import merge_rows, read_table
uri = sys.argv[1]
rows = pa.table({"k": [f"a{i}" for i in range(50)], "v": list(range(50))})
merge_rows(uri, rows, ["k"])
print(read_table(uri).num_rows, flush=True)
"""

RUNS = 8  # the old reader failed ~1 run in 2; 8 clean exits in a row rule it out (p < 0.01)


def test_a_process_that_read_a_table_exits_cleanly(tmp_path: Path) -> None:
    for i in range(RUNS):
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, str(tmp_path / f"t{i}")],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, f"run {i}: exit {proc.returncode}\n{proc.stderr[-2000:]}"
        assert proc.stdout.strip() == "50"
