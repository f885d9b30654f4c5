"""``earthloop pretrain`` / ``jobs/pretrain.py``."""

from __future__ import annotations

import os

from earthloop.config import ConfigError, parse_job_args
from earthloop.errors import fail
from earthloop.observe.logs import setup_logging


def main(argv: list[str] | None = None) -> int:
    cfg, _ = parse_job_args(argv, "Contrastive pretraining (SeCo, dense, CSCL) on Ray Train.")
    setup_logging()  # before anything logs: the redaction filter must see every line
    from earthloop.pretrain.runner import plan_pretrain, run_pretrain

    try:
        plan_pretrain(cfg)  # every config error before connecting to the cluster
    except ConfigError as exc:
        return fail("earthloop pretrain", exc)
    from earthloop.observe.ray_init import connect_if_available

    if not connect_if_available(cfg.ray.address, log_to_driver=True):
        return fail(
            "earthloop pretrain",
            f"no Ray cluster at {os.environ.get('RAY_ADDRESS') or cfg.ray.address}"
            " (start one with infra/local/ray.sh up, or submit with `ray job submit`)",
        )
    try:
        res = run_pretrain(cfg)
    except ConfigError as exc:
        return fail("earthloop pretrain", exc)
    print(f"run:        {res.run_name}")
    print(f"checkpoint: {res.checkpoint}")
    print(f"backbone:   {res.backbone_path}")
    print(f"run row:    {res.runs_table} (run_name={res.run_name})")
    print(f"metrics:    {res.metrics_table}; final {res.metrics}")
    print(f"chips read: {res.chips.uri}@v{res.chips.version}")
    return 0
