"""Bad input fails before training, naming the problem: checkpoints, classes, configuration."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from earthloop.config import ConfigError, InitSpec, load_config
from earthloop.finetune.model import IncompatibleCheckpointError, resolve_init
from earthloop.finetune.subsets import EmptyClassError
from earthloop.models import build_backbone, save_backbone

BANDS = ["B02", "B03", "B04", "B08"]


@pytest.fixture
def earthloop_ckpt(tmp_path: Path) -> Path:
    return save_backbone(
        tmp_path / "backbone.pt",
        build_backbone("resnet_tiny", 4),
        arch="resnet_tiny",
        bands=BANDS,
        mean=[0.1] * 4,
        std=[0.05] * 4,
        method="seco",
    )


@pytest.fixture
def external_ckpt(tmp_path: Path) -> Path:
    path = tmp_path / "external.pth"
    sd = {f"module.{k}": v for k, v in build_backbone("resnet_tiny", 4).state_dict().items()}
    torch.save({"state_dict": sd, "epoch": 3}, path)
    return path


def test_band_count_mismatch(earthloop_ckpt: Path) -> None:
    spec = InitSpec(name="seco", path=str(earthloop_ckpt))
    with pytest.raises(IncompatibleCheckpointError, match=r"init 'seco'.*band-count mismatch"):
        resolve_init(spec, "resnet_tiny", ["B02", "B03", "B04"])
    with pytest.raises(IncompatibleCheckpointError, match="band mismatch"):
        resolve_init(spec, "resnet_tiny", ["B03", "B02", "B04", "B08"])  # same count, wrong order


def test_architecture_mismatch(earthloop_ckpt: Path) -> None:
    spec = InitSpec(name="seco", path=str(earthloop_ckpt))
    with pytest.raises(IncompatibleCheckpointError, match="architecture mismatch"):
        resolve_init(spec, "resnet18", BANDS)
    ok = resolve_init(spec, "resnet_tiny", ["blue", "green", "red", "nir"])  # aliases resolve
    assert ok.mean == [0.1] * 4 and ok.method == "seco"


def test_external_state_dict_checks(external_ckpt: Path) -> None:
    spec = InitSpec(name="ext", kind="external", path=str(external_ckpt))
    assert resolve_init(spec, "resnet_tiny", BANDS).kind == "external"
    with pytest.raises(IncompatibleCheckpointError, match="first conv mismatch"):
        resolve_init(spec, "resnet_tiny", BANDS[:3])
    with pytest.raises(IncompatibleCheckpointError, match=r"init 'ext'.*resnet18"):
        resolve_init(spec, "resnet18", BANDS)


def test_missing_file(tmp_path: Path) -> None:
    spec = InitSpec(name="gone", path=str(tmp_path / "nope.pt"))
    with pytest.raises(IncompatibleCheckpointError, match="not found"):
        resolve_init(spec, "resnet_tiny", BANDS)


def test_init_spec_validation() -> None:
    with pytest.raises(ValueError, match="needs a path"):
        InitSpec(name="x", kind="earthloop")
    with pytest.raises(ValueError, match="takes no path"):
        InitSpec(name="x", kind="random", path="a.pt")
    assert InitSpec(name="x", path="a.pt").kind == "earthloop"


def test_config_errors_name_the_key_when_the_file_loads() -> None:
    with pytest.raises(ConfigError, match=r"finetune\.fractions"):
        load_config(None, ["finetune.fractions=[0.0, 0.1]"])
    with pytest.raises(ConfigError, match="duplicate init names"):
        load_config(None, ["finetune.inits=[{name: a}, {name: a}]"])
    with pytest.raises(ConfigError, match="low <= high"):
        load_config(None, ["finetune.search.lr=[0.1, 0.01]"])
    with pytest.raises(ConfigError, match=r"finetune\.tsak: unknown key"):
        load_config(None, ["finetune.tsak=segmentation"])


def test_plan_rejects_incompatible_checkpoint_before_reading_data(tmp_path: Path) -> None:
    """No chip table exists here: the checkpoint error must come first, and quickly."""
    from earthloop.finetune.plan import plan_sweep

    ckpt = save_backbone(
        tmp_path / "b.pt",
        build_backbone("resnet_tiny", 3),
        arch="resnet_tiny",
        bands=BANDS[:3],
        mean=[0.1] * 3,
        std=[0.1] * 3,
        method="seco",
    )
    cfg = load_config(
        None,
        [
            f"workdir={tmp_path}",
            "finetune.backbone=resnet_tiny",
            f"finetune.inits=[{{name: random}}, {{name: seco, path: {ckpt}}}]",
        ],
    )
    with pytest.raises(IncompatibleCheckpointError, match="band-count mismatch"):
        plan_sweep(cfg)


def test_plan_zero_class_fraction_errors_unless_allowed(tiny_data) -> None:  # type: ignore[no-untyped-def]
    """On the tiny tile, a 1 % budget cannot keep every land-cover class at 2000 pixels each."""
    from earthloop.finetune.plan import plan_sweep

    over = tiny_data.overrides(fractions=[0.01, 1.0], min_class_pixels=2000)
    with pytest.raises(EmptyClassError, match=r"label fraction 0\.01 leaves"):
        plan_sweep(load_config(None, over))
    plan = plan_sweep(load_config(None, [*over, "finetune.allow_missing_classes=true"]))
    assert len(plan.label_sets[(0.01, 0)].ids) < len(plan.label_sets[(1.0, 0)].ids)


def test_plan_empty_split_is_a_clear_error(tiny_data) -> None:  # type: ignore[no-untyped-def]
    from earthloop.finetune.plan import plan_sweep

    # index mode on a 2.5 km tile: the ingest's 5 km blocks put every chip in one split
    over = [*tiny_data.overrides(), "finetune.split.mode=index"]
    with pytest.raises(ConfigError, match=r"split\(s\) .* are empty"):
        plan_sweep(load_config(None, over))


def test_plan_refuses_a_training_crop_larger_than_the_chips(tiny_data) -> None:  # type: ignore[no-untyped-def]
    """Caught before the cluster is touched, not at every trial's first step (32 px chips)."""
    from earthloop.finetune.plan import plan_sweep

    over = [*tiny_data.overrides(), "finetune.allow_missing_classes=true"]
    with pytest.raises(ConfigError, match=r"train_crop=48 is larger than the chips .*\(32 px\)"):
        plan_sweep(load_config(None, [*over, "finetune.train_crop=48"]))
    plan = plan_sweep(load_config(None, [*over, "finetune.train_crop=16"]))
    assert plan.context().train_crop == 16


def test_a_training_crop_is_for_segmentation_only(tiny_data, caplog) -> None:  # type: ignore[no-untyped-def]
    """Another task on a config with a crop (the demo's) trains on whole chips, and says so."""
    from earthloop.finetune.plan import plan_sweep

    over = [*tiny_data.overrides(), "finetune.allow_missing_classes=true"]
    cfg = load_config(None, [*over, "finetune.task=classification", "finetune.train_crop=16"])
    with caplog.at_level("WARNING"):
        plan_sweep(cfg)
    assert "train_crop=16 applies to segmentation only" in caplog.text
