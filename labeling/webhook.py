"""The labeling loop's webhook service: Label Studio events in, pulls and rounds out.

    python labeling/webhook.py [--init seco] [--port 8095] [--round-every 20] \
        [--register http://127.0.0.1:8095/webhook] [--config FILE] [section.key=value ...]

Why it is shaped like this (Label Studio 1.23 facts, ../shared/STACK.md): Label Studio calls a
webhook *synchronously inside the annotator's save request*, waits at most 1 s, never retries
and signs nothing. So the HTTP handler does the least possible: it checks a shared secret header
in constant time (``hmac.compare_digest``), sets a "pull wanted" flag and answers 202 — within
milliseconds, whatever the store or the cluster are doing. Everything else happens on one worker
thread:

* a **pull** (:func:`earthloop.labelstudio.sync.sync_labels`, idempotent MERGE into ``labels``)
  whenever the flag is set; any number of events arriving during a pull cost one more pull;
* a **reconciling pull** every ``--reconcile-s`` seconds even without events: a webhook lost
  while this service was down or slow (Label Studio does not retry) is caught by the next one;
* after every ``--round-every`` new labels, a **round** submitted as a Ray job
  (``JobSubmissionClient``; the job runs ``jobs/active_learning.py``). Submission returns at once
  and at most one round runs at a time: while the last one is pending or running, new labels
  keep accumulating and the next round is submitted when it has finished.

It exports the ``earthloop_label_*`` metrics of :mod:`earthloop.observe.catalogue` on its own
``/metrics`` endpoint (prometheus-client; the labeling Grafana dashboard reads them). Each
malformed annotation is counted once per process, not once per reconciling pull.

Secrets: the shared secret comes from ``EARTHLOOP_WEBHOOK_SECRET`` or a file named by
``--secret-file`` / ``EARTHLOOP_WEBHOOK_SECRET_PATH`` that only its owner may read (0600); it
is never logged. The service binds 127.0.0.1 unless told otherwise. A loopback receiver also
needs Label Studio started with ``USE_DEFAULT_BANNED_SUBNETS=false`` (it refuses private
addresses by default); on a cluster the service sits behind the ingress (docs/labeling.md).
"""

from __future__ import annotations

import argparse
import hmac
import json
import logging
import os
import shlex
import stat
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from earthloop.config import ConfigError, EarthloopConfig, parse_job_args
from earthloop.errors import exit_process, fail
from earthloop.labelstudio.client import Connection, LabelStudio, LabelStudioError
from earthloop.labelstudio.project import open_project
from earthloop.labelstudio.sync import SyncReport, loop_project, record_pull, sync_labels
from earthloop.observe.backends import PrometheusBackend, serve_prometheus
from earthloop.observe.logs import setup_logging
from earthloop.observe.recorders import LabelMetrics

log = logging.getLogger("earthloop.labeling.webhook")

SECRET_HEADER = "X-Earthloop-Secret"
ACTIONS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")
MAX_BODY = 4 << 20  # a payload carries one annotation with its RLE: MBs at most


# --------------------------------------------------------------------------------------------
# The worker: pulls, reconciliation and rounds
# --------------------------------------------------------------------------------------------


@dataclass
class LoopStats:
    """What the worker has done (read by tests and the status line)."""

    pulls: int = 0
    failed_pulls: int = 0
    new_labels: int = 0
    rounds_submitted: list[str] = field(default_factory=list)
    last: SyncReport | None = None


