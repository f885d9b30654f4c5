"""The embed job on the local two-node Ray cluster: one row per chip, then nothing new."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import torch
from earthloop.active.embed import EmbedParams, run_embed
from earthloop.config import load_config
from earthloop.finetune.export import ExportContext, export_rows
from earthloop.models import build_backbone
from earthloop.models.task import TaskModel
from earthloop.s2.bands import resolve_bands
from earthloop.store.delta import read_table, table_version
from earthloop.store.tables import EMBEDDINGS, PREDICTIONS
from earthloop.stream.dataset import load_index

pytestmark = pytest.mark.integration


def _task_model(cfg: Any, tmp_path: Path) -> str:
    """A small segmentation model standing in for a sweep's selected trial (plumbing only)."""
    bands = [b.name for b in resolve_bands(list(cfg.ingest.bands))]  # as a sweep resolves them
    torch.manual_seed(0)
    model = TaskModel("segmentation", build_backbone("resnet_tiny", len(bands)), 4, frozen=False)
    ckpt = tmp_path / "trial" / "checkpoint_000000"
    ckpt.mkdir(parents=True)
    torch.save({"model": model.state_dict(), "step": 1}, ckpt / "state.pt")
    ctx = ExportContext(
        "resnet_tiny", bands, "segmentation", 4, [1, 2, 3], {1: "a", 2: "b", 3: "c"},
        {"random": ([0.1] * len(bands), [0.05] * len(bands))}, cfg.table_uri("chips"), 1,
        "manifest#landcover", None, cfg.path("models", "task"), cfg.table_uri("task_models"),
    )  # fmt: skip
    row = {
        "sweep": "demo", "trial_id": "t0", "cell": "c", "init": "random", "mode": "finetune",
        "fraction": 1.0, "seed": 0, "metric": "miou", "val_metric": 0.0,
        "best_val_metric": 0.0, "checkpoint": str(ckpt),
    }  # fmt: skip
    return export_rows(ctx, [row])[0].model_version


def test_embed_job_writes_a_row_per_chip_then_nothing(
    ray_cluster: str, synthetic_demo: dict[str, Any], tmp_path: Path
) -> None:
    cfg = load_config(None, list(synthetic_demo["overrides"]))
    mv = _task_model(cfg, tmp_path)
    rows, _ = load_index(cfg.table_uri("chips"))
    params = EmbedParams(
        model_version=mv, grid_size=4, batch_size=16, chunk_rows=64, actors=2,
        actor_cpus=0.5, read_cpus=0.25, use_gpu=False,
    )  # fmt: skip
    t0 = time.monotonic()
    first = run_embed(cfg, params)
    took = time.monotonic() - t0
    print(f"embed: {first.written} chips in {took:.1f}s")
    assert first.chips == len(rows) and first.pending == len(rows)
    assert first.written == len(rows) and first.unreadable == 0
    emb = read_table(cfg.table_uri(EMBEDDINGS)).to_pylist()
    pred = read_table(cfg.table_uri(PREDICTIONS)).to_pylist()
    ids = {r["chip_id"] for r in rows}
    assert len(emb) == len(pred) == len(rows)
    assert {r["chip_id"] for r in emb} == ids == {r["chip_id"] for r in pred}
    assert all(r["model_version"] == mv and len(r["embedding"]) == 128 for r in emb)
    assert all(r["grid_shape"] == [8, 4, 4] and len(r["grid"]) == 128 for r in emb)
    assert all(
        abs(sum(r["class_histogram"]) - 1) < 1e-6
        for r in pred
        if r["mean_entropy"] == r["mean_entropy"]
    )

    versions = (table_version(cfg.table_uri(EMBEDDINGS)), table_version(cfg.table_uri(PREDICTIONS)))
    second = run_embed(cfg, params)
    assert (second.pending, second.written, second.already_done) == (0, 0, len(rows))
    # nothing committed: the tables stay at the versions the first run left
    assert versions == (
        table_version(cfg.table_uri(EMBEDDINGS)),
        table_version(cfg.table_uri(PREDICTIONS)),
    )
