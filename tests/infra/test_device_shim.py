"""benchmarks/device_shim.py: placeholders for the storage stack on a compute-only machine.

A placeholder must let earthloop's modules import and must fail loudly when used, and it must
never shadow a package that is installed (unless forced, which is how the bundle path is
tested here). Each case runs in a fresh interpreter: the hook is process-wide.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    prelude = (
        f"import sys; sys.path[:0] = [{str(ROOT / 'benchmarks')!r}, {str(ROOT / 'platform')!r}]; "
        "import device_shim; print(device_shim.install())\n"
    )
    return subprocess.run(
        [sys.executable, "-c", prelude + code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_installed_packages_are_never_shadowed() -> None:
    p = _run("import rasterio, deltalake; print(rasterio.__version__, callable(rasterio.open))")
    assert p.returncode == 0, p.stderr
    first, second = p.stdout.splitlines()[:2]
    # packages absent from this venv may be placeholdered; the storage stack here is real
    assert "rasterio" not in first and "deltalake" not in first
    assert second.split()[-1] == "True"


def test_forced_placeholders_import_earthloop_and_fail_when_used() -> None:
    code = (
        "import earthloop.finetune.sweep, earthloop.pretrain.local, earthloop.store.delta\n"
        "import rasterio\n"
        "try:\n"
        "    rasterio.open('x.tif')\n"
        "except ModuleNotFoundError as e:\n"
        "    print('RAISED', e)\n"
    )
    p = _run(code, EARTHLOOP_SHIM_FORCE="1")
    assert p.returncode == 0, p.stderr
    assert "rasterio" in p.stdout.splitlines()[0]
    assert "RAISED rasterio.open: its package is not installed" in p.stdout