class LabelLoop:
    """One worker thread that pulls on request and on a timer, and submits rounds.

    Args:
        pull: one idempotent pull (returns its report); raising is logged and retried later.
        metrics: where the ``earthloop_label_*`` values go.
        reconcile_s: the longest time between two pulls, events or not.
        round_every: submit a round after this many new labels (0: never).
        submit_round: starts a round asynchronously and returns its job id.
        round_running: whether the job of that id is still pending or running.
    """

    def __init__(
        self,
        pull: Callable[[], SyncReport],
        metrics: LabelMetrics,
        *,
        reconcile_s: float = 60.0,
        round_every: int = 0,
        submit_round: Callable[[], str] | None = None,
        round_running: Callable[[str], bool] | None = None,
    ) -> None:
        self._pull = pull
        self._metrics = metrics
        self.reconcile_s = reconcile_s
        self.round_every = round_every
        self._submit_round = submit_round
        self._round_running = round_running
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._done = threading.Condition()
        self._thread: threading.Thread | None = None
        self._since_round = 0
        self._round_job: str | None = None
        self._rejected_seen: set[tuple[str, str]] = set()
        self.stats = LoopStats()

    def request_pull(self) -> None:
        """Ask for a pull soon; never blocks (the webhook handler's only action)."""
        self._wake.set()

    @property
    def pull_requested(self) -> bool:
        return self._wake.is_set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="label-loop", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wait_for_pulls(self, n: int, timeout: float) -> bool:
        """Block until at least ``n`` pulls (successful or not) have finished."""
        with self._done:
            return self._done.wait_for(
                lambda: self.stats.pulls + self.stats.failed_pulls >= n, timeout
            )

    def _run(self) -> None:
        while not self._stop.is_set():
            woken = self._wake.wait(self.reconcile_s)
            if self._stop.is_set():
                return
            self._wake.clear()
            self.pull_once("webhook" if woken else "reconcile")

    def pull_once(self, reason: str) -> None:
        """One pull, its metrics, and a round when enough new labels have arrived."""
        t0 = time.perf_counter()
        try:
            rep = self._pull()
        except Exception as exc:  # Label Studio or the store down: the next pull retries
            log.warning("pull (%s) failed: %s", reason, exc)
            with self._done:
                self.stats.failed_pulls += 1
                self._done.notify_all()
            return
        self._record(rep)
        new = rep.pull.inserted
        log.info("pull (%s) in %.1fs: %s", reason, time.perf_counter() - t0, rep.pull.summary())
        with self._done:
            self.stats.pulls += 1
            self.stats.new_labels += new
            self.stats.last = rep
            self._done.notify_all()
        self._since_round += new
        self.maybe_submit_round()

    def _record(self, rep: SyncReport) -> None:
        record_pull(self._metrics, rep, rejected=False)
        for _chip, ann_id, reason, _msg in rep.pull.rejections:
            if (ann_id, reason) not in self._rejected_seen:
                self._rejected_seen.add((ann_id, reason))
                self._metrics.annotation_rejected(reason)

    def maybe_submit_round(self) -> None:
        """Submit a round after ``round_every`` new labels, unless one is still running."""
        if not self.round_every or self._submit_round is None:
            return
        if self._since_round < self.round_every:
            return
        if self._round_job is not None and self._round_running is not None:
            try:
                if self._round_running(self._round_job):
                    return  # at most one round at a time; labels keep accumulating
            except Exception as exc:
                log.warning(
                    "status of round job %s unknown (%s); not submitting", self._round_job, exc
                )
                return
        try:
            self._round_job = self._submit_round()
        except Exception as exc:  # the cluster is down: try again after the next pull
            log.warning("round not submitted: %s", exc)
            return
        self.stats.rounds_submitted.append(self._round_job)
        log.info(
            "round submitted after %d new label(s): job %s", self._since_round, self._round_job
        )
        self._since_round = 0


# --------------------------------------------------------------------------------------------
# The HTTP side: check, enqueue, answer
# --------------------------------------------------------------------------------------------


