"""The classification path on real data: six BigEarthNet-S2 patches (12 bands, CORINE labels).

Six patches cannot give a meaningful score; these tests prove that real multi-resolution
GeoTIFFs and real CORINE labels flow through loading, multi-hot mapping, training and mAP.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from earthloop.finetune.bigearthnet import (
    BANDS,
    CLASSES_19,
    CLASSES_43,
    load_bigearthnet,
    multi_hot,
)

pytestmark = pytest.mark.shared_data


@pytest.fixture(scope="module")
def ben_root(shared_data: Path) -> Path:
    root = shared_data / "bigearthnet-s2-example"
    if not root.is_dir():
        pytest.fail(f"{root} missing from the shared data folder")
    return root


def _names(vec: np.ndarray, names: tuple[str, ...]) -> set[str]:
    return {names[i] for i in np.flatnonzero(vec)}


def test_load_stacks_12_bands_at_120px_and_maps_labels(ben_root: Path) -> None:
    data = load_bigearthnet(ben_root)
    assert data.images.shape == (6, 12, 120, 120) and data.images.dtype == np.float32
    assert data.targets.shape == (6, 19) and data.bands == list(BANDS)
    assert 0.0 < float(data.images.mean()) < 1.0  # reflectance, not DN
    i = data.patch_ids.index("S2B_MSIL2A_20170924T93020_69_24")
    assert _names(data.targets[i], CLASSES_19) == {
        "Coniferous forest",
        "Mixed forest",
        "Transitional woodland, shrub",
        "Inland wetlands",
        "Inland waters",
    }
    j = data.patch_ids.index("S2A_MSIL2A_20170613T101031_87_48")
    assert _names(data.targets[j], CLASSES_19) == {
        "Arable land",
        "Land principally occupied by agriculture, with significant areas of natural vegetation",
    }
    # the patch centres are real places (lon/lat), used for spatial splits
    assert np.all(np.abs(data.lonlat[:, 1]) < 80)


def test_band_values_match_the_files(ben_root: Path) -> None:
    pid = "S2A_MSIL2A_20170613T101031_87_48"
    data = load_bigearthnet(ben_root, folders=[ben_root / pid])
    with rasterio.open(ben_root / pid / f"{pid}_B02.tif") as src:  # 10 m: untouched
        b02 = src.read(1).astype(np.float32) / 10000
    np.testing.assert_allclose(data.images[0, BANDS.index("B02")], b02, rtol=1e-6)
    with rasterio.open(ben_root / pid / f"{pid}_B05.tif") as src:  # 20 m: 60 px -> 120 px
        b05 = src.read(1).astype(np.float32) / 10000
    up = data.images[0, BANDS.index("B05")]
    assert np.corrcoef(up.ravel(), np.kron(b05, np.ones((2, 2))).ravel())[0, 1] > 0.9
    assert abs(float(up.mean()) - float(b05.mean())) < 0.01


def test_43_class_nomenclature_and_unknown_label() -> None:
    vec = multi_hot(["Peatbogs", "Water bodies"], 43)
    assert _names(vec, CLASSES_43) == {"Peatbogs", "Water bodies"}
    assert (
        _names(multi_hot(["Road and rail networks and associated land"], 19), CLASSES_19) == set()
    )
    with pytest.raises(ValueError, match="unknown BigEarthNet label 'Moon dust'"):
        multi_hot(["Moon dust"], 19)


def test_multilabel_training_steps_and_map(ben_root: Path) -> None:
    from earthloop.finetune.data import TrialArrays
    from earthloop.finetune.metrics import multilabel_metrics
    from earthloop.finetune.train import EvalSpec, TrainParams, fit
    from earthloop.inference import predict
    from earthloop.models import build_backbone
    from earthloop.models.normalise import normalise
    from earthloop.models.task import TaskModel

    data = load_bigearthnet(ben_root)
    px = data.images.transpose(1, 0, 2, 3).reshape(12, -1)
    x = normalise(torch.from_numpy(data.images), px.mean(axis=1), px.std(axis=1)).numpy()
    arrays = TrialArrays(x, data.targets, None, data.patch_ids)
    model = TaskModel("multilabel", build_backbone("resnet_tiny", 12), 19, frozen=False)
    spec = EvalSpec("multilabel", 19, list(range(19)), dict(enumerate(CLASSES_19)), None, 2, "map")
    seen: list[dict] = []
    last = fit(
        model,
        arrays,
        arrays,
        arrays,
        TrainParams(
            lr=3e-3,
            weight_decay=0.0,
            encoder_lr_mult=1.0,
            mode="full",
            batch_size=6,
            max_steps=8,
            eval_every=4,
            seed=0,
            augment=True,
        ),
        spec,
        report=lambda m, _s: seen.append(m),
    )
    assert [m["step"] for m in seen] == [4, 8]
    assert 0.0 <= last["val_map"] <= 1.0 and not math.isnan(last["test_map"])
    # the reported mAP is the metric of the model's own predictions
    scores = predict(model, x, spec.class_ids)
    assert last["val_map"] == pytest.approx(multilabel_metrics(scores, data.targets)["map"])
    assert seen[-1]["train_loss"] < 0.69  # BCE below chance after a few steps


def test_bigearthnet_through_the_sweep_planner(ben_root: Path, tmp_path: Path) -> None:
    """source=bigearthnet: pool, spatial split, subsets and one trial (no Ray)."""
    from earthloop.config import ConfigError, load_config
    from earthloop.finetune.plan import plan_sweep
    from earthloop.finetune.sweep import plain_loop

    base = [
        f"workdir={tmp_path}",
        "finetune.source=bigearthnet",
        "finetune.task=multilabel",
        f"finetune.bigearthnet_dir={ben_root}",
        "finetune.backbone=resnet_tiny",
        "finetune.fractions=[0.5, 1.0]",
        "finetune.max_steps=2",
        "finetune.eval_every=2",
        "finetune.batch_size=2",
        "finetune.split.block_deg=0.01",
        "finetune.split.val_fraction=0.34",
        "finetune.split.test_fraction=0.33",
        "finetune.allow_missing_classes=true",
    ]
    plan = None
    # six patches in six places: the block hash decides the split; pick the first salt that
    # leaves every split non-empty (the split itself is not what this test checks)
    for salt in range(50):
        try:
            plan = plan_sweep(load_config(None, [*base, f"finetune.split.salt=s{salt}"]))
            break
        except ConfigError as exc:
            assert "empty" in str(exc)
    assert plan is not None
    assert sum(plan.pool.summary().values()) == 6
    out = plain_loop(
        plan,
        [
            {
                "fraction": 1.0,
                "init": "random",
                "seed": 0,
                "mode": "full",
                "lr": 1e-3,
                "weight_decay": 0.0,
                "encoder_lr_mult": 1.0,
            }
        ],
    )
    m = out[0]["metrics"]
    assert m["step"] == 2 and "test_map" in m and "val_micro_f1" in m
