"""The label-efficiency runner (docs/label-efficiency.md) end to end on the small benchmark world.

A plumbing test at a CI budget, not the protocol's measurement (hours of CPU): it checks what the
protocol promises about *who sees what* and that every figure the results JSON names is there —
every init x fraction x mode scored on the in-region test and on the held-out region, CSCL
pretrained per cell on exactly that cell's labels, pretraining never on a held-out place.
Whether pretraining *helps* is the benchmark's question (docs/benchmarks.md), not this test's:
four optimiser steps answer nothing about it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_runner_scores_every_cell_on_test_and_heldout(tmp_path: Path) -> None:
    from earthloop.config import load_config
    from earthloop.ingest.pipeline import run_ingest
    from earthloop.synth import generate
    from earthloop.synth.manifest import load_manifest

    root = tmp_path / "world"
    generate(root, preset="world_small", seed=0)
    manifest = load_manifest(root)
    raw = {
        "name": "le-test",
        "workdir": str(tmp_path / "work"),
        "data_dir": str(root),
        "stac": {"url": str(root / "catalog" / "catalog.json")},
        "ingest": {
            "chip_size": 32,
            "num_locations": 160,
            # the world's tiles are ~1 km wide and spread over Europe: sample around each
            "sampling": "gaussian",
            "centers": [
                [(t.bbox[0] + t.bbox[2]) / 2, (t.bbox[1] + t.bbox[3]) / 2]
                for t in manifest.labels.values()
            ],
            "sigma_m": 300.0,
            "dates_per_location": 3,
            "max_chip_cloud": 0.5,
            "workers": 2,
        },
        "finetune": {
            "backbone": "resnet_tiny",
            # ~1 km tiles: small blocks, and overlapping eval chips kept (plumbing, not a score)
            "split": {
                "mode": "blocks",
                "block_deg": 0.002,
                "val_fraction": 0.3,
                "test_fraction": 0.3,
                "drop_overlapping": False,
            },
            "max_eval_chips": 12,
            "batch_size": 8,
            "max_cloud": 0.5,
            "allow_missing_classes": True,
        },
    }
    config = tmp_path / "le.yaml"
    config.write_text(yaml.safe_dump(raw))
    report = run_ingest(load_config(str(config)))
    assert report.chips > 0, report.summary()

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import label_efficiency
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    out = tmp_path / "out"
    rc = label_efficiency.main(
        [
            "--config", str(config), "--out", str(out), "--arch", "resnet_tiny",
            "--pretrain-steps", "4", "--pretrain-batch", "8", "--cscl-steps", "2",
            "--fractions", "0.5", "1.0", "--seeds", "0", "--modes", "linear", "full",
            "--lrs", "3e-3", "--mults", "1.0", "--max-steps", "4", "--eval-every", "2",
            "--threads", "1",
        ]
    )  # fmt: skip
    assert rc == 0
    doc = json.loads((out / "label_efficiency.json").read_text())
    res = doc["results"]
    assert set(res) == {"random", "seco", "dense", "cscl"}
    for init, modes in res.items():
        assert set(modes) == {"linear", "full"}, init
        for mode, fracs in modes.items():
            assert set(fracs) == {"0.5", "1"}, (init, mode)
            for f, cell in fracs.items():
                for key in ("test_miou", "heldout_miou", "test_boundary_miou"):
                    assert cell[key]["mean"] is not None, (init, mode, f, key)
                    assert 0.0 <= cell[key]["mean"] <= 1.0
                if init != "random":
                    assert "gain_over_random" in cell["test_miou"]

    # the held-out box is the held-out region's (from the manifest), and holds all its tiles
    box = doc["heldout_bbox"]
    held = manifest.tiles_with(region="mediterranean")
    for tile in held:
        w, s, e, n = manifest.labels[tile].bbox
        assert box[0] <= w and box[1] <= s and e <= box[2] and n <= box[3], tile
    assert doc["split"]["heldout"] > 0

    # CSCL: one pretraining per cell, on exactly that cell's labelled chips
    cscl = {(r["fraction"], r["seed"]): r for r in doc["pretraining"] if r["method"] == "cscl"}
    assert set(cscl) == {(0.5, 0), (1.0, 0)}
    for row in doc["rows"]:
        if row["init"].startswith("cscl@"):
            rec = cscl[(row["fraction"], row["seed"])]
            assert row["init"] == f"cscl@{row['fraction']:g}/{row['seed']}"
            assert rec["labelled_chips"] == row["n_labelled"]
    assert cscl[(0.5, 0)]["labelled_chips"] < cscl[(1.0, 0)]["labelled_chips"]
    # the self-supervised archive: never a chip of the held-out region
    for rec in doc["pretraining"]:
        if rec["method"] in ("seco", "dense"):
            assert rec["chips_in_archive"] > 0 and rec["steps"] == 4
            assert rec["tiles"] and not set(rec["tiles"]) & set(held), rec["tiles"]
    for png in doc["plots"]:
        assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
