"""Pretraining as users run it: `ray job submit -- python jobs/pretrain.py` on two nodes."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from earthloop.models import load_backbone
from earthloop.store.delta import read_table, table_version

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
JOBS = f"http://127.0.0.1:{os.environ.get('RAY_DASHBOARD_PORT', '8265')}"


def _overrides(demo: dict, run: str, *extra: str) -> list[str]:
    return [
        *demo["overrides"],
        f"pretrain.run_name={run}",
        "pretrain.backbone=resnet_tiny",
        "pretrain.batch_size=8",
        "pretrain.queue_size=64",
        "pretrain.probe.chips=40",
        "pretrain.log_every_s=2",
        "ray.cpus_per_worker=0.5",
        *extra,
    ]


def _runtime_env() -> str:
    return json.dumps({"env_vars": {"RAY_AUTH_MODE": "token", "EARTHLOOP_ROOT": str(ROOT)}})


def _run_row(demo: dict, run: str) -> dict:
    rows = read_table(str(demo["workdir"] / "tables" / "pretrain_runs")).to_pylist()
    return next(r for r in rows if r["run_name"] == run)


def test_ray_job_submit_pretrains_on_two_workers(ray_cluster: str, synthetic_demo: dict) -> None:
    run = f"t-{uuid.uuid4().hex[:8]}"
    cmd = [
        str(ROOT / ".venv" / "bin" / "ray"),
        "job",
        "submit",
        "--address",
        JOBS,
        "--working-dir",
        str(ROOT),
        "--runtime-env-json",
        _runtime_env(),
        "--",
        "python",
        "jobs/pretrain.py",
        *_overrides(
            synthetic_demo,
            run,
            "pretrain.max_steps=4",
            "pretrain.checkpoint_every=2",
            "pretrain.epochs=1",
        ),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    assert "world_size=2" in res.stdout + res.stderr  # a real 2-rank DDP group (worker log)
    row = _run_row(synthetic_demo, run)
    assert row["world_size"] == 2
    assert row["status"] == "finished" and row["final_step"] == 4
    # the version the ingest left (0 is the empty table its race-free create commits)
    assert row["chips_table_version"] == table_version(str(synthetic_demo["chips"]))
    assert row["chips_table"].endswith("tables/chips")
    assert Path(row["checkpoint"]).is_dir()
    backbone, meta = load_backbone(
        row["backbone_path"], expected_bands=["blue", "green", "red", "nir"]
    )
    assert meta["method"] == "seco" and len(meta["mean"]) == 4
    metrics = read_table(str(synthetic_demo["workdir"] / "tables" / "pretrain_metrics")).to_pylist()
    mine = [m for m in metrics if m["run_name"] == run]
    assert len(mine) == 1 and 0 <= mine[0]["knn_accuracy"] <= 1


def _registered_checkpoints(run_dir: Path) -> int:
    snap = run_dir / "checkpoint_manager_snapshot.json"
    try:
        return len(json.loads(snap.read_text()).get("checkpoint_results", []))
    except (FileNotFoundError, json.JSONDecodeError):  # not written yet, or mid-write
        return 0


def test_killed_worker_resumes_from_checkpoint(ray_cluster: str, synthetic_demo: dict) -> None:
    from ray.job_submission import JobStatus, JobSubmissionClient
    from ray.util.state import list_actors

    run = f"k-{uuid.uuid4().hex[:8]}"
    max_steps = 36
    client = JobSubmissionClient(JOBS)
    entry = " ".join(
        [
            "python jobs/pretrain.py",
            *_overrides(
                synthetic_demo,
                run,
                f"pretrain.max_steps={max_steps}",
                "pretrain.checkpoint_every=4",
                "pretrain.epochs=100",
                "pretrain.max_failures=2",
            ),
        ]
    )
    job = client.submit_job(
        entrypoint=entry,
        runtime_env={"working_dir": str(ROOT), **json.loads(_runtime_env())},
    )
    ckpt_root = synthetic_demo["workdir"] / "ray_results" / run
    deadline = time.monotonic() + 400
    # A checkpoint directory on disk is not yet a checkpoint Ray resumes from: the controller
    # registers it only when it next polls every rank's report, and a worker killed before that
    # takes the report with it (seen here: two checkpoints written 0.9 s apart, then the kill,
    # and the restarted group got none). Ray records what it registered in its snapshot file.
    while _registered_checkpoints(ckpt_root) < 1:
        status = client.get_job_status(job)
        assert status not in {JobStatus.FAILED, JobStatus.STOPPED}, client.get_job_logs(job)[-3000:]
        assert time.monotonic() < deadline, "no checkpoint was registered"
        time.sleep(0.5)
    info = client.get_job_info(job)
    assert info.driver_info is not None
    # only this job's workers: other sweeps may run Ray Train on the same cluster
    workers = list_actors(
        filters=[
            ("class_name", "=", "RayTrainWorker"),
            ("state", "=", "ALIVE"),
            ("job_id", "=", info.driver_info.id),
        ],
        detail=True,
    )
    # the state API can lag and a group may have been restarted already: kill a worker of the
    # latest group the controller started
    latest = client.get_job_logs(job).rsplit("Started training worker group", 1)[-1]
    current = {int(p) for p in re.findall(r"pid=(\d+)\) world_rank=", latest)}
    alive = {w.pid for w in workers} & current
    assert alive, (workers, current)
    victim = max(alive)
    os.kill(victim, signal.SIGKILL)
    while client.get_job_status(job) not in {
        JobStatus.SUCCEEDED,
        JobStatus.FAILED,
        JobStatus.STOPPED,
    }:
        assert time.monotonic() < deadline + 300, "job did not finish after the kill"
        time.sleep(2)
    logs = client.get_job_logs(job)
    assert client.get_job_status(job) == JobStatus.SUCCEEDED, logs[-4000:]
    assert "resuming from checkpoint" in logs, f"killed pid {victim}: {logs[-3000:]}"
    row = _run_row(synthetic_demo, run)
    assert row["final_step"] == max_steps  # the step counter continued …
    assert 0 < row["resumed_from_step"] < max_steps, logs[-6000:]  # … from a checkpoint


def _metrics_rows(demo: dict, run: str) -> dict[int, dict]:
    uri = str(demo["workdir"] / "tables" / "pretrain_metrics")
    from earthloop.store.delta import table_exists

    if not table_exists(uri):
        return {}
    return {m["epoch"]: m for m in read_table(uri).to_pylist() if m["run_name"] == run}


def _checkpoint_metas(root: Path) -> list[dict]:
    metas = []
    for d in root.glob("checkpoint_*"):
        with contextlib.suppress(OSError, ValueError):  # one being written
            metas.append({**json.loads((d / "meta.json").read_text()), "dir": d})
    return sorted(metas, key=lambda m: m["step"])


def test_stopped_job_resumes_inside_the_epoch_past_a_truncated_checkpoint(
    ray_cluster: str, synthetic_demo: dict
) -> None:
    """`ray job stop` mid-epoch, the newest checkpoint truncated, then the same job again.

    The re-submitted run must skip the broken checkpoint (naming it), resume inside the epoch,
    and end each epoch at the same step as an uninterrupted run: epoch k at k x (epoch 1's steps).
    """
    from ray.job_submission import JobStatus, JobSubmissionClient

    run = f"s-{uuid.uuid4().hex[:8]}"
    client = JobSubmissionClient(JOBS)
    entry = " ".join(
        [
            "python jobs/pretrain.py",
            *_overrides(
                synthetic_demo,
                run,
                "pretrain.checkpoint_every=3",
                "pretrain.epochs=3",
                "pretrain.max_failures=0",
            ),
        ]
    )
    runtime_env = {"working_dir": str(ROOT), **json.loads(_runtime_env())}
    job = client.submit_job(entrypoint=entry, runtime_env=runtime_env)
    ckpt_root = synthetic_demo["workdir"] / "ray_results" / run
    deadline = time.monotonic() + 400
    # wait for two checkpoints inside epoch 2 (index 1): the newer one gets truncated below
    while (
        len([m for m in _checkpoint_metas(ckpt_root) if m["epoch"] == 1 and m["batch_in_epoch"]])
        < 2
    ):
        status = client.get_job_status(job)
        assert status not in {JobStatus.FAILED, JobStatus.STOPPED, JobStatus.SUCCEEDED}, (
            client.get_job_logs(job)[-3000:]
        )
        assert time.monotonic() < deadline, "no mid-epoch checkpoint appeared"
        time.sleep(0.5)
    client.stop_job(job)
    while client.get_job_status(job) not in {JobStatus.STOPPED, JobStatus.FAILED}:
        assert time.monotonic() < deadline, "the job did not stop"
        time.sleep(0.5)
    time.sleep(2)  # workers die with the job; nothing may still be writing a checkpoint
    stopped = _run_row(synthetic_demo, run)
    assert (stopped["status"], stopped["error"]) == ("interrupted", "stopped by SIGTERM"), (
        client.get_job_logs(job)[-3000:]
    )
    epoch1 = _metrics_rows(synthetic_demo, run)[1]["step"]
    metas = _checkpoint_metas(ckpt_root)
    newest = metas[-1]
    assert newest["step"] > epoch1, metas
    broken = newest["dir"] / "state.pt"
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 3])

    job2 = client.submit_job(entrypoint=entry, runtime_env=runtime_env)
    while client.get_job_status(job2) not in {
        JobStatus.SUCCEEDED,
        JobStatus.FAILED,
        JobStatus.STOPPED,
    }:
        assert time.monotonic() < deadline + 300, "the resumed job did not finish"
        time.sleep(2)
    logs = client.get_job_logs(job2)
    assert client.get_job_status(job2) == JobStatus.SUCCEEDED, logs[-4000:]
    assert str(broken) in logs and "falling back to checkpoint" in logs, logs[-4000:]
    row = _run_row(synthetic_demo, run)
    assert row["status"] == "finished" and not row["error"]
    assert 0 < row["resumed_from_step"] < newest["step"]  # an older, intact checkpoint
    epochs = _metrics_rows(synthetic_demo, run)
    assert {e: m["step"] for e, m in epochs.items()} == {1: epoch1, 2: 2 * epoch1, 3: 3 * epoch1}
    assert row["final_step"] == 3 * epoch1
    print(
        f"stop/resume: {epoch1} steps per epoch, stopped with newest checkpoint at step "
        f"{newest['step']} (truncated), resumed from {row['resumed_from_step']}, "
        f"final step {row['final_step']}"
    )
