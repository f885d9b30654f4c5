"""Real concurrent writers for the store tests: separate processes released together.

The parent starts ``writers`` processes once; for each round every worker announces it is
ready, waits for the round's go-file, performs its write and records what the store returned.
Start-up (imports) is paid once, so many rounds stay quick. Run as a script, this module is
the worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

POLL_S = 0.0005


def rows_for(lo: int, hi: int) -> Any:
    """Rows keyed ``k00042``; a key's content (and row_hash) is the same whoever writes it."""
    import pyarrow as pa

    keys = [f"k{i:05d}" for i in range(lo, hi)]
    return pa.table(
        {
            "key": pa.array(keys, pa.string()),
            "value": pa.array(range(lo, hi), pa.int64()),
            "row_hash": pa.array([f"h{i}" for i in range(lo, hi)], pa.string()),
        }
    )


def _do(op: str, job: dict[str, Any]) -> dict[str, Any]:
    if op == "merge":
        from earthloop.store.delta import merge_rows

        res = merge_rows(job["uri"], rows_for(*job["range"]), ["key"])
        return {"inserted": res["inserted"], "updated": res["updated"]}
    if op == "append":
        from earthloop.store.delta import append_rows

        append_rows(job["uri"], rows_for(*job["range"]))
        return {"appended": job["range"][1] - job["range"][0]}
    if op == "ingest":
        from earthloop.config import load_config
        from earthloop.ingest.pipeline import run_ingest

        rep = run_ingest(load_config(None, job["overrides"]))
        return {
            "run_id": rep.run_id,
            "chips": rep.chips,
            "inserted": rep.inserted,
            "updated": rep.updated,
            "failed": rep.failed,
        }
    raise ValueError(f"unknown op {op!r}")


def _touch(path: Path, text: str = "1") -> None:
    """Write-then-rename: a reader never sees a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.rename(path)


def worker(spec_path: str, me: int) -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    spec = json.loads(Path(spec_path).read_text())
    folder = Path(spec["dir"])
    import earthloop.store.delta  # noqa: F401  (imports before the barrier, not inside the race)

    for r, jobs in enumerate(spec["rounds"]):
        _touch(folder / f"ready-{r}-{me}")
        go = folder / f"go-{r}"
        while not go.exists():
            time.sleep(POLL_S)
        try:
            out: dict[str, Any] = {"ok": True, **_do(spec["op"], jobs[me])}
        except Exception as exc:  # recorded for the parent to assert on
            out = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        _touch(folder / f"res-{r}-{me}.json", json.dumps(out))
    sys.stdout.flush()
    sys.stderr.flush()
    # deltalake + pyarrow can abort in interpreter teardown ("terminate called without an
    # active exception", delta-rs issue 2184); the results are on disk already.
    os._exit(0)


def race(
    folder: Path, op: str, rounds: list[list[dict[str, Any]]], timeout_s: float = 300
) -> list[list[dict[str, Any]]]:
    """Run ``rounds[r][w]`` in worker ``w`` for every round, all workers released at once.

    Returns each worker's result per round. Fails (with the workers' logs) on a timeout.
    """
    folder.mkdir(parents=True, exist_ok=True)
    writers = len(rounds[0])
    spec = folder / "spec.json"
    spec.write_text(json.dumps({"dir": str(folder), "op": op, "rounds": rounds}))
    logs = [open(folder / f"worker-{w}.log", "wb") for w in range(writers)]  # noqa: SIM115
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, str(spec), str(w)], stdout=logs[w], stderr=subprocess.STDOUT
        )
        for w in range(writers)
    ]
    deadline = time.monotonic() + timeout_s

    def wait_for(names: list[str]) -> None:
        while not all((folder / n).exists() for n in names):
            dead = [
                w
                for w, (p, n) in enumerate(zip(procs, names, strict=True))
                if p.poll() is not None and not (folder / n).exists()
            ]
            if dead or time.monotonic() > deadline:
                for p in procs:
                    p.kill()
                text = "\n".join(
                    f"--- worker {w}\n{(folder / f'worker-{w}.log').read_text()[-3000:]}"
                    for w in range(writers)
                )
                raise AssertionError(f"writers stalled or died (waiting for {names}):\n{text}")
            time.sleep(0.002)

    results: list[list[dict[str, Any]]] = []
    try:
        for r in range(len(rounds)):
            wait_for([f"ready-{r}-{w}" for w in range(writers)])
            _touch(folder / f"go-{r}")
            wait_for([f"res-{r}-{w}.json" for w in range(writers)])
            results.append(
                [json.loads((folder / f"res-{r}-{w}.json").read_text()) for w in range(writers)]
            )
        for p in procs:
            p.wait(timeout=60)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for f in logs:
            f.close()
    return results


if __name__ == "__main__":
    worker(sys.argv[1], int(sys.argv[2]))
