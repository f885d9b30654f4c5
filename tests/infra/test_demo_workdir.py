"""infra/local/demo_workdir.py: the demo's workdir follows its data, and re-runs keep it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(config: Path, cwd: Path) -> str:
    res = subprocess.run(
        [sys.executable, str(ROOT / "infra" / "local" / "demo_workdir.py"), str(config)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_new_data_moves_the_old_workdir_aside_and_same_data_keeps_it(tmp_path: Path) -> None:
    data, work = tmp_path / "data", tmp_path / "work"
    data.mkdir()
    (data / "manifest.json").write_text('{"preset": "demo", "seed": 0}')
    config = tmp_path / "demo.yaml"
    config.write_text(f"workdir: {work}\ndata_dir: {data}\n")
    # a workdir left by an older demo: tables, no record of the data they came from
    (work / "tables" / "chips").mkdir(parents=True)
    (work / "tables" / "chips" / "part-0.parquet").write_text("old index")

    first = _run(config, tmp_path)
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("work.stale-")]
    assert len(aside) == 1 and "moved to" in first
    assert (aside[0] / "tables" / "chips" / "part-0.parquet").read_text() == "old index"
    assert not (work / "tables").exists()

    # the demo then builds its tables; a re-run on the same data keeps them
    (work / "tables").mkdir()
    assert "was built from this data" in _run(config, tmp_path)
    assert (work / "tables").exists()

    # regenerated data (another preset): the workdir is moved aside again, nothing deleted
    (data / "manifest.json").write_text('{"preset": "demo_world", "seed": 0}')
    third = _run(config, tmp_path)
    assert "moved to" in third and not (work / "tables").exists()
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("work.stale-")]) == 2
