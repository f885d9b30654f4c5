"""The local stack as a user runs it: `stack.sh up` heals, `status` names each part, and what
listens beyond loopback is exactly what docs/deployment.md says (issue 8 §1, §4, §5).

These tests kill and restart the worker node of the shared local cluster; they run serially with
the other cluster tests (pytest runs one test at a time).
"""

from __future__ import annotations

import ipaddress
import os
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "infra" / "local" / "stack.sh"
WORKER_TEMP = os.environ.get("RAY_WORKER_TEMP_DIR", "/tmp/ray-worker")

# Ray 2.60 binds these on every interface whatever the node IP (its C++ gRPC servers, and the
# Python metrics exporters, use loopback only for a node IP of exactly 127.0.0.1, which Ray
# replaces by the eth0 address). docs/deployment.md § "What listens" explains each one.
RAY_ALL_INTERFACES = {"gcs_server", "raylet", "python3", "python"}  # + ray::* worker processes


def _stack(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(STACK), *args], capture_output=True, text=True, timeout=300, env=env
    )


def _worker_raylet() -> psutil.Process | None:
    for p in psutil.process_iter(["name", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if p.info["name"] == "raylet" and f"{WORKER_TEMP}/" in cmd:
            return p
    return None


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _private_stack(tmp_path: Path, *, with_services: bool) -> dict[str, str]:
    """Private ports and state dir for everything but Ray (the shared cluster, the project's
    token); without services, S3 and Label Studio count as not installed."""
    env = {
        **os.environ,
        "STACK_DIR": str(tmp_path / "stack"),
        "STAC_PORT": str(_free_port()),
        "S3_PORT": str(_free_port()),
        "LS_PORT": str(_free_port()),
        "LS_FILES_ROOT": str(tmp_path / "files"),
    }
    if not with_services:
        env["S3_VENV"] = env["LS_VENV"] = str(tmp_path / "not-installed")
    assert env.get("RAY_AUTH_TOKEN_PATH") or env.get("RAY_AUTH_TOKEN")  # set by conftest
    return env


def _stop_services(env: dict[str, str]) -> None:
    for script in ("stac.sh", "s3.sh", "labelstudio.sh"):
        subprocess.run(
            ["bash", str(ROOT / "infra" / "local" / script), "down"],
            env=env,
            timeout=120,
            capture_output=True,
        )


@pytest.fixture
def stack_env(ray_cluster: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    """Ray and STAC only: what the healing test kills and restarts."""
    env = _private_stack(tmp_path, with_services=False)
    yield env
    _stop_services(env)


@pytest.fixture
def full_stack_env(ray_cluster: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    """Every part of the stack, S3 and Label Studio included, on private ports."""
    env = _private_stack(tmp_path, with_services=True)
    yield env
    _stop_services(env)


def _up(env: dict[str, str], data: Path) -> subprocess.CompletedProcess[str]:
    res = _stack("up", str(data), env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    return res


def test_stack_up_brings_back_a_lost_worker_and_leaves_stac_running(
    stack_env: dict[str, str], synthetic_demo: dict[str, object]
) -> None:
    data = synthetic_demo["manifest"].root  # type: ignore[attr-defined]
    _up(stack_env, data)
    pidfile = Path(stack_env["STACK_DIR"]) / "stac.pid"
    stac_pid = int(pidfile.read_text())
    st = _stack("status", env=stack_env)
    assert st.returncode == 0, st.stdout
    assert "ray head (127.0.0.2): up" in st.stdout and "ray worker (127.0.0.3): up" in st.stdout
    assert "stac: up" in st.stdout

    raylet = _worker_raylet()
    assert raylet is not None, "no worker raylet found"
    raylet.send_signal(signal.SIGKILL)
    raylet.wait(timeout=30)
    st = _stack("status", env=stack_env)
    assert st.returncode != 0 and "ray worker (127.0.0.3): down" in st.stdout, st.stdout

    res = _up(stack_env, data)
    assert "worker 127.0.0.3 missing: starting it" in res.stdout
    assert "stac: already serving" in res.stdout
    assert int(pidfile.read_text()) == stac_pid and psutil.pid_exists(stac_pid)
    st = _stack("status", env=stack_env)
    assert st.returncode == 0 and "ray worker (127.0.0.3): up" in st.stdout, st.stdout

    import ray

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        alive = {n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}
        if {"127.0.0.2", "127.0.0.3"} <= alive:
            break
        time.sleep(1)
    assert {"127.0.0.2", "127.0.0.3"} <= alive


def _is_loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def _stack_listeners(stac_pid: int) -> list[tuple[str, int, str, int]]:
    """(ip, port, process name, pid) of every TCP listener of a Ray or STAC process."""
    out = []
    for c in psutil.net_connections(kind="tcp"):
        if c.status != psutil.CONN_LISTEN or c.pid is None:
            continue
        try:
            proc = psutil.Process(c.pid)
            name, cmd = proc.name(), " ".join(proc.cmdline())
        except psutil.NoSuchProcess:
            continue
        if c.pid == stac_pid or "ray" in cmd or name.startswith("ray::"):
            out.append((c.laddr.ip, c.laddr.port, name, c.pid))
    return out


def test_what_listens_beyond_loopback_is_only_what_the_docs_name(
    full_stack_env: dict[str, str], synthetic_demo: dict[str, object]
) -> None:
    stack_env = full_stack_env
    _up(stack_env, synthetic_demo["manifest"].root)  # type: ignore[attr-defined]
    stac_pid = int((Path(stack_env["STACK_DIR"]) / "stac.pid").read_text())
    listeners = _stack_listeners(stac_pid)
    dash_port = int(os.environ.get("RAY_DASHBOARD_PORT", "8265"))
    by_port = {port: (ip, name, pid) for ip, port, name, pid in listeners}
    # what a user talks to is on loopback only
    assert _is_loopback(by_port[dash_port][0]), by_port[dash_port]
    stac_port = int(stack_env["STAC_PORT"])
    assert by_port[stac_port][2] == stac_pid and _is_loopback(by_port[stac_port][0])
    # the S3 stand-in and Label Studio: listening, and on loopback only
    for port_var in ("S3_PORT", "LS_PORT"):
        port = int(stack_env[port_var])
        addrs = [
            c.laddr.ip
            for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port
        ]
        assert addrs and all(_is_loopback(a) for a in addrs), (port_var, addrs)
    exposed = [(ip, port, name) for ip, port, name, pid in listeners if not _is_loopback(ip)]
    assert exposed, "Ray binds nothing beyond loopback any more: update docs/deployment.md"
    for ip, port, name in exposed:
        assert name in RAY_ALL_INTERFACES or name.startswith("ray::"), (ip, port, name)
        assert port not in {dash_port, stac_port}
    # the documented threat model: the job API refuses a request without the token
    url = f"http://127.0.0.1:{dash_port}/api/jobs/"
    assert requests.get(url, timeout=10).status_code == 401
    token_file = os.environ.get("RAY_AUTH_TOKEN_PATH")
    token = os.environ.get("RAY_AUTH_TOKEN") or Path(str(token_file)).read_text().strip()
    ok = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert ok.status_code == 200


def test_token_is_project_local_private_and_never_printed(tmp_path: Path) -> None:
    env = {**os.environ, "STACK_DIR": str(tmp_path / "stack"), "HOME": str(tmp_path / "home")}
    env.pop("RAY_AUTH_TOKEN_PATH", None)
    env.pop("RAY_AUTH_TOKEN", None)
    out = subprocess.run(
        ["bash", "-c", 'source infra/local/env.sh && printf "%s" "$RAY_AUTH_TOKEN_PATH"'],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    token_file = Path(out.stdout)
    assert token_file == tmp_path / "stack" / "ray_auth_token"
    token = token_file.read_text()
    assert len(token) == 64 and int(token, 16) >= 0
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert token not in out.stdout + out.stderr
    # sourcing again keeps the token (a new one would lock out a running cluster)
    subprocess.run(["bash", "-c", "source infra/local/env.sh"], cwd=ROOT, env=env, check=True)
    assert token_file.read_text() == token
    assert not (tmp_path / "home" / ".ray").exists()
