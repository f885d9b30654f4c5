"""Shared fixtures: real data, real servers and a real two-node Ray cluster.

Anything a test needs but cannot find skips with a reason on a developer's machine and *fails*
under ``CI=true``, so CI can never go green by silently skipping.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (ROOT / ".." / "shared" / "data").resolve()
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

# One Ray auth mode and one token everywhere (see infra/local/env.sh): pytest run by hand, without
# `make test`, still gets the project's token file rather than whatever ~/.ray holds.
os.environ.setdefault("RAY_AUTH_MODE", "token")
if not os.environ.get("RAY_AUTH_TOKEN") and not os.environ.get("RAY_AUTH_TOKEN_PATH"):
    _env = subprocess.run(
        ["bash", "-c", 'source infra/local/env.sh >/dev/null && printf %s "$RAY_AUTH_TOKEN_PATH"'],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    os.environ["RAY_AUTH_TOKEN_PATH"] = _env.stdout
os.environ.setdefault("GDAL_CACHEMAX", "64")
RAY_HEAD = f"{os.environ.get('RAY_HEAD_IP', '127.0.0.2')}:{os.environ.get('RAY_GCS_PORT', '6390')}"


def missing(reason: str) -> None:
    """Skip locally, fail in CI: a missing prerequisite must never pass silently there."""
    if IN_CI:
        pytest.fail(f"CI=true and a test prerequisite is missing: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        missing(f"real Sentinel-2 data folder {SHARED_DATA} is absent")
    return SHARED_DATA


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, timeout: float = 20.0) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=1).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


@pytest.fixture(scope="session")
def rustac_bin() -> str:
    path = ROOT / ".venv-stac" / "bin" / "rustac"
    if not path.exists():
        found = shutil.which("rustac")
        if not found:
            missing("rustac (STAC API server) not installed; run infra/local/setup.sh")
        return str(found)
    return str(path)


StacFactory = Callable[[Path], str]


@pytest.fixture
def stac_server(rustac_bin: str, tmp_path: Path) -> Iterator[StacFactory]:
    """Start a real STAC API (rustac, in-memory backend) over a collection + items.ndjson."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(folder: Path) -> str:
        port = free_port()
        log = open(tmp_path / f"rustac-{port}.log", "wb")  # noqa: SIM115 (outlives this call)
        p = subprocess.Popen(
            [
                rustac_bin,
                "serve",
                "--addr",
                f"127.0.0.1:{port}",
                str(folder / "collection.json"),
                str(folder / "items.ndjson"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        procs.append(p)
        url = f"http://127.0.0.1:{port}"
        _wait_http(url + "/")
        return url

    yield start
    for p in procs:
        p.terminate()
        p.wait(timeout=10)


def _ray_up() -> bool:
    import ray

    host, port = RAY_HEAD.rsplit(":", 1)
    try:  # ray.init retries an absent GCS for minutes; a refused TCP connect answers at once
        socket.create_connection((host, int(port)), timeout=2).close()
    except OSError:
        return False
    try:
        ray.init(address=RAY_HEAD, logging_level="ERROR", log_to_driver=False)
    except Exception:
        return False
    return True


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """The local two-node Ray cluster (started by infra/local/ray.sh if not running)."""
    import ray

    started = False
    if not _ray_up():
        script = ROOT / "infra" / "local" / "ray.sh"
        res = subprocess.run([str(script), "up"], capture_output=True, text=True, timeout=300)
        if res.returncode != 0:
            missing(
                f"could not start the local Ray cluster: {res.stdout[-2000:]}{res.stderr[-2000:]}"
            )
        started = True
        if not _ray_up():
            missing("the local Ray cluster started but refuses connections")
    alive = [n for n in ray.nodes() if n["Alive"]]
    if len(alive) < 2:
        missing(f"the local Ray cluster has {len(alive)} node(s); two are needed")
    yield RAY_HEAD
    ray.shutdown()
    if started and os.environ.get("EARTHLOOP_KEEP_RAY") != "1":
        subprocess.run([str(ROOT / "infra" / "local" / "ray.sh"), "down"], timeout=120)


@pytest.fixture(scope="session")
def synthetic_demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The demo preset, generated once per session and ingested through its static catalog.

    Returns the overrides that point a config at it, the manifest, and the chip table URI.
    """
    from earthloop.config import load_config
    from earthloop.ingest.pipeline import run_ingest
    from earthloop.synth import generate

    root = tmp_path_factory.mktemp("synthetic")
    manifest = generate(root / "data", preset="demo", seed=0)
    overrides = [
        f"workdir={root / 'work'}",
        f"data_dir={root / 'data'}",
        f"stac.url={manifest.catalog_path}",
        f"pretrain.probe.labels={manifest.root / 'manifest.json'}",
        # the tests' index stays small: 4 tiles of 5 km, not the demo's 1200 locations x 6 dates
        "ingest.num_locations=400",
        "ingest.dates_per_location=4",
        "pretrain.queue_size=64",
    ]
    cfg = load_config(None, overrides)
    report = run_ingest(cfg)
    assert report.chips > 100, report.summary()
    return {
        "overrides": overrides,
        "manifest": manifest,
        "chips": cfg.table_uri("chips"),
        "workdir": root / "work",
    }


S3_TEST_BUCKET = "earthloop-test"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real S3 API on loopback: moto's server, one request at a time (infra/local/s3.sh).

    Yields the endpoint URL; the bucket ``S3_TEST_BUCKET`` exists. Objects live in memory.
    """
    import requests

    py = ROOT / ".venv-s3" / "bin" / "python"
    if not py.exists():
        missing(f"moto (the local S3 server) not installed in {py.parent.parent}; run setup.sh")
    port = free_port()
    log = open(tmp_path_factory.mktemp("s3") / "moto.log", "wb")  # noqa: SIM115 (server's life)
    proc = subprocess.Popen(
        [str(py), str(ROOT / "infra" / "local" / "moto_serial.py"), "127.0.0.1", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(url + "/")
        requests.put(f"{url}/{S3_TEST_BUCKET}", timeout=10).raise_for_status()
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


@pytest.fixture
def s3_root(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh ``s3://`` prefix on the local server, with the client environment pointing there.

    Dummy credentials (moto accepts any); subprocesses started by the test inherit them.
    """
    import uuid

    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_ALLOW_HTTP", "true")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "earthloop-test-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "earthloop-test-secret")
    return f"s3://{S3_TEST_BUCKET}/{uuid.uuid4().hex[:12]}"
