"""A credential in a URL never reaches a log line, an error message or a table (issue 8 §5).

Run for real: the ingest job as a subprocess against a real STAC API, with a password planted in
``stac.url``; then every byte the run left behind (its output, every file of every table) is
searched for it.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
StacFactory = Callable[[Path], str]

pytestmark = pytest.mark.integration

SECRET = "Planted-Pw-7f3a9c"


def _run_ingest(overrides: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "jobs" / "ingest.py"), *overrides, "ray.address=null"],
        capture_output=True,
        text=True,
        timeout=300,
    )


def _files_containing(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_password_in_stac_url_is_never_logged_or_stored(
    synthetic_demo: dict[str, object], stac_server: StacFactory, tmp_path: Path
) -> None:
    manifest = synthetic_demo["manifest"]
    url = stac_server(manifest.root)  # type: ignore[attr-defined]
    secret_url = url.replace("http://", f"http://earthuser:{SECRET}@")
    workdir = tmp_path / "work"
    base = [o for o in synthetic_demo["overrides"] if not str(o).startswith(("workdir=", "stac."))]  # type: ignore[attr-defined]
    res = _run_ingest([*base, f"workdir={workdir}", f"stac.url={secret_url}"])
    assert res.returncode == 0, res.stderr[-3000:]
    output = res.stdout + res.stderr
    assert "chips table" in res.stdout  # the run really happened
    assert SECRET not in output
    assert (workdir / "tables" / "ingest_runs").is_dir()
    assert _files_containing(workdir, SECRET.encode()) == []
    # the run row still says where the scenes came from, with the password masked
    from earthloop.store.delta import read_table

    runs = read_table(str(workdir / "tables" / "ingest_runs")).to_pylist()
    assert runs[-1]["source"] == url.replace("http://", "http://earthuser:***@")

    # an unreachable server: the error line names the server, not the password
    res = _run_ingest(
        [
            *base,
            f"workdir={tmp_path / 'w2'}",
            "stac.max_retries=0",
            "stac.timeout_s=2",
            f"stac.url=http://earthuser:{SECRET}@127.0.0.1:9/",
        ]
    )
    assert res.returncode != 0
    assert "earthuser:***@127.0.0.1:9" in res.stderr
    assert SECRET not in res.stdout + res.stderr
