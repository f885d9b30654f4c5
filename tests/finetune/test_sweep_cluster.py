"""Tiny sweeps on the real two-node Ray cluster: rows, report, PNGs, and restore after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from earthloop.checkpoints import CheckpointError, candidate, load_candidate
from earthloop.config import load_config
from earthloop.models import build_backbone, save_backbone
from earthloop.store.delta import table_version
from pyarrow.fs import LocalFileSystem

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BANDS = ["B02", "B03", "B04", "B08"]


def _backbone(path: Path) -> Path:
    """A resnet_tiny export standing in for a pretraining run (plumbing, not quality)."""
    return save_backbone(
        path,
        build_backbone("resnet_tiny", 4),
        arch="resnet_tiny",
        bands=BANDS,
        mean=[0.07, 0.1, 0.1, 0.28],
        std=[0.03, 0.03, 0.05, 0.09],
        method="seco",
    )


def _rows(uri: str, sweep: str) -> list[dict[str, Any]]:
    from earthloop.store.delta import read_table, table_exists

    if not table_exists(uri):
        return []
    return [r for r in read_table(uri).to_pylist() if r["sweep"] == sweep]


def _is_png(path: str) -> bool:
    with open(path, "rb") as fh:
        return fh.read(8) == b"\x89PNG\r\n\x1a\n" and os.path.getsize(path) > 5000


def test_tiny_sweep_writes_rows_report_and_pngs(
    ray_cluster: str, tiny_data: Any, tmp_path: Path
) -> None:
    from earthloop.finetune.sweep import run_sweep

    ckpt = _backbone(tmp_path / "seco.pt")
    over = tiny_data.overrides(
        tmp_path,
        name="tiny",
        fractions=[0.5, 1.0],
        seeds=[0],
        max_steps=6,
        eval_every=3,
        inits=[{"name": "random"}, {"name": "seco", "path": str(ckpt)}],
    )
    over.append("finetune.resources.max_concurrent_trials=2")
    cfg = load_config(None, over)
    t0 = time.monotonic()
    res = run_sweep(cfg)
    elapsed = time.monotonic() - t0
    assert (res.trials, res.errors, res.restored) == (4, 0, False)
    rows = _rows(cfg.table_uri("finetune_trials"), "tiny")
    assert len(rows) == 4
    by = {(r["init"], r["fraction"]): r for r in rows}
    assert set(by) == {("random", 0.5), ("random", 1.0), ("seco", 0.5), ("seco", 1.0)}
    for r in rows:
        assert r["status"] == "finished" and r["steps"] == 6 and r["iterations"] == 2
        # the version the ingest left (0 is the empty table its race-free create commits)
        assert r["chips_table_version"] == table_version(cfg.table_uri("chips"))
        assert r["chips_table"].endswith("tables/chips")
        assert 0.0 <= r["test_metric"] <= 1.0 and r["metric"] == "miou"
        assert r["selected"]  # one sample per cell
        assert os.path.isdir(r["checkpoint"]), r["checkpoint"]
        assert json.loads(r["config"])["init"] == r["init"]
        assert r["n_labelled"] == len(r["label_chip_ids"])
    # same seed: the 50 % labels are inside the 100 % labels, for both inits
    assert set(by[("random", 0.5)]["label_chip_ids"]) < set(by[("random", 1.0)]["label_chip_ids"])
    assert by[("random", 0.5)]["label_set_id"] == by[("seco", 0.5)]["label_set_id"]
    assert by[("seco", 0.5)]["init_path"] == str(ckpt)
    text = Path(res.report).read_text()
    assert "Gain over random initialisation" in text and "| seco |" in text
    assert sorted(Path(p).name for p in res.plots) == [
        "gain_over_random.png",
        "metric_vs_fraction.png",
    ]
    assert all(_is_png(p) for p in res.plots)
    print(f"tiny sweep: 4 trials in {elapsed:.0f}s")


def _meta_step(meta: Path) -> int:
    """The step a checkpoint's meta.json names; 0 while it is still being copied."""
    try:
        return int(json.loads(meta.read_text())["step"])
    except (OSError, ValueError, KeyError):
        return 0


def _attempts(exp: Path) -> dict[str, list[dict[str, Any]]]:
    d = exp / "attempts"
    return (
        {f.stem: [json.loads(x) for x in f.read_text().splitlines()] for f in d.glob("*.log")}
        if d.is_dir()
        else {}
    )


def _loadable_step(checkpoint: Path) -> int:
    """The step a checkpoint directory holds when its state loads, else 0 (not resumable)."""
    c = candidate(LocalFileSystem(), str(checkpoint))
    try:
        load_candidate(c)
    except CheckpointError:
        return 0
    return max(c.step, 0)


