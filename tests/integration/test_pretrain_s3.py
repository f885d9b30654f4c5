"""Two-node pretraining with the whole workdir on ``s3://`` (the local moto server).

Submitted as users do (``ray job submit``); the workers get the S3 client settings through the
job's runtime environment, as they would from their node's environment on a real cluster. Every
table, checkpoint and the exported backbone must end up on S3 and nothing under the local
checkout; a second submission with more steps resumes from the checkpoint on S3.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pyarrow.fs as pafs
import pytest
from earthloop.config import load_config
from earthloop.store.delta import append_rows, read_table, table_version
from earthloop.store.fs import pyarrow_filesystem

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
JOBS = f"http://127.0.0.1:{os.environ.get('RAY_DASHBOARD_PORT', '8265')}"
S3_ENV = ("AWS_ENDPOINT_URL", "AWS_ALLOW_HTTP", "AWS_REGION", "AWS_ACCESS_KEY_ID")
SECRET_VAR = "AWS_SECRET_ACCESS_KEY"


def s3_job_env() -> dict[str, str]:
    """Runtime-env variables for a job on S3 (read from this process's environment)."""
    env = {k: os.environ[k] for k in (*S3_ENV, SECRET_VAR)}
    return {**env, "RAY_AUTH_MODE": "token", "EARTHLOOP_ROOT": str(ROOT)}


def copy_chips_to_s3(local_chips: str, s3_workdir: str) -> str:
    """The session's chip index, copied into ``<s3_workdir>/tables/chips`` (ingest is tested on
    S3 in test_concurrent_writes; the COGs it points to stay on local disk, read by path)."""
    uri = f"{s3_workdir}/tables/chips"
    append_rows(uri, read_table(local_chips))
    return uri


def s3_objects(uri: str) -> dict[str, bytes]:
    fs, path = pyarrow_filesystem(uri)
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    out = {}
    for i in infos:
        if i.type == pafs.FileType.File:
            with fs.open_input_stream(i.path) as fh:
                out[i.path] = fh.read()
    return out


def _submit(overrides: list[str]) -> subprocess.CompletedProcess[str]:
    cmd = [
        str(ROOT / ".venv" / "bin" / "ray"),
        "job",
        "submit",
        "--address",
        JOBS,
        "--working-dir",
        str(ROOT),
        "--runtime-env-json",
        json.dumps({"env_vars": s3_job_env()}),
        "--",
        "python",
        "jobs/pretrain.py",
        *overrides,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=420, cwd=ROOT)


def test_two_node_pretraining_keeps_tables_checkpoints_and_backbone_on_s3(
    ray_cluster: str, synthetic_demo: dict, s3_root: str
) -> None:
    from earthloop.config import InitSpec
    from earthloop.finetune.model import resolve_init

    chips = copy_chips_to_s3(str(synthetic_demo["chips"]), s3_root)
    run = f"s3-{uuid.uuid4().hex[:8]}"
    local_workdir = Path(synthetic_demo["workdir"])
    before = set(local_workdir.rglob("*"))
    over = [
        *[o for o in synthetic_demo["overrides"] if not o.startswith("workdir=")],
        f"workdir={s3_root}",
        f"pretrain.run_name={run}",
        "pretrain.backbone=resnet_tiny",
        "pretrain.batch_size=8",
        "pretrain.queue_size=64",
        "pretrain.probe.chips=40",
        "pretrain.log_every_s=2",
        "pretrain.checkpoint_every=2",
        "pretrain.epochs=2",
        "ray.cpus_per_worker=0.5",
    ]
    res = _submit([*over, "pretrain.max_steps=4"])
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    assert "world_size=2" in out  # a real 2-rank DDP group on the two nodes
    assert os.environ[SECRET_VAR] not in out

    cfg = load_config(None, over)
    runs = {r["run_name"]: r for r in read_table(cfg.table_uri("pretrain_runs")).to_pylist()}
    row = runs[run]
    assert row["status"] == "finished" and row["final_step"] == 4 and row["world_size"] == 2
    assert row["chips_table"] == chips and row["chips_table_version"] == table_version(chips)
    prefix = f"{s3_root}/ray_results/{run}/"
    assert row["checkpoint"].startswith(prefix), row["checkpoint"]
    assert row["backbone_path"] == f"{s3_root}/models/{run}/backbone.pt"
    metrics = [
        m for m in read_table(cfg.table_uri("pretrain_metrics")).to_pylist() if m["run_name"] == run
    ]
    assert len(metrics) == 1 and 0 <= metrics[0]["knn_accuracy"] <= 1

    objects = s3_objects(s3_root)
    names = [k.rsplit("/", 1)[-1] for k in objects]
    assert names.count("state.pt") >= 1 and "backbone.pt" in names
    # the storage filesystem Ray pickles (tuner/run state, workers) carries no credentials
    secret = os.environ[SECRET_VAR].encode()
    assert not [k for k, v in objects.items() if secret in v]
    assert set(local_workdir.rglob("*")) == before  # nothing went to the local workdir

    # fine-tuning finds the backbone by run name and loads it from S3, checked against bands
    init = resolve_init(
        InitSpec(name="seco", run=run), "resnet_tiny", ["B02", "B03", "B04", "B08"], cfg
    )
    assert init.kind == "earthloop" and init.path == row["backbone_path"]
    assert init.method == "seco" and init.mean is not None and len(init.mean) == 4

    # the same run with more steps continues from its checkpoint on S3
    res2 = _submit([*over, "pretrain.max_steps=6"])
    assert res2.returncode == 0, (res2.stdout + res2.stderr)[-4000:]
    assert "resuming from checkpoint" in res2.stdout + res2.stderr
    row2 = {r["run_name"]: r for r in read_table(cfg.table_uri("pretrain_runs")).to_pylist()}[run]
    assert row2["status"] == "finished" and row2["final_step"] == 6
    assert row2["resumed_from_step"] == 4
