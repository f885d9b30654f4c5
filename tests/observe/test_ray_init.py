"""connect_if_available: CLIs run without a cluster instead of failing."""

from __future__ import annotations

import time

import pytest
from earthloop.observe.ray_init import connect_if_available


def test_no_address_means_no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    if ray.is_initialized():  # an earlier test in this process joined the cluster
        ray.shutdown()
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert connect_if_available(None) is False
    assert not ray.is_initialized()


def test_unreachable_cluster_returns_quickly(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()

    # nobody listens on port 1: without the probe ray.init retries for minutes
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    t0 = time.monotonic()
    assert connect_if_available() is False
    assert time.monotonic() - t0 < 10
    assert not ray.is_initialized()
