"""A real Label Studio for the labeling tests, started once per session by the project's script.

The fixture runs ``infra/local/labelstudio.sh up`` with a temporary ``STACK_DIR`` (data dir,
credentials), a free port and a temporary local-files root, so the tests exercise the same
start-up path as ``make demo`` (secret files, loopback bind, analytics off) and never touch the
developer's own Label Studio. The first start runs the migrations (~40 s, more on a busy
machine). Without ``.venv-ls`` the tests skip locally and fail under ``CI=true``.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from earthloop.labelstudio.client import Connection, LabelStudio

ROOT = Path(__file__).resolve().parents[2]
LS_VENV = ROOT / ".venv-ls"
SCRIPT = ROOT / "infra" / "local" / "labelstudio.sh"


def root_missing(config: pytest.Config) -> Callable[[str], None]:
    """tests/conftest.py's ``missing`` (skip locally, fail in CI), as pytest loaded it.

    Imported through the plugin manager: ``from conftest import missing`` here would import this
    file again (pytest puts each conftest's own folder first on ``sys.path``).
    """
    root = str(ROOT / "tests" / "conftest.py")
    for plugin in config.pluginmanager.get_plugins():
        if getattr(plugin, "__file__", None) == root:
            found: Callable[[str], None] = plugin.missing
            return found
    raise RuntimeError("tests/conftest.py is not loaded")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class LabelStudioServer:
    url: str
    token_path: Path
    files_root: Path  # the local-files document root the server was started with
    stack_dir: Path
    env: dict[str, str]  # the environment labelstudio.sh ran with (STACK_DIR, LS_PORT...)

    def client(self) -> LabelStudio:
        return LabelStudio(Connection(self.url, self.token_path.read_text().strip()))

    def ui_session(self) -> requests.Session:
        """A logged-in browser-like session (local files are served to UI sessions only)."""
        http = requests.Session()
        http.get(f"{self.url}/user/login/", timeout=30)
        form = {
            "email": "admin@earthloop.local",
            "password": (self.stack_dir / "labelstudio_password").read_text().strip(),
            "csrfmiddlewaretoken": http.cookies.get("csrftoken", ""),
        }
        resp = http.post(
            f"{self.url}/user/login/", data=form, headers={"Referer": self.url}, timeout=30
        )
        assert resp.ok and not resp.url.endswith("/user/login/"), "UI login failed"
        return http


@pytest.fixture(scope="session")
def ls_venv(request: pytest.FixtureRequest) -> Path:
    if not (LS_VENV / "bin" / "label-studio").exists():
        root_missing(request.config)(f"Label Studio is not installed in {LS_VENV}; run setup.sh")
    return LS_VENV


@pytest.fixture(scope="session")
def label_studio(
    ls_venv: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LabelStudioServer]:
    """One Label Studio for the session on a free loopback port, torn down at the end."""
    base = tmp_path_factory.mktemp("label-studio")
    env = {
        **os.environ,
        "STACK_DIR": str(base / "stack"),
        "LS_PORT": str(_free_port()),
        "LS_FILES_ROOT": str(base / "files"),
        "LS_VENV": str(ls_venv),
    }

    def script(cmd: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SCRIPT), cmd], env=env, capture_output=True, text=True, timeout=300
        )

    up = script("up")
    assert up.returncode == 0, f"labelstudio.sh up failed:\n{up.stdout}\n{up.stderr}"
    server = LabelStudioServer(
        url=f"http://127.0.0.1:{env['LS_PORT']}",
        token_path=base / "stack" / "labelstudio_token",
        files_root=base / "files",
        stack_dir=base / "stack",
        env=env,
    )
    try:
        yield server
    finally:
        script("down")
