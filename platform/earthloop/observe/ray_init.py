"""Joining the Ray cluster from a job driver, when there is one.

Jobs submitted with ``ray job submit`` find the cluster through ``RAY_ADDRESS``; the same entry
points also run as plain CLIs on a laptop. Metrics only leave the process through Ray's metrics
agent, so we join a running cluster when one is reachable and carry on without it otherwise.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("earthloop")


def connect_if_available(address: str | None = "auto", *, log_to_driver: bool = False) -> bool:
    import ray

    if ray.is_initialized():
        return True
    target = os.environ.get("RAY_ADDRESS") or address
    if not target:
        return False
    # ray.init keeps retrying a GCS that does not answer (measured: > 200 s on Ray 2.60), e.g.
    # after a stale RAY_ADDRESS or ray_current_cluster file; a quick TCP probe avoids that hang.
    gcs = _gcs_address(target)
    if gcs == "":
        log.info("no running Ray cluster found; metrics stay local")
        return False
    if gcs is not None and not _accepts_connections(gcs):
        log.info("Ray at %s does not answer; metrics stay local", gcs)
        return False
    try:
        ray.init(address=target, logging_level=logging.WARNING, log_to_driver=log_to_driver)
    except Exception as exc:  # no cluster: fine for a CLI run
        log.info("not connected to Ray (%s); metrics stay local", type(exc).__name__)
        return False
    return True


def _gcs_address(target: str) -> str | None:
    """host:port that ``ray.init(address=target)`` would contact; "" if none; None if unknown."""
    if "://" in target:  # ray:// client or HTTP addresses: leave them to Ray
        return None
    if target != "auto":
        return target
    try:
        from ray._private.services import canonicalize_bootstrap_address

        return canonicalize_bootstrap_address("auto") or ""
    except Exception:  # Ray's "could not find any running Ray instance"
        return ""


def _accepts_connections(address: str, timeout_s: float = 2.0) -> bool:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return True  # not host:port: let Ray judge
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return True
    except OSError:
        return False