class WebhookServer(ThreadingHTTPServer):
    """A threading HTTP server that knows the secret and the loop it feeds."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], loop: LabelLoop, secret: str) -> None:
        super().__init__(address, WebhookHandler)
        self.loop = loop
        self._secret = secret.encode()

    def authorised(self, given: str | None) -> bool:
        """Constant-time comparison: the time taken says nothing of how much was right."""
        return given is not None and hmac.compare_digest(given.encode(), self._secret)


class WebhookHandler(BaseHTTPRequestHandler):
    server: WebhookServer
    protocol_version = "HTTP/1.1"

    def _answer(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path == "/health":
            self._answer(200, {"status": "ok"})
        else:
            self._answer(404, {"error": "not found"})

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path.rstrip("/") != "/webhook":
            self._answer(404, {"error": "not found"})
            return
        if not self.server.authorised(self.headers.get(SECRET_HEADER)):
            self.close_connection = True  # the unread body is not worth reading
            self._answer(401, {"error": "unauthorised"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True
            self._answer(413, {"error": "payload too large"})
            return
        try:
            action = json.loads(self.rfile.read(length) or b"{}").get("action")
        except (ValueError, AttributeError):
            self._answer(400, {"error": "not a JSON object"})
            return
        if action in ACTIONS:
            self.server.loop.request_pull()
            self._answer(202, {"queued": "pull"})
        else:
            self._answer(200, {"ignored": str(action)[:40]})

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base signature)
        # request lines only (method, path, status): headers, where the secret travels, never
        log.debug("%s %s", self.address_string(), format % args)


def serve(loop: LabelLoop, secret: str, host: str = "127.0.0.1", port: int = 0) -> WebhookServer:
    """Start the HTTP receiver on a daemon thread; ``server.server_address`` has the port."""
    server = WebhookServer((host, port), loop, secret)
    threading.Thread(target=server.serve_forever, name="webhook-http", daemon=True).start()
    return server


# --------------------------------------------------------------------------------------------
# Wiring: secret, Label Studio registration, Ray round submission
# --------------------------------------------------------------------------------------------


def read_secret(path: str | None) -> str:
    """The shared secret: ``EARTHLOOP_WEBHOOK_SECRET``, or a file only its owner can read.

    Raises:
        ConfigError: no secret, or a file readable by group or others.
    """
    value = os.environ.get("EARTHLOOP_WEBHOOK_SECRET", "").strip()
    path = path or os.environ.get("EARTHLOOP_WEBHOOK_SECRET_PATH")
    if not value and path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"webhook secret file {p} does not exist")
        if p.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(f"webhook secret file {p} is readable by others: chmod 600 it")
        value = p.read_text().strip()
    if len(value) < 16:
        raise ConfigError(
            "no webhook secret (>= 16 characters): set EARTHLOOP_WEBHOOK_SECRET or "
            "--secret-file / EARTHLOOP_WEBHOOK_SECRET_PATH"
        )
    return value


def register_webhook(client: LabelStudio, project_id: int, url: str, secret: str) -> int:
    """Make Label Studio call ``url`` with the secret header on annotation saves (idempotent).

    An existing webhook of the project with the same URL is updated (the secret may have
    changed), never duplicated.
    """
    body = {
        "project": project_id,
        "url": url,
        "send_payload": True,
        "send_for_all_actions": False,
        "actions": list(ACTIONS),
        "headers": {SECRET_HEADER: secret},
        "is_active": True,
    }
    hooks = client.request("GET", "/api/webhooks/", params={"project": project_id}) or []
    same = [h for h in hooks if h.get("url") == url]
    if same:
        hook = client.request("PATCH", f"/api/webhooks/{same[0]['id']}/", json=body)
    else:
        hook = client.request("POST", "/api/webhooks/", json=body)
    return int(hook["id"])


def ray_round_submitter(
    cfg_args: list[str], address: str, env: dict[str, str]
) -> tuple[Callable[[], str], Callable[[str], bool]]:
    """``(submit, running)`` for rounds as Ray jobs running ``jobs/active_learning.py``."""
    from ray.job_submission import JobStatus, JobSubmissionClient  # heavy: only when used

    root = Path(__file__).resolve().parents[1]
    jobs = JobSubmissionClient(address)

    def submit() -> str:
        entry = " ".join(["python", "jobs/active_learning.py", *map(shlex.quote, cfg_args)])
        return str(
            jobs.submit_job(
                entrypoint=entry,
                runtime_env={"working_dir": str(root), "env_vars": env},
            )
        )

    def running(job_id: str) -> bool:
        return jobs.get_job_status(job_id) in (JobStatus.PENDING, JobStatus.RUNNING)

    return submit, running


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False, prog="labeling/webhook.py")
    p.add_argument("--init", default=None, help="task model init naming the project (seco)")
    p.add_argument("--model-version", default=None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8095)
    p.add_argument("--metrics-port", type=int, default=9108)
    p.add_argument("--secret-file", default=None)
    p.add_argument("--reconcile-s", type=float, default=60.0)
    p.add_argument("--round-every", type=int, default=20, help="new labels per round (0: off)")
    p.add_argument("--register", default=None, help="URL Label Studio should call")
    return p


def _round_env() -> dict[str, str]:
    keys: tuple[str, ...] = ("EARTHLOOP_ROOT", "RAY_AUTH_MODE", "GDAL_CACHEMAX")
    keys += ("LABEL_STUDIO_URL", "LABEL_STUDIO_TOKEN_PATH", "LS_FILES_ROOT")  # paths, no token
    return {k: os.environ[k] for k in keys if os.environ.get(k)}


def build(
    ns: argparse.Namespace, cfg: EarthloopConfig, rest: list[str], backend: PrometheusBackend
) -> LabelLoop:
    """The loop for the configured project, with Ray round submission when asked for."""
    client = LabelStudio(Connection.from_env())
    spec = loop_project(cfg, model_version=ns.model_version, init=ns.init)
    metrics = LabelMetrics("label", backend=backend)
    submit = running = None
    if ns.round_every:
        address = os.environ.get("RAY_ADDRESS_JOBS", "http://127.0.0.1:8265")
        args = [*rest, *(["--init", ns.init] if ns.init else [])]
        args += ["--model-version", ns.model_version] if ns.model_version else []
        submit, running = ray_round_submitter(args, address, _round_env())
    loop = LabelLoop(
        lambda: sync_labels(cfg, spec, client),
        metrics,
        reconcile_s=ns.reconcile_s,
        round_every=ns.round_every,
        submit_round=submit,
        round_running=running,
    )
    if ns.register:
        pid = open_project(client, spec)
        hook = register_webhook(client, pid, ns.register, read_secret(ns.secret_file))
        log.info("Label Studio webhook %d calls %s", hook, ns.register)
    return loop


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    ns, rest = _parser().parse_known_args(args)
    cfg, _ = parse_job_args(rest, "Label Studio webhook → pulls and active-learning rounds.")
    setup_logging()
    try:
        secret = read_secret(ns.secret_file)
        backend = PrometheusBackend()
        loop = build(ns, cfg, rest, backend)
    except (ConfigError, LabelStudioError) as exc:
        return fail("webhook", exc)
    metrics_server = serve_prometheus(backend, ns.metrics_port)
    loop.start()
    loop.request_pull()  # catch up on whatever happened while the service was down
    server = serve(loop, secret, ns.host, ns.port)
    host, port = server.server_address[:2]
    print(
        f"webhook: listening on http://{host!s}:{port}/webhook; metrics on :{metrics_server.port}"
    )
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        loop.stop()
        metrics_server.stop()
    return 0


if __name__ == "__main__":
    exit_process(main())