def test_restore_after_kill_finishes_only_the_remaining_trials(
    ray_cluster: str, tiny_data: Any, tmp_path: Path
) -> None:
    ckpt = _backbone(tmp_path / "seco.pt")
    over = tiny_data.overrides(
        tmp_path,
        name="killed",
        fractions=[0.5, 1.0],
        seeds=[0],
        max_steps=16,
        eval_every=2,
        inits=[{"name": "random"}, {"name": "seco", "path": str(ckpt)}],
    )
    raw: dict[str, Any] = {}
    for item in over:  # the same overrides as a YAML file, as a user would write it
        key, _, value = item.partition("=")
        node = raw
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = yaml.safe_load(value)
    raw["finetune"]["resources"] = {"cpu": 1, "max_concurrent_trials": 1}
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(raw))
    cfg = load_config(str(config))
    env = {
        **os.environ,
        "RAY_ADDRESS": ray_cluster,
        "RAY_AUTH_MODE": "token",
        # Tune's default experiment-state sync (it lags the trials: the trial itself must find
        # its newest checkpoint, which is what this test checks)
        "PYTHONUNBUFFERED": "1",
    }
    cmd = [sys.executable, str(ROOT / "jobs" / "finetune.py"), "--config", str(config)]
    uri = cfg.table_uri("finetune_trials")
    exp = Path(cfg.path("ray_results", "killed"))

    log1 = open(tmp_path / "run1.log", "wb")  # noqa: SIM115 - must outlive the kill below
    proc = subprocess.Popen(
        cmd, stdout=log1, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    deadline = time.monotonic() + 240
    while len(_rows(uri, "killed")) < 2:
        assert proc.poll() is None, (tmp_path / "run1.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "two trials did not finish in time"
        time.sleep(0.5)

    # kill while a third trial is mid-way: after its first checkpoint, before its end
    def third_running() -> bool:
        # a trial not yet finished whose checkpoint is complete (meta.json written last) and
        # at most half-way: killing now leaves it something to resume from, and at least eight
        # steps of slack so that it cannot finish between this check and the kill (it did, once
        # in CI, when the kill waited a second after a step-14 checkpoint)
        done_ids = {r["trial_id"] for r in _rows(uri, "killed")}
        return len(done_ids) < 4 and any(
            0 < _meta_step(m) <= 8
            for d in exp.iterdir()
            if d.is_dir() and "-f" in d.name and d.name.rsplit("-", 1)[-1] not in done_ids
            for m in d.glob("checkpoint_*/meta.json")
        )

    while time.monotonic() < deadline and len(_rows(uri, "killed")) < 4 and not third_running():
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and anything it started, nothing else
    proc.wait(timeout=30)
    done_before = {r["trial_id"]: r for r in _rows(uri, "killed")}
    assert 2 <= len(done_before) < 4, "the kill came too late to leave work for the restore"
    time.sleep(3)  # the trial actors die with the driver; then the disk is what the restore sees
    # the newest checkpoint of each interrupted trial that *loads*: Tune copies a checkpoint's
    # files in no set order, so a kill mid-copy can leave meta.json beside a cut state.pt (seen
    # in CI: state.pt stopped at 4 MiB of 6.2). The trial must skip such a one, not resume it.
    on_disk = {
        d.name.rsplit("-", 1)[-1]: max(
            (_loadable_step(c) for c in d.glob("checkpoint_*")),
            default=0,
        )
        for d in exp.iterdir()
        if d.is_dir() and d.name.rsplit("-", 1)[-1] not in done_before and "-f" in d.name
    }

    run2 = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert run2.returncode == 0, run2.stdout[-3000:] + run2.stderr[-3000:]
    assert "(restored)" in run2.stdout

    rows = {r["trial_id"]: r for r in _rows(uri, "killed")}
    assert len(rows) == 4 and all(r["status"] == "finished" for r in rows.values())
    assert set(done_before) < set(rows)  # the same trials, none replaced by new ones
    attempts = _attempts(exp)
    for tid, before in done_before.items():
        # finished before the kill: trained exactly once. (Tune may restore it as running when
        # its experiment state had not caught up; the trial then reports its final result
        # again without training: a "skipped" attempt.)
        trained = [a for a in attempts[tid] if not a.get("skipped")]
        assert len(trained) == 1, (tid, attempts[tid])
        after = rows[tid]
        assert after["iterations"] == 8 and after["steps"] == 16
        assert after["test_metric"] == before["test_metric"]
        assert after["best_val_metric"] == before["best_val_metric"]
    remaining = set(rows) - set(done_before)
    for tid in remaining:
        assert rows[tid]["iterations"] == 8 and rows[tid]["steps"] == 16
    # a trial interrupted mid-way resumes from a checkpoint (an evaluation boundary), never
    # past its end; which step depends on when the kill landed
    resumed = {
        tid: a[-1]["resumed_step"]
        for tid in remaining
        for a in [attempts[tid]]
        if len(a) > 1 and "resumed_step" in a[-1]
    }
    assert all(s % 2 == 0 and 0 <= s < 16 for s in resumed.values()), attempts
    # an interrupted trial continues from the newest checkpoint it had written, even when Tune's
    # synced experiment state did not know it yet (it restarted from step 0 before)
    interrupted = {t: s for t, s in on_disk.items() if 0 < s < 16}
    assert interrupted, (on_disk, attempts)
    assert {t: resumed.get(t) for t in interrupted} == interrupted, (on_disk, attempts)
    skipped = sum(1 for tid in done_before for a in attempts[tid] if a.get("skipped"))
    print(
        f"restore: {len(done_before)} trials kept ({skipped} re-reported without training), "
        f"{len(remaining)} finished after restore, resumed at steps {resumed} "
        f"(newest on disk at the kill: {on_disk})"
    )
