"""Task model export: a trial checkpoint becomes one self-describing file and a task_models row."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from earthloop.finetune.export import (
    ExportContext,
    TaskModelExportError,
    _trial_model,
    export_rows,
    model_version,
)
from earthloop.inference import load_task_model, predict, predict_raw
from earthloop.models import build_backbone
from earthloop.models.task import TaskModel
from earthloop.store.delta import read_table

BANDS = ["B02", "B03", "B04", "B08"]
MEAN, STD = [0.07, 0.1, 0.1, 0.28], [0.03, 0.03, 0.05, 0.09]


def _ctx(tmp_path: Path, task: str = "segmentation") -> ExportContext:
    # segmentation: channel 0 is the ignore class, 1..3 are scored
    ids = [1, 2, 3] if task == "segmentation" else [0, 1, 2]
    return ExportContext(
        arch="resnet_tiny",
        bands=BANDS,
        task=task,
        num_outputs=4 if task == "segmentation" else 3,
        class_ids=ids,
        class_names={c: f"class{c}" for c in ids},
        norms={"seco": (MEAN, STD)},
        chips_table=str(tmp_path / "tables" / "chips"),
        chips_version=3,
        labels_source="manifest.json#landcover",
        labels_version=None,
        models_root=str(tmp_path / "models" / "task"),
        table_uri=str(tmp_path / "tables" / "task_models"),
    )


def _trained(tmp_path: Path, ctx: ExportContext, trial: str, seed: int) -> tuple[TaskModel, dict]:
    """A model with non-default weights and BN statistics, saved as a trial checkpoint."""
    torch.manual_seed(seed)
    model = TaskModel(ctx.task, build_backbone("resnet_tiny", 4), ctx.num_outputs, frozen=False)
    model.train()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        model(torch.randn(4, 4, 32, 32))  # moves the BatchNorm running statistics
    ckpt = tmp_path / "ray" / trial / "checkpoint_000001"
    ckpt.mkdir(parents=True)
    torch.save({"model": model.state_dict(), "step": 6, "iteration": 2}, ckpt / "state.pt")
    row: dict[str, Any] = {
        "sweep": "tiny",
        "trial_id": trial,
        "cell": f"f=0.5|init=seco|seed={seed}",
        "init": "seco",
        "mode": "finetune",
        "fraction": 0.5,
        "seed": seed,
        "metric": "miou",
        "val_metric": 0.41,
        "best_val_metric": 0.43,
        "checkpoint": str(ckpt),
        "selected": True,
    }
    return model, row


def test_exported_model_predicts_exactly_as_the_trained_one(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    model, row = _trained(tmp_path, ctx, "abc_00000", seed=0)
    [exported] = export_rows(ctx, [row])

    # plain values and tensors only: loadable without unpickling code
    raw = torch.load(exported.path, weights_only=True)
    assert raw["format"] == "earthloop.task_model"
    assert exported.path == f"{ctx.models_root}/{exported.model_version}/model.pt"

    loaded, meta = load_task_model(exported.path)
    assert not loaded.training
    assert meta["bands"] == BANDS and meta["mean"] == MEAN and meta["std"] == STD
    assert meta["class_ids"] == [1, 2, 3] and meta["classes"] == ["class1", "class2", "class3"]
    assert meta["chips_table_version"] == 3 and meta["labels_source"].endswith("#landcover")
    assert meta["source"]["trial_id"] == "abc_00000" and meta["source"]["checkpoint_step"] == 6

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 0.4, size=(5, 4, 32, 32)).astype(np.float32)
    valid = rng.uniform(size=(5, 32, 32)) > 0.1
    before = predict_raw(model, images, valid, MEAN, STD, [1, 2, 3])
    after = predict_raw(loaded, images, valid, meta["mean"], meta["std"], meta["class_ids"])
    np.testing.assert_array_equal(before, after)
    assert len(np.unique(after)) > 1  # a constant map would make the comparison vacuous
    x = torch.from_numpy(images)
    with torch.no_grad():
        model.eval()
        torch.testing.assert_close(model(x), loaded(x), rtol=0, atol=0)


def test_task_models_row_and_stable_version(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, task="classification")
    model, row = _trained(tmp_path, ctx, "abc_00001", seed=1)
    first = export_rows(ctx, [row])
    again = export_rows(ctx, [row])  # re-exporting the same checkpoint: same id, one row
    assert first[0].model_version == again[0].model_version
    assert first[0].model_version == model_version("tiny", "abc_00001", model.state_dict())
    rows = read_table(ctx.table_uri).to_pylist()
    assert len(rows) == 1
    r = rows[0]
    assert r["model_version"].startswith("tiny-abc_00001-")
    assert (r["task"], r["source_sweep"], r["source_trial"]) == (
        "classification",
        "tiny",
        "abc_00001",
    )
    assert r["classes"] == ["class0", "class1", "class2"] and r["bands"] == BANDS
    assert r["chips_table_version"] == 3 and r["labels_table_version"] is None
    assert r["val_metric"] == pytest.approx(0.41) and r["path"] == first[0].path
    images = np.random.default_rng(1).normal(size=(3, 4, 32, 32)).astype(np.float32)
    loaded, _ = load_task_model(r["path"])
    np.testing.assert_array_equal(predict(model, images), predict(loaded, images))


def test_different_weights_get_different_versions(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    _, row_a = _trained(tmp_path, ctx, "t_a", seed=2)
    _, row_b = _trained(tmp_path, ctx, "t_b", seed=3)
    a, b = export_rows(ctx, [row_a, row_b])
    assert a.model_version != b.model_version
    assert {r["model_version"] for r in read_table(ctx.table_uri).to_pylist()} == {
        a.model_version,
        b.model_version,
    }


def test_trial_without_checkpoint_is_skipped_and_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = _ctx(tmp_path)
    _, good = _trained(tmp_path, ctx, "good", seed=4)
    gone = {**good, "trial_id": "gone", "checkpoint": str(tmp_path / "nowhere")}
    empty = {**good, "trial_id": "empty", "checkpoint": ""}
    with caplog.at_level(logging.WARNING, logger="earthloop.finetune"):
        done = export_rows(ctx, [gone, empty, good])
    assert [d.trial_id for d in done] == ["good"]
    assert "gone" in caplog.text and "empty" in caplog.text
    assert len(read_table(ctx.table_uri).to_pylist()) == 1


def test_a_file_that_is_not_a_task_model_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.pt"
    torch.save({"format": "earthloop.backbone", "state_dict": {}}, path)
    with pytest.raises(ValueError, match="not an earthloop task model"):
        load_task_model(str(path))
    with pytest.raises(TaskModelExportError, match="no checkpoint"):
        _trial_model(_ctx(tmp_path), {"trial_id": "t", "checkpoint": ""})
