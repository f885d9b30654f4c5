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
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def world_config(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """The small benchmark world, ingested; (config path, manifest)."""
    from earthloop.config import load_config
    from earthloop.ingest.pipeline import run_ingest
    from earthloop.synth import generate
    from earthloop.synth.manifest import load_manifest

    tmp_path = tmp_path_factory.mktemp("le-world")
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
    return config, manifest


def _runner() -> Any:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import label_efficiency
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return label_efficiency


def test_runner_scores_every_cell_on_test_and_heldout(
    world_config: tuple[Path, Any], tmp_path: Path
) -> None:
    config, manifest = world_config
    label_efficiency = _runner()
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


def test_a_bundle_runs_the_protocol_without_the_storage_stack(
    world_config: tuple[Path, Any], tmp_path: Path
) -> None:
    """What a lent GPU box runs (benchmarks/gpu_run.sh): the planned split and its pixels as one
    file, then the runner from that file with rasterio, deltalake and Ray replaced by
    placeholders that raise if used (``EARTHLOOP_SHIM_FORCE=1``), trials in 2 processes."""
    from earthloop.finetune.data import read_raw

    config, _ = world_config
    label_efficiency = _runner()
    bundle = tmp_path / "bundle.xz"
    rc = label_efficiency.main(
        ["--config", str(config), "--out", str(tmp_path / "plan"), "--bundle-out", str(bundle),
         "--threads", "1"]
    )  # fmt: skip
    assert rc == 0 and bundle.stat().st_size > 0

    # the bundle's pixels are the chips' pixels (int16 x 10^4 packing is lossless for L2A)
    probe, reads, _ = label_efficiency.load_bundle(bundle)
    pool = probe.pool
    assert pool.pixels is not None and len(pool.pixels) == len(pool.samples)
    idx = pool.indices("test") + pool.indices("heldout")
    cached = read_raw(pool, idx)
    pool.pixels = None
    direct = read_raw(pool, idx)
    assert cached[4] == direct[4]
    assert np.abs(cached[0] - direct[0]).max() < 1e-6
    assert np.array_equal(cached[2], direct[2]) and np.array_equal(cached[3], direct[3])
    assert reads["seco"][0]["images"].shape[1] == 3 and reads["dense"][0]["images"].shape[1] == 2

    out = tmp_path / "out"
    env = {**os.environ, "EARTHLOOP_SHIM_FORCE": "1"}
    args = [
        sys.executable, str(ROOT / "benchmarks" / "label_efficiency_device.py"),
        "--bundle", str(bundle), "--out", str(out), "--arch", "resnet_tiny",
        "--pretrain-steps", "3", "--pretrain-batch", "8", "--cscl-steps", "2",
        "--fractions", "1.0", "--seeds", "0", "--modes", "linear", "full", "--lrs", "3e-3",
        "--mults", "1.0", "--eval-every", "2", "--workers", "2", "--threads", "1",
    ]  # fmt: skip

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*args, *extra], env=env, capture_output=True, text=True, timeout=600)

    proc = run("--max-steps", "4")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # the storage packages really were placeholders in that process
    assert "rasterio" in proc.stdout and "deltalake" in proc.stdout and "ray" in proc.stdout
    doc = json.loads((out / "label_efficiency.json").read_text())
    assert set(doc["results"]) == {"random", "seco", "dense", "cscl"}
    assert doc["trials"] == doc["trials_planned"] == 8
    assert doc["cells_incomplete"] == [] and doc["cells_not_run"] == 0
    for modes in doc["results"].values():
        for fracs in modes.values():
            assert fracs["1"]["heldout_miou"]["mean"] is not None

    # re-running into the same --out continues it: nothing finished is redone, and a trial
    # whose line was torn by a kill runs again
    first = json.loads((out / "label_efficiency.json").read_text())["results"]
    lines = (out / "trials.jsonl").read_text().splitlines()
    assert len(lines) == 8
    (out / "trials.jsonl").write_text("\n".join(lines[:5]) + "\n" + lines[5][:40])
    again = run("--max-steps", "4")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "8 trials (5 finished by an earlier run" in again.stderr
    assert again.stderr.count("reusing") == 3  # seco, dense, the one CSCL cell
    redo = json.loads((out / "label_efficiency.json").read_text())
    assert redo["trials"] == 8 and redo["results"]["random"] == first["random"]
    # other budgets into the same --out would mix two experiments: refused, naming the key
    other = run("--max-steps", "6")
    assert other.returncode != 0 and "max_steps" in other.stderr
