"""BigEarthNet as users download it: v1 (real patches) and v2 / reBEN (a generated download).

The real six BigEarthNet-S2 v1 patches in ../shared/data cannot give a meaningful score; these
tests prove that real multi-resolution GeoTIFFs and real CORINE labels flow through loading,
multi-hot mapping, training and mAP, and that the same real pixels read identically when laid
out as a v2 download. The v2 tests use a small download written the way the reBEN release
extracts (``bigearthnet_fixture.py``): metadata.parquet with the official splits and 19-class
names, the snow/cloud/shadow exclusion list, and BigEarthNet-S2/<tile>/<patch>/ band files.
"""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
import torch
from bigearthnet_fixture import (
    CLEAN,
    EXCLUDED,
    TILE_AT,
    V2Download,
    V2Patch,
    dn,
    metadata_table,
    write_v2,
)
from earthloop.finetune.bigearthnet import (
    BANDS,
    CLASSES_19,
    CLASSES_43,
    find_patches,
    load_bigearthnet,
    multi_hot,
)


@pytest.fixture(scope="module")
def ben_root(shared_data: Path) -> Path:
    root = shared_data / "bigearthnet-s2-example"
    if not root.is_dir():
        pytest.fail(f"{root} missing from the shared data folder")
    return root


def _names(vec: np.ndarray, names: tuple[str, ...]) -> set[str]:
    return {names[i] for i in np.flatnonzero(vec)}


@pytest.mark.shared_data
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


@pytest.mark.shared_data
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


@pytest.mark.shared_data
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


@pytest.mark.shared_data
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


@pytest.fixture(scope="module")
def v2(tmp_path_factory: pytest.TempPathFactory) -> V2Download:
    return write_v2(tmp_path_factory.mktemp("reben"))


def test_v2_loads_labels_official_splits_and_pixels(v2: V2Download) -> None:
    data = load_bigearthnet(v2.root)
    assert data.version == 2 and data.targets.shape == (8, 19)
    assert data.images.shape == (8, 12, 120, 120) and data.patch_ids == sorted(data.patch_ids)
    assert set(data.patch_ids) == {p.id for p in CLEAN}
    by_id = {p.id: p for p in CLEAN}
    for i, pid in enumerate(data.patch_ids):
        assert _names(data.targets[i], CLASSES_19) == set(by_id[pid].labels)
    # hand-written: "Urban fabric" is class 0, "Arable land" class 2 of the 19
    i = data.patch_ids.index("S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_26_57")
    assert np.flatnonzero(data.targets[i]).tolist() == [0, 2]
    # the release's train/validation/test, in the project's names
    assert data.splits is not None
    assert dict(zip(data.patch_ids, data.splits, strict=True)) == {
        "S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_26_57": "train",
        "S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_26_58": "train",
        "S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_27_57": "val",
        "S2A_MSIL2A_20170617T113321_N9999_R080_T29UPU_40_12": "train",
        "S2A_MSIL2A_20170617T113321_N9999_R080_T29UPU_40_13": "test",
        "S2B_MSIL2A_20170924T093020_N9999_R136_T35VPK_8_3": "train",
        "S2B_MSIL2A_20170924T093020_N9999_R136_T35VPK_8_4": "val",
        "S2B_MSIL2A_20170924T093020_N9999_R136_T35VPK_9_3": "test",
    }
    # every band file lands in its own channel (each band of each patch has its own DN)
    order = [p.id for p in CLEAN]
    for i, pid in enumerate(data.patch_ids):
        for b, band in enumerate(BANDS):
            want = dn(order.index(pid), band) / 10000
            np.testing.assert_allclose(data.images[i, b], want, rtol=1e-6)
    # centres are real places: the Austrian tile 33UUP, the Finnish 35VPK
    lon, lat = data.lonlat[data.patch_ids.index(CLEAN[-1].id)]
    assert 25 < lon < 30 and 62 < lat < 64
    assert 13 < data.lonlat[0, 0] < 16 and 47 < data.lonlat[0, 1] < 50


