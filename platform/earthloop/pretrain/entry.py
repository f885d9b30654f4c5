"""``earthloop pretrain`` / ``jobs/pretrain.py``."""

from __future__ import annotations

import logging
import os

from earthloop.config import ConfigError, parse_job_args


def main(argv: list[str] | None = None) -> int:
    cfg, _ = parse_job_args(argv, "Contrastive pretraining (SeCo, dense, CSCL) on Ray Train.")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from earthloop.pretrain.runner import plan_pretrain, run_pretrain

    try:
        plan_pretrain(cfg)  # every config error before connecting to the cluster
    except ConfigError as exc:
        print(f"earthloop pretrain: {exc}")
        return 2
    from earthloop.observe.ray_init import connect_if_available

    if not connect_if_available(cfg.ray.address, log_to_driver=True):
        print(
            f"earthloop pretrain: no Ray cluster at {os.environ.get('RAY_ADDRESS') or cfg.ray.address}"
            " (start one with infra/local/ray.sh up, or submit with `ray job submit`)"
        )
        return 2
    try:
        res = run_pretrain(cfg)
    except ConfigError as exc:
        print(f"earthloop pretrain: {exc}")
        return 2
    print(f"run:        {res.run_name}")
    print(f"checkpoint: {res.checkpoint}")
    print(f"backbone:   {res.backbone_path}")
    print(f"run row:    {res.runs_table} (run_name={res.run_name})")
    print(f"metrics:    {res.metrics_table}; final {res.metrics}")
    print(f"chips read: {res.chips.uri}@v{res.chips.version}")
    return 0
