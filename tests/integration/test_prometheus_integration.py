"""A real Prometheus scrapes a real, isolated Ray node on which a stand-in job recorded every
earthloop metric family through earthloop.observe.recorders; then every dashboard and rule query
is run against it.

Isolation: the Ray node is started by a child process with its own temp dir, free ports and a
throw-away token in RAY_AUTH_TOKEN (token auth stays on, ~/.ray is not touched); the project's
shared Ray cluster under /tmp/ray is never contacted. Prometheus runs on a free loopback port with
a config derived from infra/prometheus/prometheus.yml (same jobs and rules, test targets).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from earthloop.observe import backends, catalogue, recorders
from infra_helpers import (
    PROM_DIR,
    ROOT,
    RULES,
    dashboard_exprs,
    grafana_to_promql,
    load_yaml,
    require_binary,
    rule_exprs,
)
from prometheus_client import CollectorRegistry

pytestmark = pytest.mark.integration

# Panels that may legitimately be empty on this machine; every other panel must return data.
MAY_BE_EMPTY = {("training.json", "GPU utilisation per GPU")}

STANDIN = r'''
"""Stand-in for the real jobs: records each metric family from Ray actors and the driver."""
import sys
import time

import ray

from earthloop.observe import recorders

metrics_port, dashboard_port, temp_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
# The dashboard is what writes Prometheus' service-discovery file, as on a real head node.
ray.init(
    address="local",
    num_cpus=1,
    include_dashboard=True,
    dashboard_host="127.0.0.1",
    dashboard_port=dashboard_port,
    _temp_dir=temp_dir,
    _metrics_export_port=metrics_port,
    configure_logging=False,
    log_to_driver=False,
    _system_config={"metrics_report_interval_ms": 1000},
)


@ray.remote(num_cpus=0)
class Pipeline:
    def run(self) -> bool:
        ing = recorders.IngestMetrics()
        ing.start()
        ing.item_processed(2)
        ing.chips_processed(10)
        for reason in ("cloud", "cloud", "nodata", "read_error", "missing_asset", "crs"):
            ing.chip_rejected(reason)
        with ing.time_read():
            time.sleep(0.01)
        ing.observe_read(0.2)
        lab = recorders.LabelMetrics()
        lab.start()
        lab.queue_size(17)
        lab.tasks_pushed(20, method="entropy")
        lab.annotations_pulled(5)
        lab.annotation_rejected("empty")
        lab.labels_written(4)
        lab.labeled_chips(4)
        # claims to run but its heartbeat is an hour old: the stall alert must notice
        recorders.JobMetrics("stallcheck", clock=lambda: time.time() - 3600).start()
        return True


@ray.remote(num_cpus=0)
class Trainer:
    def __init__(self, rank: int) -> None:
        self.rank = rank

    def run(self, steps: int) -> bool:
        tr = recorders.TrainMetrics("pretrain", rank=self.rank)
        st = recorders.StreamMetrics("pretrain")
        tr.start()
        for i in range(steps):
            tr.step(seconds=0.05, samples=32, losses={"loss": 1.0 - 0.1 * i, "loss_seco": 0.6})
            st.chips_delivered(32)
        st.data_wait(0.12)
        tr.embedding_std(0.08)
        tr.knn_accuracy(0.61)
        tr.collapsed(False)
        tr.checkpoint_saved()
        tr.epoch(1)
        if self.rank == 0:
            recorders.TrainMetrics("collapsecheck").collapsed(True)
        return True


actors = [Pipeline.remote(), Trainer.remote(0), Trainer.remote(1)]
ray.get([actors[0].run.remote(), actors[1].run.remote(3), actors[2].run.remote(3)])
tune = recorders.TuneMetrics()  # the driver records too (as a Tune callback would)
tune.trials_running(2)
tune.trial_done("terminated")
tune.trial_done("error")
tune.best_metric("val_miou", 0.42)
print("READY", flush=True)
sys.stdin.read()  # the test closes stdin when done
ray.shutdown()
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Prom:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str, **params: str) -> Any:
        url = f"{self.base}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:  # 400/422 carry the PromQL error as JSON
            return json.loads(e.read())

    def query(self, q: str) -> list[dict[str, Any]]:
        body = self.get("/api/v1/query", query=q)
        assert body["status"] == "success", f"{q!r}: {body.get('error')}"
        result = body["data"]["result"]
        if body["data"]["resultType"] == "scalar":
            return [{"metric": {}, "value": result}]
        return list(result)

    def value(self, q: str) -> float | None:
        res = self.query(q)
        return float(res[0]["value"][1]) if len(res) == 1 else None


def wait_for(what: str, check: Any, deadline: float, interval: float = 0.5) -> Any:
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out waiting for {what} (last: {last!r})")


def kill_leftovers(marker: str) -> None:
    """SIGKILL processes of ours whose command line names our unique Ray temp dir."""
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmd:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGKILL)


def write_prometheus_config(tmp: Path, sd_file: Path, prom_port: int, services_port: int) -> Path:
    """The shipped config with test targets; same job names, same rule files."""
    cfg = load_yaml(PROM_DIR / "prometheus.yml")
    cfg["global"].update(scrape_interval="1s", evaluation_interval="1s", scrape_timeout="1s")
    cfg["rule_files"] = [str(p) for p in RULES]
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    jobs["ray"]["file_sd_configs"][0]["files"] = [str(sd_file)]
    jobs["earthloop-services"]["static_configs"][0]["targets"] = [f"127.0.0.1:{services_port}"]
    jobs["prometheus"]["static_configs"][0]["targets"] = [f"127.0.0.1:{prom_port}"]
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_prometheus_sees_earthloop_metrics_and_every_query_works(tmp_path: Path) -> None:
    prometheus = require_binary("prometheus")
    deadline = time.monotonic() + 85
    ray_tmp = tempfile.mkdtemp(prefix="elobs-", dir="/tmp")  # short: Ray puts sockets in it
    metrics_port, dashboard_port = free_port(), free_port()
    prom_port, services_port = free_port(), free_port()

    script = tmp_path / "standin.py"
    script.write_text(STANDIN)
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    env.pop("RAY_ADDRESS", None)
    standin_log = (tmp_path / "standin.log").open("w")
    standin = subprocess.Popen(
        [sys.executable, str(script), str(metrics_port), str(dashboard_port), ray_tmp],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=standin_log,
        text=True,
        cwd=ROOT,
        env=env,
    )
    ready = threading.Event()

    def read_stdout() -> None:
        assert standin.stdout is not None
        for line in standin.stdout:
            if line.strip() == "READY":
                ready.set()

    threading.Thread(target=read_stdout, daemon=True).start()

    # our own service, exporting with prometheus-client (no "ray_" prefix)
    webhook = backends.PrometheusBackend(CollectorRegistry())
    server = backends.serve_prometheus(webhook, port=services_port)
    hook = recorders.LabelMetrics("label-webhook", backend=webhook)
    hook.annotations_pulled(3)
    hook.labels_written(2)

    # Ray keeps this file (a link into the current session) up to date, exactly like
    # /tmp/ray/prom_metrics_service_discovery.json on a head node with the default temp dir.
    sd_file = Path(ray_tmp) / "prom_metrics_service_discovery.json"
    config = write_prometheus_config(tmp_path, sd_file, prom_port, services_port)
    prom_log = (tmp_path / "prometheus.log").open("w")
    prom_proc = subprocess.Popen(
        [
            prometheus,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=prom_log,
        stderr=subprocess.STDOUT,
    )
    prom = Prom(prom_port)
    try:

        def standin_ready() -> bool:
            if standin.poll() is not None:
                pytest.fail(f"stand-in exited: {(tmp_path / 'standin.log').read_text()[-3000:]}")
            return ready.is_set()

        wait_for("the Ray stand-in to record its metrics", standin_ready, deadline)

        def sd_lists_node() -> bool:
            try:
                groups = json.loads(sd_file.read_text())
            except (OSError, ValueError):
                return False
            targets = [t for g in groups for t in g["targets"]]
            return any(t.endswith(f":{metrics_port}") for t in targets)

        wait_for("Ray's service-discovery file to list the node", sd_lists_node, deadline)

        def prom_ready() -> bool:
            try:
                with urllib.request.urlopen(f"{prom.base}/-/ready", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        wait_for("Prometheus to be ready", prom_ready, deadline)

        # 1. every catalogue family arrives, under the names Ray actually exports
        expected = {
            spec.ray_name + ("_bucket" if spec.kind == "histogram" else "")
            for spec in catalogue.SPECS.values()
        }

        missing = set(expected)

        def all_series_present() -> bool:
            body = prom.get("/api/v1/label/__name__/values")
            missing.intersection_update(expected - set(body.get("data", [])))
            return not missing

        if not wait_for_quietly(all_series_present, deadline):
            pytest.fail(f"series never scraped: {sorted(missing)}")

        # exact values: counters summed over workers, gauges only from rank 0
        def settled() -> bool:
            return (
                prom.value('sum(ray_earthloop_train_samples_total{job_name="pretrain"})') == 192.0
                and prom.value('sum(ray_earthloop_train_steps_total{job_name="pretrain"})') == 6.0
                and prom.value("sum(ray_earthloop_ingest_read_seconds_count)") == 2.0
            )

        wait_for("counters to reach their recorded totals", settled, deadline)
        loss = prom.query('ray_earthloop_train_loss{job_name="pretrain", term="total"}')
        assert len(loss) == 1 and float(loss[0]["value"][1]) == pytest.approx(0.8)
        series = loss[0]["metric"]
        assert series["job"] == "ray" and "exported_job" not in series  # job_name, not job
        rejected = {
            r["metric"]["reason"]: float(r["value"][1])
            for r in prom.query("sum by (reason) (ray_earthloop_ingest_chips_rejected_total)")
        }
        assert rejected == {
            "cloud": 2.0,
            "nodata": 1.0,
            "read_error": 1.0,
            "missing_asset": 1.0,
            "crs": 1.0,
        }
        assert prom.value('ray_earthloop_tune_best_metric{metric="val_miou"}') == 0.42

        # 2. the prometheus-client variant: same names without the prefix, from our service
        pulled = prom.query('earthloop_label_annotations_pulled_total{job="earthloop-services"}')
        assert [float(r["value"][1]) for r in pulled] == [3.0]
        assert prom.value('up{job="earthloop-services"}') == 1.0

        # 3. every dashboard query parses; every panel except MAY_BE_EMPTY returns data
        queries = [(f, t, grafana_to_promql(e)) for f, t, e in dashboard_exprs()]
        for _, _, q in queries:
            prom.query(q)  # asserts status == success
        pending = {(f, t, q) for f, t, q in queries if (f, t) not in MAY_BE_EMPTY}

        def panels_with_data() -> bool:
            for item in list(pending):
                if prom.query(item[2]):
                    pending.discard(item)
            return not pending

        if not wait_for_quietly(panels_with_data, deadline):
            pytest.fail(
                "panels without data: " + "; ".join(f"{f}/{t}: {q}" for f, t, q in sorted(pending))
            )

        # 4. every rule expression evaluates, the loaded rules are healthy, and the stand-in's
        #    stalled and collapsed jobs trip their alerts (pending: `for` has not elapsed yet)
        for _, _, expr in rule_exprs():
            prom.query(expr)

        def rules_healthy() -> bool:
            groups = prom.get("/api/v1/rules")["data"]["groups"]
            rules = [r for g in groups for r in g["rules"]]
            return len(rules) == len(rule_exprs()) and all(
                r["health"] == "ok" and r.get("lastEvaluation", "").startswith("20") for r in rules
            )

        wait_for("all rules to evaluate healthy", rules_healthy, deadline)

        seen: set[tuple[str, str]] = set()

        def alerts_raised() -> bool:
            data = prom.get("/api/v1/alerts")["data"]["alerts"]
            seen.update((a["labels"]["alertname"], a["labels"].get("job_name", "")) for a in data)
            return {
                ("EarthloopJobStalled", "stallcheck"),
                ("EarthloopEmbeddingCollapsed", "collapsecheck"),
            } <= seen

        if not wait_for_quietly(alerts_raised, deadline):
            pytest.fail(f"stall/collapse alerts not raised; alerts seen: {sorted(seen)}")
        assert ("EarthloopJobStalled", "pretrain") not in seen
        assert ("EarthloopJobStalled", "ingest") not in seen
    finally:
        server.stop()
        if standin.stdin:
            with contextlib.suppress(OSError):
                standin.stdin.close()
        try:
            standin.wait(timeout=30)
        except subprocess.TimeoutExpired:
            standin.kill()
            standin.wait(timeout=10)
        kill_leftovers(ray_tmp)
        prom_proc.terminate()
        try:
            prom_proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            prom_proc.kill()
        standin_log.close()
        prom_log.close()
        shutil.rmtree(ray_tmp, ignore_errors=True)


def wait_for_quietly(check: Any, deadline: float, interval: float = 0.5) -> bool:
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return bool(check())