def test_v2_excluded_patches_are_left_out_counted_and_logged(
    v2: V2Download, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="earthloop.finetune"):
        data = load_bigearthnet(v2.root)
    assert data.excluded == 2
    assert not {p.id for p in EXCLUDED} & set(data.patch_ids)
    # their pixels are in the download all the same (the release ships them)
    assert all((v2.root / "BigEarthNet-S2" / p.tile / p.id).is_dir() for p in EXCLUDED)
    msg = [r.getMessage() for r in caplog.records if "excluded" in r.getMessage()]
    assert len(msg) == 1
    assert "2 patches excluded" in msg[0] and "1 seasonal snow" in msg[0]
    assert "1 cloud/shadow" in msg[0] and "8 kept" in msg[0]
    # the folder list the sweep planner reads is the same kept set
    assert [f.name for f in find_patches(v2.root)] == data.patch_ids
    # pointing at the extracted BigEarthNet-S2 folder itself finds the same download
    assert load_bigearthnet(v2.root / "BigEarthNet-S2").patch_ids == data.patch_ids


def test_v2_flags_in_metadata_exclude_without_the_list(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_v2(tmp_path, exclusion_file=False)
    with caplog.at_level(logging.INFO, logger="earthloop.finetune"):
        data = load_bigearthnet(tmp_path)
    assert data.excluded == 2 and len(data.patch_ids) == 8
    assert any(
        r.levelno == logging.WARNING and "metadata_for_patches_with_snow" in r.getMessage()
        for r in caplog.records
    )


def test_v2_patch_folders_directly_under_bigearthnet_s2(tmp_path: Path) -> None:
    """Some mirrors drop the tile level: BigEarthNet-S2/<patch_id>/ is read as well."""
    write_v2(tmp_path, CLEAN[:3], [])
    images = tmp_path / "BigEarthNet-S2"
    moved = CLEAN[1]
    shutil.move(images / moved.tile / moved.id, images / moved.id)
    data = load_bigearthnet(tmp_path)
    assert data.patch_ids == sorted(p.id for p in CLEAN[:3])
    i = data.patch_ids.index(moved.id)
    np.testing.assert_allclose(data.images[i, BANDS.index("B04")], dn(1, "B04") / 10000)


def test_v2_has_no_43_class_labels(v2: V2Download) -> None:
    with pytest.raises(ValueError, match="v2 .* carries 19-class labels only"):
        load_bigearthnet(v2.root, nomenclature=43)
    with pytest.raises(ValueError, match="'Arable land'.* are 19-class \\(v2\\) names"):
        multi_hot(["Arable land", "Pastures"], 43)
    # names both nomenclatures share mean the same class in both
    shared = set(CLASSES_19) & set(CLASSES_43)
    assert shared and all(_names(multi_hot([n], 19), CLASSES_19) == {n} for n in shared)


def test_v2_unknown_label_names_every_offender(tmp_path: Path) -> None:
    bad = [
        V2Patch(TILE_AT, 1, 1, ("Arable lands", "Urban fabric"), "train"),
        V2Patch(TILE_AT, 1, 2, ("Pastures", "Moon dust"), "test"),
    ]
    write_v2(tmp_path, bad, [])
    with pytest.raises(ValueError, match="unknown BigEarthNet label 'Arable lands' in patch"):
        load_bigearthnet(tmp_path)
    with pytest.raises(ValueError, match="labels 'Moon dust', 'Sea ice'"):
        multi_hot(["Pastures", "Moon dust", "Sea ice"], 19)


def test_layout_errors_say_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="BigEarthNet folder not found"):
        load_bigearthnet(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no BigEarthNet layout .* expected v2"):
        load_bigearthnet(tmp_path / "empty")
    # images extracted, metadata not downloaded
    only_images = tmp_path / "only-images"
    write_v2(only_images)
    (only_images / "metadata.parquet").unlink()
    with pytest.raises(FileNotFoundError, match="metadata.parquet is not"):
        load_bigearthnet(only_images)
    # metadata downloaded, images not extracted
    only_meta = tmp_path / "only-meta"
    only_meta.mkdir()
    pq.write_table(metadata_table(list(CLEAN)), only_meta / "metadata.parquet")
    with pytest.raises(FileNotFoundError, match="image folder .*BigEarthNet-S2 is not"):
        load_bigearthnet(only_meta)
    # an archive extracted in part
    (only_meta / "BigEarthNet-S2").mkdir()
    with pytest.raises(FileNotFoundError, match="8 of 8 patches .* have no folder"):
        load_bigearthnet(only_meta)
    # a metadata table without the columns the release has
    pq.write_table(
        metadata_table(list(CLEAN)).drop_columns(["split"]), only_meta / "metadata.parquet"
    )
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['split'\]"):
        load_bigearthnet(only_meta)


def test_v2_through_the_sweep_pool(v2: V2Download) -> None:
    """The sweep's pool (finetune/data.py) reads a v2 download: exclusions, 19-class counts, and
    the release's official split (not spatial blocks), unless a held-out region takes a patch."""
    from earthloop.config import FinetuneConfig
    from earthloop.finetune.data import build_pool, read_raw

    official = {"train": "train", "validation": "val", "test": "test"}
    fc = FinetuneConfig.model_validate(
        {"source": "bigearthnet", "task": "multilabel", "bigearthnet_dir": str(v2.root)}
    )
    pool = build_pool(None, fc, list(BANDS))
    assert sorted(s.id for s in pool.samples) == sorted(p.id for p in CLEAN)
    by_id = {p.id: p for p in CLEAN}
    for s in pool.samples:
        assert s.counts == {CLASSES_19.index(n): 1 for n in by_id[s.id].labels}
        assert s.split == official[by_id[s.id].split], s.id
    # a held-out region wins over the official split
    first = pool.samples[0].row
    box = [first["lon"] - 1e-4, first["lat"] - 1e-4, first["lon"] + 1e-4, first["lat"] + 1e-4]
    held = build_pool(
        None,
        fc.model_copy(update={"split": fc.split.model_copy(update={"heldout_bbox": box})}),
        list(BANDS),
    )
    assert [s.id for s in held.samples if s.split == "heldout"] == [pool.samples[0].id]
    images, _, _, _, ids = read_raw(pool, [0])
    assert images.shape == (1, 12, 120, 120) and ids == [pool.samples[0].id]


# The six real v1 patches as reBEN would name them (tile product from each JSON's tile_source)
# with their 19-class names written out by hand from the JSONs' CORINE level-3 names.
REAL_AS_V2: dict[str, tuple[str, tuple[str, ...], str]] = {
    "S2A_MSIL2A_20170613T101031_87_48": (
        "S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_87_48",
        ("Arable land", CLASSES_19[6]),
        "train",
    ),
    "S2A_MSIL2A_20170617T113321_36_85": (
        "S2A_MSIL2A_20170617T113321_N9999_R080_T29UPU_36_85",
        ("Arable land", "Pastures"),
        "validation",
    ),
    "S2A_MSIL2A_20170617T113321_4_55": (
        "S2A_MSIL2A_20170617T113321_N9999_R080_T29UPU_4_55",
        ("Pastures",),
        "test",
    ),
    "S2A_MSIL2A_20171221T112501_56_35": (
        "S2A_MSIL2A_20171221T112501_N9999_R037_T29SND_56_35",
        (
            "Complex cultivation patterns",
            CLASSES_19[6],
            "Broad-leaved forest",
            "Transitional woodland, shrub",
        ),
        "train",
    ),
    "S2B_MSIL2A_20170924T93020_69_24": (
        "S2B_MSIL2A_20170924T093020_N9999_R136_T35VPK_69_24",
        (
            "Coniferous forest",
            "Mixed forest",
            "Transitional woodland, shrub",
            "Inland wetlands",
            "Inland waters",
        ),
        "train",
    ),
    "S2B_MSIL2A_20180204T94161_57_38": (
        "S2B_MSIL2A_20180204T094161_N9999_R036_T35VPK_57_38",
        ("Arable land", "Coniferous forest", "Mixed forest"),
        "train",
    ),
}
REAL_SNOWY = "S2B_MSIL2A_20180204T94161_57_38"  # a Finnish February patch, listed as snowy here


def _real_as_v2(ben_root: Path, root: Path) -> None:
    import pyarrow as pa

    rows: list[dict[str, Any]] = []
    for v1_name, (pid, labels, split) in REAL_AS_V2.items():
        folder = root / "BigEarthNet-S2" / pid.rsplit("_", 2)[0] / pid
        folder.mkdir(parents=True)
        for band in BANDS:
            shutil.copy(ben_root / v1_name / f"{v1_name}_{band}.tif", folder / f"{pid}_{band}.tif")
        rows.append({"patch_id": pid, "labels": list(labels), "split": split, "snow": False})
    clean = [r for r in rows if not r["patch_id"].endswith("_57_38")]
    snowy = [r for r in rows if r["patch_id"].endswith("_57_38")]
    for name, part, flag in (
        ("metadata.parquet", clean, False),
        ("metadata_for_patches_with_snow_cloud_or_shadow.parquet", snowy, True),
    ):
        table = pa.table(
            {
                "patch_id": [r["patch_id"] for r in part],
                "labels": pa.array([r["labels"] for r in part], type=pa.list_(pa.string())),
                "split": [r["split"] for r in part],
                "contains_seasonal_snow": [flag] * len(part),
                "contains_cloud_or_shadow": [False] * len(part),
            }
        )
        pq.write_table(table, root / name)


@pytest.mark.shared_data
def test_real_patches_read_the_same_in_the_v2_layout(ben_root: Path, tmp_path: Path) -> None:
    _real_as_v2(ben_root, tmp_path)
    v1 = load_bigearthnet(ben_root)
    v2 = load_bigearthnet(tmp_path)
    assert v1.version == 1 and v1.splits is None and v1.excluded == 0
    assert v2.version == 2 and v2.excluded == 1 and len(v2.patch_ids) == 5
    to_v2 = {k: v[0] for k, v in REAL_AS_V2.items()}
    for j, pid in enumerate(v2.patch_ids):
        i = [to_v2[n] for n in v1.patch_ids].index(pid)
        # the same real pixels, wherever the layout keeps them
        np.testing.assert_array_equal(v2.images[j], v1.images[i])
        np.testing.assert_allclose(v2.lonlat[j], v1.lonlat[i])
        # v1's CORINE level-3 names merged to 19 == the hand-written v2 names
        np.testing.assert_array_equal(v2.targets[j], v1.targets[i])
    assert v2.splits is not None
    assert sorted(v2.splits) == ["test", "train", "train", "train", "val"]
    assert to_v2[REAL_SNOWY] not in v2.patch_ids


@pytest.mark.shared_data
def test_real_v1_honours_its_exclusion_csvs(
    ben_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shutil.copytree(ben_root, tmp_path / "ben")
    (tmp_path / "ben" / "patches_with_seasonal_snow.csv").write_text(REAL_SNOWY + "\n")
    # the release-wide list names patches this folder does not hold: those are not counted
    (tmp_path / "ben" / "patches_with_cloud_and_shadow.csv").write_text(
        "S2A_MSIL2A_20170617T113321_4_55\nS2B_MSIL2A_20171112T114339_0_13\n"
    )
    with caplog.at_level(logging.INFO, logger="earthloop.finetune"):
        data = load_bigearthnet(tmp_path / "ben")
    assert data.version == 1 and data.excluded == 2 and len(data.patch_ids) == 4
    assert REAL_SNOWY not in data.patch_ids
    assert "S2A_MSIL2A_20170617T113321_4_55" not in data.patch_ids
    assert any("2 patches excluded" in r.getMessage() for r in caplog.records)
