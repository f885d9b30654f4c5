"""A tiny sweep with its workdir on ``s3://``: stopped mid-way, restored from S3, finished.

Tune's experiment state, the trials' checkpoints, the attempt logs and done markers, the
``finetune_trials`` rows and the report all live on the local moto server; the seco init is a
backbone file on S3 too. The sweep runs as a Ray job (its workers get the S3 client settings
through the job's runtime environment).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from earthloop.config import load_config
from earthloop.finetune.plan import FINGERPRINT_FILE
from earthloop.models import build_backbone, save_backbone
from earthloop.store.delta import append_rows, read_table, table_exists
from earthloop.store.fs import exists, pyarrow_filesystem, read_bytes, write_bytes

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
JOBS = f"http://127.0.0.1:{os.environ.get('RAY_DASHBOARD_PORT', '8265')}"
BANDS = ["B02", "B03", "B04", "B08"]
S3_VARS = (
    "AWS_ENDPOINT_URL",
    "AWS_ALLOW_HTTP",
    "AWS_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
)


def _rows(uri: str, sweep: str) -> list[dict[str, Any]]:
    if not table_exists(uri):
        return []
    return [r for r in read_table(uri).to_pylist() if r["sweep"] == sweep]


def _attempts(exp: str) -> dict[str, list[dict[str, Any]]]:
    import pyarrow.fs as pafs

    fs, path = pyarrow_filesystem(f"{exp}/attempts")
    out = {}
    for i in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True)):
        if i.base_name.endswith(".log"):
            text = read_bytes(f"s3://{i.path}").decode()
            out[i.base_name[: -len(".log")]] = [json.loads(x) for x in text.splitlines()]
    return out


def _wait(client: Any, job: str, deadline: float) -> str:
    from ray.job_submission import JobStatus

    while (status := client.get_job_status(job)) not in {
        JobStatus.SUCCEEDED,
        JobStatus.FAILED,
        JobStatus.STOPPED,
    }:
        assert time.monotonic() < deadline, client.get_job_logs(job)[-3000:]
        time.sleep(1)
    return str(status)


def test_sweep_on_s3_restores_after_a_stop_and_keeps_finished_trials(
    ray_cluster: str, tiny_data: Any, s3_root: str, tmp_path: Path
) -> None:
    from ray.job_submission import JobStatus, JobSubmissionClient

    append_rows(f"{s3_root}/tables/chips", read_table(str(tiny_data.workdir / "tables" / "chips")))
    local = save_backbone(
        tmp_path / "seco.pt",
        build_backbone("resnet_tiny", 4),
        arch="resnet_tiny",
        bands=BANDS,
        mean=[0.07, 0.1, 0.1, 0.28],
        std=[0.03, 0.03, 0.05, 0.09],
        method="seco",
    )
    seco = f"{s3_root}/inits/seco.pt"
    write_bytes(seco, local.read_bytes())
    over = tiny_data.overrides(
        name="s3sweep",
        fractions=[0.5, 1.0],
        seeds=[0],
        max_steps=8,
        eval_every=2,
        inits=[{"name": "random"}, {"name": "seco", "path": seco}],
    )
    over = [o for o in over if not o.startswith("workdir=")] + [f"workdir={s3_root}"]
    raw: dict[str, Any] = {}
    for item in over:  # as a YAML file, as a user would write it
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
    uri = cfg.table_uri("finetune_trials")
    exp = f"{s3_root}/ray_results/s3sweep"

    client = JobSubmissionClient(JOBS)
    runtime_env = {
        "working_dir": str(ROOT),
        "env_vars": {
            **{k: os.environ[k] for k in S3_VARS},
            "RAY_AUTH_MODE": "token",
            "EARTHLOOP_ROOT": str(ROOT),
        },
    }
    entry = f"python jobs/finetune.py --config {config}"
    deadline = time.monotonic() + 300
    job = client.submit_job(entrypoint=entry, runtime_env=runtime_env)
    while len(_rows(uri, "s3sweep")) < 2:
        status = client.get_job_status(job)
        assert status not in {JobStatus.FAILED, JobStatus.STOPPED, JobStatus.SUCCEEDED}, (
            client.get_job_logs(job)[-4000:]
        )
        assert time.monotonic() < deadline, "two trials did not finish in time"
        time.sleep(0.5)
    client.stop_job(job)  # SIGTERM, then SIGKILL: the driver dies mid-sweep
    _wait(client, job, deadline)
    done_before = {r["trial_id"]: r for r in _rows(uri, "s3sweep")}
    assert 2 <= len(done_before) < 4, "the stop came too late to leave work for the restore"
    assert exists(f"{exp}/{FINGERPRINT_FILE}")  # the restore checks its definition against it
    time.sleep(3)  # the trial actors die with the driver

    job2 = client.submit_job(entrypoint=entry, runtime_env=runtime_env)
    final = _wait(client, job2, time.monotonic() + 300)
    logs = client.get_job_logs(job2)
    assert final == str(JobStatus.SUCCEEDED), logs[-4000:]
    assert "(restored)" in logs
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in logs + client.get_job_logs(job)

    rows = {r["trial_id"]: r for r in _rows(uri, "s3sweep")}
    assert len(rows) == 4 and all(r["status"] == "finished" for r in rows.values())
    assert set(done_before) < set(rows)  # the same trials, none replaced by new ones
    attempts = _attempts(exp)
    for tid, before in done_before.items():
        trained = [a for a in attempts[tid] if not a.get("skipped")]
        assert len(trained) == 1, (tid, attempts[tid])  # finished before the stop: once
        assert rows[tid]["test_metric"] == before["test_metric"]
    for r in rows.values():
        assert r["steps"] == 8 and r["checkpoint"].startswith(f"{exp}/"), r["checkpoint"]
        assert exists(f"{r['checkpoint']}/state.pt")
    assert {r["init_path"] for r in rows.values() if r["init"] == "seco"} == {seco}
    report = f"{s3_root}/reports/s3sweep"
    assert "Gain over random initialisation" in read_bytes(f"{report}/report.md").decode()
    for png in ("metric_vs_fraction.png", "gain_over_random.png"):
        assert read_bytes(f"{report}/{png}").startswith(b"\x89PNG\r\n\x1a\n")
    print(
        f"s3 sweep: {len(done_before)} trials kept across the stop, "
        f"{len(rows) - len(done_before)} finished after the restore"
    )
