"""connect_if_available: CLIs run without a cluster instead of failing."""

from __future__ import annotations

import pytest

from earthloop.observe.ray_init import connect_if_available


def test_no_address_means_no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert connect_if_available(None) is False
    assert not ray.is_initialized()


def test_unreachable_cluster_is_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    # an address nobody listens on: ray.init fails fast and the CLI carries on without Ray
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    monkeypatch.setenv("RAY_gcs_rpc_server_connect_timeout_s", "1")
    assert connect_if_available() is False
    assert not ray.is_initialized()
