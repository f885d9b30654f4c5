"""KubeRay manifests: structure checks (no KubeRay CRD schema is available offline here)."""

from __future__ import annotations

from typing import Any

import pytest
from infra_helpers import INFRA, load_yaml

KUBERAY = INFRA / "kuberay"


def check_cluster_spec(spec: dict[str, Any]) -> None:
    assert spec["rayVersion"] == "2.60.0"
    assert spec["authOptions"]["mode"] == "token", "Ray token auth stays on"
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["metrics-export-port"] == "8080"
    check_pod(head["template"], gpu=False)
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert set(groups) == {"cpu-ingest", "gpu-train"}
    for name, g in groups.items():
        assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"], name
        assert g["rayStartParams"]["metrics-export-port"] == "8080"
        check_pod(g["template"], gpu=name == "gpu-train")


def check_pod(template: dict[str, Any], *, gpu: bool) -> None:
    (container,) = template["spec"]["containers"]
    assert container["image"], "image set"
    res = container["resources"]
    for kind in ("requests", "limits"):
        assert res[kind]["cpu"] and res[kind]["memory"]
        assert ("nvidia.com/gpu" in res[kind]) == gpu
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == 8080
    assert "env" not in container or not any(
        "value" in e and any(w in e["name"] for w in ("TOKEN", "SECRET", "PASSWORD", "KEY"))
        for e in container["env"]
    ), "no inline secrets"
    assert template["metadata"]["labels"]["app.kubernetes.io/part-of"] == "earthloop"


def test_rayjob_runs_pretraining_entrypoint() -> None:
    job = load_yaml(KUBERAY / "rayjob-pretrain.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    assert spec["entrypoint"] == "python jobs/pretrain.py --config configs/demo.yaml"
    assert spec["shutdownAfterJobFinishes"] is True
    check_cluster_spec(spec["rayClusterSpec"])


def test_raycluster_matches_the_job_cluster() -> None:
    rc = load_yaml(KUBERAY / "raycluster.yaml")
    assert rc["apiVersion"] == "ray.io/v1" and rc["kind"] == "RayCluster"
    check_cluster_spec(rc["spec"])
    job_spec = load_yaml(KUBERAY / "rayjob-pretrain.yaml")["spec"]["rayClusterSpec"]
    images = {
        c["image"]
        for s in (rc["spec"], job_spec)
        for t in [s["headGroupSpec"]["template"]] + [g["template"] for g in s["workerGroupSpecs"]]
        for c in t["spec"]["containers"]
    }
    assert images == {"REPLACE_WITH_IMAGE"}, "one image placeholder, replaced at deploy time"


def test_podmonitor_scrapes_the_metrics_port_as_job_ray() -> None:
    pm = load_yaml(KUBERAY / "podmonitor.yaml")
    assert pm["kind"] == "PodMonitor"
    (ep,) = pm["spec"]["podMetricsEndpoints"]
    assert ep["port"] == "metrics"
    assert {"targetLabel": "job", "replacement": "ray"} in ep["relabelings"]


@pytest.mark.parametrize("name", ["rayjob-pretrain.yaml", "raycluster.yaml", "podmonitor.yaml"])
def test_manifests_are_single_documents(name: str) -> None:
    import yaml

    docs = list(yaml.safe_load_all((KUBERAY / name).read_text()))
    assert len(docs) == 1
