"""The webhook service: refuse without the secret, answer at once, pull, reconcile, submit rounds.

The unit tests drive the HTTP receiver and the worker with stand-in pulls (timing, the round
rule, metrics). The integration tests pull from a real Label Studio (the session server of
conftest.py): annotations made through its API reach the Delta ``labels`` table after a webhook
event, and — with the receiver down, so every event is lost — through the reconciling pull.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import requests
from earthloop.config import load_config
from earthloop.labelstudio.client import LabelStudioError
from earthloop.labelstudio.configs import SEGMENTATION
from earthloop.labelstudio.project import ProjectSpec
from earthloop.labelstudio.pull import PullReport
from earthloop.labelstudio.push import Selected, push_chips
from earthloop.labelstudio.simulate import annotate, read_truth
from earthloop.labelstudio.sync import SyncReport, sync_labels
from earthloop.observe.backends import PrometheusBackend
from earthloop.observe.recorders import LabelMetrics
from earthloop.store.delta import read_table
from earthloop.store.labels import label_source_from_manifest
from earthloop.store.tables import LABELS
from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parents[2]
# Label Studio refuses webhooks to loopback addresses unless started with this; the session
# server of conftest.py inherits the environment it is started from, and test modules are all
# imported before it starts. Without it the tests below post the event themselves.
os.environ.setdefault("USE_DEFAULT_BANNED_SUBNETS", "false")
SECRET = "s3cret-for-the-test-0123456789"


def _load_service() -> ModuleType:
    """labeling/webhook.py is a service script, not a package module: load it by path."""
    spec = importlib.util.spec_from_file_location(
        "earthloop_webhook", ROOT / "labeling" / "webhook.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


webhook = _load_service()


def _report(inserted: int = 0, rejected: dict[str, int] | None = None) -> SyncReport:
    pull = PullReport(inserted=inserted, rejected=Counter(rejected or {}))
    pull.rejections = [("c", str(i), r, "") for r, n in (rejected or {}).items() for i in range(n)]
    return SyncReport(pull, queue=3, labeled_chips=inserted)


def _metrics() -> tuple[LabelMetrics, CollectorRegistry]:
    registry = CollectorRegistry()
    return LabelMetrics("label", backend=PrometheusBackend(registry)), registry


@pytest.fixture
def service() -> Iterator[tuple[Any, Any, list[float]]]:
    """A receiver + worker whose pull takes 1 s (to show the answer does not wait for it)."""
    calls: list[float] = []

    def slow_pull() -> SyncReport:
        calls.append(time.monotonic())
        time.sleep(1.0)
        return _report(inserted=1)

    loop = webhook.LabelLoop(slow_pull, _metrics()[0], reconcile_s=3600)
    loop.start()
    server = webhook.serve(loop, SECRET)
    try:
        yield server, loop, calls
    finally:
        server.shutdown()
        loop.stop()


def _url(server: Any) -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}/webhook"


def _event(action: str = "ANNOTATION_CREATED") -> dict[str, Any]:
    return {"action": action, "annotation": {"id": 1, "result": []}, "project": {"id": 1}}


def test_a_wrong_or_missing_secret_is_refused_and_enqueues_nothing(service: Any) -> None:
    server, loop, calls = service
    for headers in ({webhook.SECRET_HEADER: "wrong"}, {}, {webhook.SECRET_HEADER: SECRET[:-1]}):
        resp = requests.post(_url(server), json=_event(), headers=headers, timeout=5)
        assert resp.status_code == 401
    time.sleep(0.3)
    assert not loop.pull_requested and calls == [] and loop.stats.pulls == 0


def test_a_valid_event_is_answered_at_once_and_leads_to_one_pull(service: Any) -> None:
    server, loop, calls = service
    headers = {webhook.SECRET_HEADER: SECRET}
    requests.post(_url(server), json=_event(), headers=headers, timeout=5)  # warm the connection
    assert loop.wait_for_pulls(1, timeout=10)
    t0 = time.perf_counter()
    resp = requests.post(
        _url(server), json=_event("ANNOTATION_UPDATED"), headers=headers, timeout=5
    )
    answered = time.perf_counter() - t0
    assert resp.status_code == 202 and resp.json() == {"queued": "pull"}
    assert answered < 0.2  # the 1 s pull runs on the worker, not in the request
    # events during a pull coalesce into one more pull
    for _ in range(5):
        requests.post(_url(server), json=_event(), headers=headers, timeout=5)
    assert loop.wait_for_pulls(3, timeout=10)
    time.sleep(1.5)
    assert loop.stats.pulls == 3 and len(calls) == 3
    other = requests.post(_url(server), json=_event("PROJECT_UPDATED"), headers=headers, timeout=5)
    assert other.status_code == 200 and "ignored" in other.json()


def test_rounds_every_n_new_labels_at_most_one_at_a_time() -> None:
    inserted = iter([2, 2, 5, 0, 1])
    running = {"job-1": True}
    submitted: list[str] = []

    def submit() -> str:
        submitted.append(f"job-{len(submitted) + 1}")
        running[submitted[-1]] = True
        return submitted[-1]

    metrics, registry = _metrics()
    loop = webhook.LabelLoop(
        lambda: _report(inserted=next(inserted), rejected={"empty": 1}),
        metrics,
        round_every=3,
        submit_round=submit,
        round_running=lambda job: running[job],
    )
    loop.pull_once("webhook")  # 2 new: below 3
    assert submitted == []
    loop.pull_once("webhook")  # 4 new: a round
    assert submitted == ["job-1"]
    loop.pull_once("webhook")  # 5 more, but job-1 still runs: wait
    assert submitted == ["job-1"]
    running["job-1"] = False
    loop.pull_once("reconcile")  # job-1 done: the 5 waiting labels start the next round
    assert submitted == ["job-1", "job-2"]
    loop.pull_once("reconcile")  # 1 new since: nothing
    assert submitted == ["job-1", "job-2"]
    value = registry.get_sample_value
    assert value("earthloop_label_labels_total", {"job_name": "label"}) == 10
    assert value("earthloop_label_queue_size", {"job_name": "label"}) == 3
    # the same malformed annotation, met by five pulls, is counted once
    rejected = {"job_name": "label", "reason": "empty"}
    assert value("earthloop_label_annotations_rejected_total", rejected) == 1


def test_the_secret_file_must_be_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EARTHLOOP_WEBHOOK_SECRET", raising=False)
    path = tmp_path / "secret"
    path.write_text(SECRET + "\n")
    path.chmod(0o644)
    with pytest.raises(webhook.ConfigError, match="chmod 600"):
        webhook.read_secret(str(path))
    path.chmod(0o600)
    assert webhook.read_secret(str(path)) == SECRET


# --- against a real Label Studio --------------------------------------------------------------


@pytest.fixture
def project(
    label_studio: Any,
    synthetic_demo: dict[str, Any],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> dict[str, Any]:
    """8 demo chips pushed into a fresh project; a config whose workdir holds a chips copy."""
    work = tmp_path / "work"
    shutil.copytree(Path(str(synthetic_demo["chips"])), work / "tables" / "chips")
    cfg = load_config(None, [*synthetic_demo["overrides"], f"workdir={work}"])
    rows = sorted(read_table(str(synthetic_demo["chips"])).to_pylist(), key=lambda r: r["chip_id"])
    rows = rows[:: max(1, len(rows) // 8)][:8]
    source = label_source_from_manifest(synthetic_demo["manifest"].root, "landcover")
    title = f"webhook {request.node.name[-30:]}"
    spec = ProjectSpec(title, SEGMENTATION, source.classes, label_studio.files_root)
    client = label_studio.client()
    selected = [Selected(r["chip_id"], "entropy", 1.0, al_round=1) for r in rows]
    report = push_chips(client, spec, selected, {r["chip_id"]: r for r in rows})
    assert report.created == len(rows)
    truth = read_truth(rows, source.rasters)
    return {"cfg": cfg, "spec": spec, "client": client, "truth": truth}


def _register(client: Any, spec: ProjectSpec, url: str) -> bool:
    """Register the webhook (twice: the second must update, not duplicate); False when the
    server refuses loopback receivers."""
    pid = next(p["id"] for p in client.projects() if p["title"] == spec.title)
    try:
        hook = webhook.register_webhook(client, pid, url, SECRET)
    except LabelStudioError as exc:
        if "reserved network address" in str(exc):
            return False
        raise
    assert webhook.register_webhook(client, pid, url, SECRET) == hook
    hooks = client.request("GET", "/api/webhooks/", params={"project": pid})
    assert [h["url"] for h in hooks] == [url]
    return True


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _label_chips(cfg: Any) -> set[str]:
    return set(read_table(cfg.table_uri(LABELS)).column("chip_id").to_pylist())


@pytest.mark.integration
def test_an_event_leads_to_a_pull_into_the_labels_table(project: dict[str, Any]) -> None:
    cfg, spec, client = project["cfg"], project["spec"], project["client"]
    metrics, registry = _metrics()
    loop = webhook.LabelLoop(lambda: sync_labels(cfg, spec, client), metrics, reconcile_s=3600)
    loop.start()
    server = webhook.serve(loop, SECRET)
    try:
        delivered = _register(client, spec, _url(server))
        done = annotate(client, spec, project["truth"], limit=3)
        if not delivered:  # the server refuses loopback receivers: send its event ourselves
            t0 = time.perf_counter()
            resp = requests.post(
                _url(server), json=_event(), headers={webhook.SECRET_HEADER: SECRET}, timeout=5
            )
            assert resp.status_code == 202 and time.perf_counter() - t0 < 0.2
        deadline = time.monotonic() + 60  # each save sends its own event; pulls coalesce
        while loop.stats.new_labels < len(done) and time.monotonic() < deadline:
            loop.wait_for_pulls(loop.stats.pulls + 1, timeout=5)
    finally:
        server.shutdown()
        loop.stop()
    assert loop.stats.pulls >= 1 and loop.stats.new_labels == 3
    assert _label_chips(cfg) == {a.chip_id for a in done}
    value = registry.get_sample_value
    assert value("earthloop_label_labels_total", {"job_name": "label"}) == 3
    assert value("earthloop_label_labeled_chips", {"job_name": "label"}) == 3
    assert value("earthloop_label_queue_size", {"job_name": "label"}) == 5


@pytest.mark.integration
def test_with_the_receiver_down_the_reconciling_pull_gets_every_annotation(
    project: dict[str, Any],
) -> None:
    cfg, spec, client = project["cfg"], project["spec"], project["client"]
    loop = webhook.LabelLoop(lambda: sync_labels(cfg, spec, client), _metrics()[0], reconcile_s=1.0)
    # Label Studio calls a receiver that is down (a closed port): every event is lost.
    _register(client, spec, f"http://127.0.0.1:{_closed_port()}/webhook")
    annotated: list[str] = []
    worker = threading.Thread(
        target=lambda: annotated.extend(a.chip_id for a in annotate(client, spec, project["truth"]))
    )
    worker.start()
    loop.start()  # reconciling pulls run while annotations are still being saved
    try:
        worker.join(timeout=120)
        pulls = loop.stats.pulls
        assert loop.wait_for_pulls(pulls + 2, timeout=60)  # one full pull after the last save
    finally:
        loop.stop()
    assert len(annotated) == 8
    assert _label_chips(cfg) == set(annotated)
    table = read_table(cfg.table_uri(LABELS))
    assert table.num_rows == 8  # every annotation once, none twice
    last = loop.stats.last
    assert last is not None and last.pull.inserted == 0 and last.pull.unchanged == 8
    assert np.isfinite(last.labeled_chips) and last.labeled_chips == 8
