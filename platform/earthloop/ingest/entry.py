"""``earthloop ingest`` / ``jobs/ingest.py``."""

from __future__ import annotations

from earthloop.config import parse_job_args
from earthloop.errors import fail
from earthloop.observe.logs import setup_logging
from earthloop.observe.ray_init import connect_if_available
from earthloop.observe.recorders import IngestMetrics


def main(argv: list[str] | None = None) -> int:
    cfg, _ = parse_job_args(argv, "Search a STAC API and write the cloud-checked chip index.")
    setup_logging()  # before anything logs: the redaction filter must see every line
    from earthloop.ingest.pipeline import run_ingest
    from earthloop.ingest.stac import SearchError

    connect_if_available(cfg.ray.address)  # metrics reach Prometheus through Ray when it runs
    metrics = IngestMetrics("ingest")
    metrics.start()
    try:
        report = run_ingest(
            cfg,
            on_reject=lambda reason, n: metrics.chip_rejected(reason, n),
            on_chip=lambda _, n: metrics.chips_processed(n),
        )
    except SearchError as exc:
        return fail("earthloop ingest", exc, 1)
    finally:
        metrics.finish()
    metrics.item_processed(report.scenes)
    print(report.summary())
    print(f"chips table: {cfg.table_uri('chips')} (version {report.table_version})")
    print(f"runs table:  {cfg.table_uri('ingest_runs')} (run_id {report.run_id})")
    if report.failed:  # found but not committed: re-running the same ingest writes them
        return fail(
            "earthloop ingest",
            f"{report.failed} chips could not be committed to {cfg.table_uri('chips')} "
            "(concurrent writers outlasted every retry); re-run the ingest to add them",
            1,
        )
    return 1 if report.scenes == 0 and report.errors else 0
