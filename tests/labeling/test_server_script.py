"""infra/local/labelstudio.sh as the session's server saw it: loopback, idempotent, no secrets out."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path
from typing import Any

import psutil
import pytest

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[2] / "infra" / "local" / "labelstudio.sh"


def _run(server: Any, cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), cmd], env=server.env, capture_output=True, text=True, timeout=120
    )


def test_script_is_idempotent_loopback_and_keeps_secrets_in_0600_files(label_studio: Any) -> None:
    stack = label_studio.stack_dir
    secrets = [
        (stack / n).read_text().strip() for n in ("labelstudio_token", "labelstudio_password")
    ]
    for name in ("labelstudio_token", "labelstudio_password"):
        assert stat.S_IMODE((stack / name).stat().st_mode) == 0o600

    again = _run(label_studio, "up")
    assert again.returncode == 0 and "already up" in again.stdout
    status = _run(label_studio, "status")
    assert status.returncode == 0 and label_studio.url in status.stdout
    assert str(stack / "labelstudio_token") in status.stdout
    env = _run(label_studio, "env")
    assert f"LABEL_STUDIO_TOKEN_PATH={stack / 'labelstudio_token'}" in env.stdout
    printed = again.stdout + again.stderr + status.stdout + env.stdout
    printed += (stack / "labelstudio.log").read_text(errors="replace")
    assert not any(s in printed for s in secrets)

    pid = int((stack / "labelstudio.pid").read_text())
    listening = [
        c.laddr for c in psutil.Process(pid).net_connections(kind="inet") if c.status == "LISTEN"
    ]
    assert listening and all(addr.ip == "127.0.0.1" for addr in listening)
