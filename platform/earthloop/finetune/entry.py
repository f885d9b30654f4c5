"""``earthloop finetune`` / ``jobs/finetune.py``: the label-efficiency sweep."""

from __future__ import annotations

import os

from earthloop.config import ConfigError, parse_job_args
from earthloop.errors import fail
from earthloop.observe.logs import setup_logging


def main(argv: list[str] | None = None) -> int:
    cfg, _ = parse_job_args(argv, "Label-efficiency fine-tuning sweep on Ray Tune.")
    setup_logging()  # before anything logs: the redaction filter must see every line
    # imported here, not at the top: the sweep pulls in torch, and `--help` or a config error
    # must answer without that start-up cost
    from earthloop.finetune.model import IncompatibleCheckpointError
    from earthloop.finetune.subsets import EmptyClassError
    from earthloop.finetune.sweep import plan_sweep, run_sweep

    try:
        plan = plan_sweep(cfg)  # every data/config/checkpoint error before touching the cluster
    except (ConfigError, EmptyClassError, IncompatibleCheckpointError) as exc:
        return fail("earthloop finetune", exc)
    from earthloop.observe.ray_init import connect_if_available

    if not connect_if_available(cfg.ray.address):
        return fail(
            "earthloop finetune",
            f"no Ray cluster at {os.environ.get('RAY_ADDRESS') or cfg.ray.address}"
            " (start one with infra/local/ray.sh up, or submit with `ray job submit`)",
        )
    res = run_sweep(cfg, plan=plan)
    print(
        f"sweep:      {res.name} ({'restored' if res.restored else 'new'}) at {res.experiment_path}"
    )
    print(f"trials:     {res.trials} ({res.errors} errors)")
    print(f"rows:       {res.table_uri} (sweep={res.name})")
    print(f"report:     {res.report}")
    for p in res.plots:
        print(f"plot:       {p}")
    return 1 if res.errors else 0
