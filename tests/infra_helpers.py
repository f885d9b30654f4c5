"""Shared helpers for the infra tests: repository paths and the Prometheus binaries.

Why at the top of tests/: both tests/infra/ and tests/integration/test_prometheus_integration.py
import it, and pytest puts tests/ on ``sys.path`` for every test (it holds the root conftest).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
PROM_DIR = INFRA / "prometheus"
RULES = sorted((PROM_DIR / "rules").glob("*.yml"))
DASHBOARDS = sorted((INFRA / "grafana" / "dashboards").glob("*.json"))
DATASOURCE_UID = "earthloop-prometheus"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_binary(name: str) -> str:
    """Path of ``name``; in CI a missing binary fails the test, elsewhere it skips."""
    path = shutil.which(name)
    if path:
        return path
    msg = f"{name} not found on PATH (Debian: apt-get install --no-install-recommends prometheus)"
    if in_ci():
        pytest.fail(f"CI=true but {msg}")
    pytest.skip(msg)


def load_yaml(path: Path) -> Any:
    with path.open() as f:
        return yaml.safe_load(f)


def dashboard_exprs() -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, PromQL) for every target of every dashboard panel."""
    out = []
    for path in DASHBOARDS:
        dash = json.loads(path.read_text())
        for panel in dash["panels"]:
            for target in panel.get("targets", []):
                out.append((path.name, panel["title"], target["expr"]))
    return out


def rule_exprs() -> list[tuple[str, str, str]]:
    """(rule file, alert/record name, PromQL) for every rule."""
    out = []
    for path in RULES:
        for group in load_yaml(path)["groups"]:
            for rule in group["rules"]:
                out.append((path.name, rule.get("alert") or rule["record"], rule["expr"]))
    return out


def grafana_to_promql(expr: str) -> str:
    """Replace the Grafana variables our dashboards use by what Grafana would send."""
    out = expr.replace("$__rate_interval", "1m").replace("$job_name", ".*")
    assert "$" not in out, f"unhandled Grafana variable in {expr!r}"
    return out
