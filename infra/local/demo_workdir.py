"""Keep the demo's workdir tied to the data it was built from (called by demo.sh).

Regenerating the demo data (a new preset, a new seed) rewrites the same COG paths with other
content, and the chip index in the old workdir would then point at pixels it never checked for
cloud or edges. So the workdir records the fingerprint of the data's manifest; when the data
changed, the old workdir is moved aside (renamed, never deleted) and the demo starts clean.
Re-running the demo on unchanged data keeps the workdir, so re-runs stay idempotent.

    python infra/local/demo_workdir.py CONFIG
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

from earthloop.config import load_config

STAMP = ".demo-data"


def check(config: str) -> str:
    """Return what was done, in one line for the demo's log."""
    cfg = load_config(config)
    if "://" in cfg.workdir:
        return f"workdir {cfg.workdir} is remote: not checked against the data"
    manifest = Path(cfg.data_dir) / "manifest.json"
    if not manifest.exists():
        return f"no {manifest}: nothing to check the workdir against"
    fingerprint = hashlib.sha256(manifest.read_bytes()).hexdigest()[:16]
    work = Path(cfg.workdir)
    stamp = work / STAMP
    if stamp.exists() and stamp.read_text().strip() == fingerprint:
        return f"workdir {work} was built from this data ({fingerprint})"
    moved = ""
    if work.exists() and any(p.name != STAMP for p in work.iterdir()):
        stem = f"{work.name}.stale-{time.strftime('%Y%m%d-%H%M%S')}"
        aside, n = work.with_name(stem), 1
        while aside.exists():
            aside, n = work.with_name(f"{stem}-{n}"), n + 1
        work.rename(aside)
        moved = f"; the previous workdir was built from other data, moved to {aside}"
    work.mkdir(parents=True, exist_ok=True)
    stamp.write_text(fingerprint + "\n")
    return f"workdir {work} starts on data {fingerprint}{moved}"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: demo_workdir.py CONFIG")
    print(f"demo: {check(sys.argv[1])}")
