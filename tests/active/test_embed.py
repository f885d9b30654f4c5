"""The embed job's pure parts: per-chip summaries, the incremental anti-join, rows and the actor."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from earthloop.active.embed import (
    EmbedActor,
    chip_summaries,
    done_chip_ids,
    pending_rows,
    result_tables,
)
from earthloop.config import load_config
from earthloop.finetune.export import ExportContext, export_rows
from earthloop.inference import load_task_model, predict_raw
from earthloop.models import build_backbone
from earthloop.models.task import TaskModel
from earthloop.store.delta import merge_rows, read_table
from earthloop.store.tables import EMBEDDINGS, PREDICTIONS


def test_segmentation_summaries_count_only_valid_pixels() -> None:
    # chip 0: left half certain class 0, right half a coin flip between 0 and 1 (invalid)
    p = np.zeros((2, 3, 2, 2))
    p[0, 0, :, 0] = 1.0
    p[0, 0, :, 1], p[0, 1, :, 1] = 0.5, 0.5
    valid = np.ones((2, 2, 2), dtype=bool)
    valid[0, :, 1] = False
    # chip 1: uniform over 3 classes everywhere, all valid
    p[1] = 1.0 / 3
    entropy, margin, hist = chip_summaries("segmentation", p, valid)
    assert entropy[0] == pytest.approx(0.0, abs=1e-9)  # the uncertain half is cloud
    assert margin[0] == pytest.approx(1.0)
    assert hist[0].tolist() == [1.0, 0.0, 0.0]
    assert entropy[1] == pytest.approx(math.log(3))
    assert margin[1] == pytest.approx(0.0)
    assert hist[1].sum() == pytest.approx(1.0)
    # every pixel valid: the coin-flip half now counts
    e_all, m_all, _ = chip_summaries("segmentation", p[:1])
    assert e_all[0] == pytest.approx(math.log(2) / 2)
    assert m_all[0] == pytest.approx(0.5)


def test_a_fully_clouded_chip_has_no_uncertainty_value() -> None:
    p = np.full((1, 2, 2, 2), 0.5)
    entropy, margin, hist = chip_summaries("segmentation", p, np.zeros((1, 2, 2), bool))
    assert math.isnan(entropy[0]) and math.isnan(margin[0])
    assert hist[0].tolist() == [0.0, 0.0]


def test_scene_and_multilabel_summaries() -> None:
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    entropy, margin, hist = chip_summaries("classification", p)
    assert margin.tolist() == pytest.approx([0.5, 0.7])
    assert entropy[0] == pytest.approx(-sum(x * math.log(x) for x in p[0]))
    assert hist.tolist() == [[1, 0, 0], [0, 0, 1]]
    q = np.array([[0.5, 1.0], [0.9, 0.1]])
    entropy, margin, hist = chip_summaries("multilabel", q)
    assert entropy[0] == pytest.approx(math.log(2) / 2)  # one coin flip, one certain label
    assert margin.tolist() == pytest.approx([0.5, 0.8])
    assert hist.tolist() == [[0, 1], [1, 0]]


def _rows(ids: list[str], mv: str, n_emb: int = 2) -> tuple[pa.Table, pa.Table]:
    k = len(ids)
    batch = {
        "chip_id": np.array(ids),
        "location_id": np.array([f"loc{i}" for i in range(k)]),
        "season": np.arange(k, dtype=np.int32),
        "embedding": np.arange(k * n_emb, dtype=np.float32).reshape(k, n_emb),
        "grid": np.ones((k, 2 * 2 * 2), np.float32),
        "grid_shape": np.tile(np.array([2, 2, 2], np.int32), (k, 1)),
        "mean_entropy": np.linspace(0, 1, k),
        "mean_margin": np.linspace(1, 0, k),
        "class_histogram": np.tile(np.array([0.25, 0.75]), (k, 1)),
    }
    return result_tables(batch, mv)


def test_anti_join_needs_both_tables_and_the_same_model_version(tmp_path: Path) -> None:
    cfg = load_config(None, [f"workdir={tmp_path}"])
    index = [{"chip_id": f"c{i}"} for i in range(6)]
    assert done_chip_ids(cfg, "m1") == set()  # no tables yet: everything is pending
    emb, pred = _rows(["c0", "c1", "c2"], "m1")
    merge_rows(cfg.table_uri(EMBEDDINGS), emb, EMBEDDINGS.keys)
    # c2's prediction never committed (a job killed between the two MERGEs)
    merge_rows(cfg.table_uri(PREDICTIONS), pred.slice(0, 2), PREDICTIONS.keys)
    other_emb, other_pred = _rows(["c3", "c4"], "m0")  # another model version's rows
    merge_rows(cfg.table_uri(EMBEDDINGS), other_emb, EMBEDDINGS.keys)
    merge_rows(cfg.table_uri(PREDICTIONS), other_pred, PREDICTIONS.keys)
    assert done_chip_ids(cfg, "m1") == {"c0", "c1"}
    assert [r["chip_id"] for r in pending_rows(index, done_chip_ids(cfg, "m1"))] == [
        "c2",
        "c3",
        "c4",
        "c5",
    ]
    assert done_chip_ids(cfg, "m0") == {"c3", "c4"}


def test_result_rows_round_trip_through_delta(tmp_path: Path) -> None:
    emb, pred = _rows(["a", "b"], "m1", n_emb=3)
    assert emb.schema == EMBEDDINGS.schema and pred.schema == PREDICTIONS.schema
    merge_rows(str(tmp_path / "e"), emb, EMBEDDINGS.keys)
    merge_rows(str(tmp_path / "p"), pred, PREDICTIONS.keys)
    e = {r["chip_id"]: r for r in read_table(str(tmp_path / "e")).to_pylist()}
    assert e["b"]["embedding"] == [3.0, 4.0, 5.0]
    assert e["a"]["grid_shape"] == [2, 2, 2] and len(e["a"]["grid"]) == 8
    assert (e["b"]["location_id"], e["b"]["season"]) == ("loc1", 1)
    p = {r["chip_id"]: r for r in read_table(str(tmp_path / "p")).to_pylist()}
    assert p["b"]["class_histogram"] == [0.25, 0.75] and p["b"]["mean_entropy"] == 1.0
    assert p["a"]["mask_href"] is None


def test_actor_outputs_match_the_models_own_predictions(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TaskModel("segmentation", build_backbone("resnet_tiny", 4), 4, frozen=False)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    torch.save({"model": model.state_dict(), "step": 1}, ckpt / "state.pt")
    mean, std = [0.1] * 4, [0.05] * 4
    ctx = ExportContext(
        "resnet_tiny", ["B02", "B03", "B04", "B08"], "segmentation", 4, [1, 2, 3],
        {1: "a", 2: "b", 3: "c"}, {"r": (mean, std)}, "chips", 1, "m#x", None,
        str(tmp_path / "models"), str(tmp_path / "task_models"),
    )  # fmt: skip
    row = {
        "sweep": "s", "trial_id": "t", "cell": "c", "init": "r", "mode": "finetune",
        "fraction": 1.0, "seed": 0, "metric": "miou", "val_metric": 0.5,
        "best_val_metric": 0.5, "checkpoint": str(ckpt),
    }  # fmt: skip
    [exported] = export_rows(ctx, [row])
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 0.3, (3, 4, 64, 64)).astype(np.float32)
    valid = rng.uniform(size=(3, 64, 64)) > 0.2
    actor = EmbedActor(exported.path, grid_size=4, use_gpu=False, threads=1)
    out = actor(
        {
            "chip_id": np.array(["x", "y", "z"]),
            "location_id": np.array(["l0", "l1", "l2"]),
            "season": np.array([0, 1, 2]),
            "image": np.array(list(images) + [None], dtype=object)[:3],  # Ray's object column
            "valid": valid,
        }
    )
    assert out["embedding"].shape == (3, 128)  # resnet_tiny's pooled width
    assert out["grid"].shape == (3, 8 * 4 * 4) and out["grid_shape"][0].tolist() == [8, 4, 4]
    # the histogram is the class map predict() draws, over valid pixels, in class_ids order
    loaded, meta = load_task_model(exported.path)
    classes = predict_raw(loaded, images, valid, mean, std, meta["class_ids"])
    for i in range(3):
        want = [((classes[i] == c) & valid[i]).sum() / valid[i].sum() for c in (1, 2, 3)]
        np.testing.assert_allclose(out["class_histogram"][i], want)
    assert np.all((out["mean_entropy"] >= 0) & (out["mean_entropy"] <= math.log(3) + 1e-6))
    assert np.all((out["mean_margin"] >= 0) & (out["mean_margin"] <= 1))
