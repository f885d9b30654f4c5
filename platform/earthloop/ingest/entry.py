"""``earthloop ingest`` / ``jobs/ingest.py``."""

from __future__ import annotations

import logging

from earthloop.config import parse_job_args


def main(argv: list[str] | None = None) -> int:
    cfg, _ = parse_job_args(argv, "Search a STAC API and write the cloud-checked chip index.")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from earthloop.ingest.pipeline import run_ingest

    report = run_ingest(cfg)
    print(report.summary())
    print(f"chips table: {cfg.table_uri('chips')} (version {report.table_version})")
    if report.scenes == 0 and report.errors:
        return 1
    return 0
