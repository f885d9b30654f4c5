"""Joining the Ray cluster from a job driver, when there is one.

Jobs submitted with ``ray job submit`` find the cluster through ``RAY_ADDRESS``; the same entry
points also run as plain CLIs on a laptop. Metrics only leave the process through Ray's metrics
agent, so we join a running cluster when one is reachable and carry on without it otherwise.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("earthloop")


def connect_if_available(address: str | None = "auto") -> bool:
    import ray

    if ray.is_initialized():
        return True
    target = os.environ.get("RAY_ADDRESS") or address
    if not target:
        return False
    try:
        ray.init(address=target, logging_level=logging.WARNING, log_to_driver=False)
    except Exception as exc:  # no cluster: fine for a CLI run
        log.info("not connected to Ray (%s); metrics stay local", type(exc).__name__)
        return False
    return True
