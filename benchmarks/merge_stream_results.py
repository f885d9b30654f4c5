"""Merge the JSON files of several ``stream_bench.py`` / ``remote_bench.py`` runs into one.

The throughput cases need different chip counts to reach steady state (20 000 chips of 64 px
stream in seconds, 3000 of 256 px in a minute), so they run as separate commands; the issue's
``docs/results/stream.json`` wants one file with every case. Each run is kept whole under
``runs`` (its command, machine, load and raw timings); ``summary`` holds each case's figures
from the run that measured it.

    .venv/bin/python benchmarks/merge_stream_results.py OUT.json RUN.json [RUN.json ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def merge(paths: list[Path]) -> dict[str, Any]:
    """One document from several runs; a case measured twice keeps the later run's figures."""
    runs = [json.loads(p.read_text()) | {"file": p.name} for p in paths]
    summary: dict[str, Any] = {}
    for run in runs:
        for case, methods in (run.get("summary") or {}).items():
            summary[case] = methods | {"_run": run["file"]}
    extra = {k: v for run in runs for k, v in (run.get("extra") or {}).items()}
    return {"summary": summary, "extra": extra, "runs": runs}


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    out, *inputs = (Path(a) for a in argv[1:])
    out.write_text(json.dumps(merge(list(inputs)), indent=1, sort_keys=False) + "\n")
    print(f"wrote {out} from {len(inputs)} run(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
