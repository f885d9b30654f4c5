"""Static checks of the Prometheus config, rules and Grafana files (no server needed)."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
from earthloop.observe.catalogue import SPECS
from infra_helpers import (
    DASHBOARDS,
    DATASOURCE_UID,
    INFRA,
    PROM_DIR,
    RULES,
    dashboard_exprs,
    load_yaml,
    require_binary,
    rule_exprs,
)

# Ray's own series the dashboards/rules may use (checked to exist in Ray 2.60 by the
# integration test, except the GPU and autoscaler-failure ones that need GPUs / an autoscaler).
RAY_BUILTIN = {
    "up",
    "ALERTS",
    "ray_local_resource_view_node_count",
    "ray_cluster_failed_nodes",
    "ray_node_cpu_utilization",
    "ray_node_gpus_utilization",
}
RECORDED = {r[1] for r in rule_exprs() if ":" in r[1]}


def test_promtool_accepts_config_and_rules() -> None:
    promtool = require_binary("promtool")
    cfg = subprocess.run(
        [promtool, "check", "config", str(PROM_DIR / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert cfg.returncode == 0, cfg.stdout + cfg.stderr
    assert f"{len(RULES)} rule files found" in cfg.stdout + cfg.stderr
    rules = subprocess.run(
        [promtool, "check", "rules", *map(str, RULES)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert rules.returncode == 0, rules.stdout + rules.stderr


def test_scrape_config_follows_ray_service_discovery_and_services() -> None:
    cfg = load_yaml(PROM_DIR / "prometheus.yml")
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    (sd,) = jobs["ray"]["file_sd_configs"]
    assert sd["files"] == ["/tmp/ray/prom_metrics_service_discovery.json"]
    assert sd["refresh_interval"] == "5s"
    (static,) = jobs["earthloop-services"]["static_configs"]
    assert static["targets"] == ["127.0.0.1:9108"]
    assert cfg["rule_files"] == ["rules/*.yml"]


def test_alerts_cover_stall_collapse_and_node_loss() -> None:
    alerts = {name: expr for _, name, expr in rule_exprs()}
    assert "earthloop_job_last_progress_timestamp_seconds" in alerts["EarthloopJobStalled"]
    assert "earthloop_job_running" in alerts["EarthloopJobStalled"]
    assert "ray_earthloop_train_collapsed" in alerts["EarthloopEmbeddingCollapsed"]
    assert "ray_local_resource_view_node_count" in alerts["EarthloopRayNodeLost"]
    assert 'up{job="ray"}' in alerts["EarthloopRayNodeUnreachable"]


def _metric_names(expr: str) -> set[str]:
    names = set(re.findall(r'__name__=~"\(ray_\)\?(earthloop_\w+)"', expr))
    stripped = re.sub(r'__name__=~"[^"]*"', "", expr)
    stripped = re.sub(r'"[^"]*"', '""', stripped)  # label values are not metric names
    names |= set(re.findall(r"\b(ray_earthloop_\w+|ray_\w+|up|ALERTS)\b", stripped))
    names |= {n for n in re.findall(r"\b([a-z_]+:[a-z0-9_]+:[a-z0-9_]+)\b", stripped)}
    return names


@pytest.mark.parametrize(
    ("source", "name", "expr"), dashboard_exprs() + rule_exprs(), ids=lambda v: str(v)[:60]
)
def test_queries_only_name_metrics_that_exist(source: str, name: str, expr: str) -> None:
    names = _metric_names(expr)
    assert names, f"no metric found in {expr!r}"
    hist_suffix = re.compile(r"_(bucket|sum|count)$")
    for n in names:
        if n in RAY_BUILTIN or n in RECORDED:
            continue
        base = n.removeprefix("ray_")
        if base not in SPECS:
            base = hist_suffix.sub("", base)
        assert base in SPECS, f"{source} / {name}: {n} is not an earthloop metric"
        kind = SPECS[base].kind
        if kind == "histogram":
            assert n.endswith("_bucket"), f"{n}: query histograms through their buckets"
        if kind == "counter":  # raw per-process counters mean nothing on their own
            assert "rate(" in expr or "increase(" in expr or expr.lstrip().startswith("sum")


def test_dashboards_are_valid_grafana_json() -> None:
    assert {p.name for p in DASHBOARDS} >= {"overview.json", "training.json", "labeling.json"}
    uids = set()
    for path in DASHBOARDS:
        dash = json.loads(path.read_text())
        assert isinstance(dash["schemaVersion"], int) and dash["schemaVersion"] >= 36
        assert dash["uid"] not in uids
        uids.add(dash["uid"])
        assert dash["title"] and dash["panels"]
        ids = [p["id"] for p in dash["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
        cells: set[tuple[int, int]] = set()
        for panel in dash["panels"]:
            g = panel["gridPos"]
            assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0, panel["title"]
            cover = {
                (x, y)
                for x in range(g["x"], g["x"] + g["w"])
                for y in range(g["y"], g["y"] + g["h"])
            }
            assert not cells & cover, f"{path.name}: panel {panel['title']!r} overlaps another"
            cells |= cover
            if panel["type"] == "row":
                continue
            assert panel["datasource"]["uid"] == DATASOURCE_UID
            assert panel["targets"], panel["title"]
            for t in panel["targets"]:
                assert t["expr"].strip() and t["refId"]
                assert t["datasource"]["uid"] == DATASOURCE_UID
        for var in dash["templating"]["list"]:
            assert var["datasource"]["uid"] == DATASOURCE_UID


def test_grafana_provisioning_matches_dashboards() -> None:
    ds = load_yaml(INFRA / "grafana" / "provisioning" / "datasources" / "prometheus.yml")
    (source,) = ds["datasources"]
    assert source["uid"] == DATASOURCE_UID and source["type"] == "prometheus"
    assert source["url"].startswith("http://127.0.0.1:")
    prov = load_yaml(INFRA / "grafana" / "provisioning" / "dashboards" / "earthloop.yml")
    (provider,) = prov["providers"]
    assert provider["type"] == "file"
    compose = load_yaml(INFRA / "compose.yaml")
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in mounts
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in mounts
