"""cluster.yaml against Ray's own cluster-launcher schema and validator (ray 2.60)."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray.autoscaler
from infra_helpers import ROOT, load_yaml
from ray.autoscaler._private.util import prepare_config, validate_config


@pytest.fixture(scope="module")
def cluster() -> dict[str, Any]:
    return load_yaml(ROOT / "cluster.yaml")


def ray_validate(config: dict[str, Any]) -> dict[str, Any]:
    """What `ray up` does before launching: merge provider defaults, then validate."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def test_cluster_yaml_passes_rays_validator(cluster: dict[str, Any]) -> None:
    prepared = ray_validate(cluster)
    assert prepared["provider"]["type"] == "aws"
    # the raw file must also stand on its own against the schema (no typos hidden by defaults)
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(cluster, schema)


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        pytest.param(
            lambda c: c["available_node_types"]["gpu_train"].pop("node_config"),
            "'node_config' is a required property",
            id="no-node-config",
        ),
        pytest.param(
            lambda c: c["available_node_types"]["gpu_train"].update(max_worker=4),
            "'max_worker' was unexpected",
            id="typo-key",
        ),
        pytest.param(
            lambda c: c.update(max_workers="twelve"), "is not of type 'integer'", id="wrong-type"
        ),
        pytest.param(
            lambda c: c.update(head_start_ray_command=["ray start --head"]),
            "'head_start_ray_command' was unexpected",
            id="unknown-top-key",
        ),
        pytest.param(
            lambda c: c.update(head_node_type="missing"),
            "must be one of `available_node_types`",
            id="bad-head-type",
        ),
    ],
)
def test_invalid_variants_are_rejected(cluster: dict[str, Any], mutate: Any, error: str) -> None:
    bad = copy.deepcopy(cluster)
    mutate(bad)
    with pytest.raises((jsonschema.ValidationError, ValueError), match=re.escape(error)):
        ray_validate(bad)


def test_node_types_and_autoscaling_bounds(cluster: dict[str, Any]) -> None:
    types = cluster["available_node_types"]
    head = types[cluster["head_node_type"]]
    assert head["resources"] == {"CPU": 0}, "no tasks on the head"
    cpu, gpu = types["cpu_ingest"], types["gpu_train"]
    assert "GPU" not in cpu["resources"] and cpu["resources"]["CPU"] > 0
    assert gpu["resources"]["GPU"] >= 1
    assert gpu["node_config"]["InstanceType"].split(".")[0] in {"g5", "g6", "p4d", "p5"}
    for t in (cpu, gpu):
        assert 0 <= t["min_workers"] <= t["max_workers"] <= cluster["max_workers"]


def test_setup_pins_earthloop_commit_and_right_torch(cluster: dict[str, Any]) -> None:
    prepared = ray_validate(cluster)
    head_cmds = " ".join(prepared["head_setup_commands"])
    gpu_cmds = " ".join(cluster["available_node_types"]["gpu_train"]["worker_setup_commands"])
    cpu_cmds = " ".join(cluster["available_node_types"]["cpu_ingest"]["worker_setup_commands"])
    for cmds in (head_cmds, gpu_cmds, cpu_cmds):
        assert "git+https://" in cmds and "@REPLACE_WITH_GIT_SHA" in cmds
        assert "EARTHLOOP_COMMIT=REPLACE_WITH_GIT_SHA" in cmds and "exit 1" in cmds
    assert (
        "download.pytorch.org/whl/cpu" in head_cmds and "download.pytorch.org/whl/cpu" in cpu_cmds
    )
    assert "torch==" in gpu_cmds and "whl/cpu" not in gpu_cmds


def test_start_commands_secure_defaults(cluster: dict[str, Any]) -> None:
    head = " ".join(cluster["head_start_ray_commands"])
    worker = " ".join(cluster["worker_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head
    for cmds in (head, worker):
        assert "--metrics-export-port=" in cmds
        assert "RAY_AUTH_MODE=token" in cmds
    assert "/home/ray/.ray/auth_token" in cluster["file_mounts"]
