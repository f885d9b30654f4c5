"""benchmarks/label_efficiency.py --target-archive: who pretraining may see (Ablation E).

The flag lets pretraining read the held-out region's unlabelled archive tiles, as a team with
imagery of the region it must map would. It must not leak a held-out *labelled* place: the
region's test tiles stay the held-out test, and the archive tiles' labels leave the labelled
manifest, so nothing pretraining saw is ever scored."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType, SimpleNamespace

from bench_helpers import load_benchmark

REGIONS = {
    "A1": ("atlantic", "pool"),
    "A2": ("atlantic", "test"),
    "A3": ("atlantic", "archive"),
    "M1": ("mediterranean", "test"),
    "M2": ("mediterranean", "archive"),
}


def _module() -> ModuleType:
    return load_benchmark("label_efficiency")


def _manifest(tmp_path: Path) -> SimpleNamespace:
    labels = {
        t: {"landcover": f"labels/{t}.tif", "bbox": [i, 40.0, i + 0.1, 40.1]}
        for i, t in enumerate(REGIONS)
    }
    (tmp_path / "manifest.json").write_text(
        json.dumps(
            {
                "params": {"world": {"heldout": "mediterranean"}},
                "regions": {t: {"region": r, "role": o} for t, (r, o) in REGIONS.items()},
                "labels": labels,
            }
        )
    )
    return SimpleNamespace(finetune=SimpleNamespace(labels=None), data_dir=str(tmp_path))


def test_without_the_flag_the_heldout_region_is_never_seen(tmp_path: Path) -> None:
    mod = _module()
    path, box, archive = mod.world_labels(_manifest(tmp_path), tmp_path)
    kept = set(json.loads(Path(path).read_text())["labels"])
    assert archive == {"A3"}
    assert kept == {"A1", "A2", "M1", "M2"}  # both held-out tiles are scored
    assert box[0] < 3 and box[2] > 4.1  # the box covers the held-out region
    assert not mod.pretrain_may_see("heldout", "M2", archive)
    assert not mod.pretrain_may_see("test", "A2", archive)
    assert mod.pretrain_may_see("train", "A1", archive)
    assert mod.pretrain_may_see("val", "A3", archive)  # an archive tile's blocks do not matter


def test_target_archive_adds_the_regions_archive_and_stops_scoring_it(tmp_path: Path) -> None:
    mod = _module()
    path, box, archive = mod.world_labels(_manifest(tmp_path), tmp_path, target_archive=True)
    kept = set(json.loads(Path(path).read_text())["labels"])
    assert archive == {"A3", "M2"}
    assert kept == {"A1", "A2", "M1"}  # M2 is unlabelled now: seen by pretraining, never scored
    assert box[0] < 3 and box[2] > 4.1
    assert mod.pretrain_may_see("heldout", "M2", archive)
    assert not mod.pretrain_may_see("heldout", "M1", archive)  # the held-out test, never


def test_the_flag_is_a_budget_key_only_when_set() -> None:
    mod = _module()
    ns = mod.parse_args(["--out", "x"])
    assert "target_archive" not in mod._budget(ns)  # earlier --outs still resume
    ns = mod.parse_args(["--out", "x", "--target-archive"])
    assert mod._budget(ns)["target_archive"] is True
