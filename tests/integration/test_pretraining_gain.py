"""Does SeCo pretraining beat random initialisation at the lowest label fraction?

The protocol was fixed before the test was first run, and is not adjusted to make it pass:

* data: the ``tiny`` preset, one 512-px tile (5 km), a 14x14 grid of 32-px chips, 3 dates (one
  per ingest season window, as SeCo needs three);
  train/val/test by 0.004° blocks;
* SeCo (resnet_tiny, 200 steps, batch 32) in-process on the *train-split* locations only,
  normalised with the same train-split statistics as the random initialisation;
* fine-tuning: segmentation (land cover), full fine-tuning with the same hyper-parameters for
  both initialisations (AdamW lr 3e-3, encoder multiplier 1, 150 steps, batch 16), the lowest
  of the fractions [0.05, 0.5], seeds 0, 1, 2; model selection on val, score on test;
* claim: mean over seeds of (SeCo - random) test mIoU > 0.02.

The assertion message carries the measured numbers. The claim did not hold when first measured,
so the test is a strict expected failure: it documents the negative result and turns red the day
pretraining starts to help (then remove the marker).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.integration

MARGIN = 0.02
SEEDS = (0, 1, 2)


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Measured with one torch thread (as tests/finetune/ runs): tiny tensors, shared cores."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def gain_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from earthloop.config import load_config
    from earthloop.ingest.pipeline import run_ingest
    from earthloop.synth import generate

    base = tmp_path_factory.mktemp("finetune-gain")
    root = base / "synthetic"
    # one date in each third of the year: ingest's three season windows each get a scene
    generate(
        root, preset="tiny", seed=1, size_px=512, tiles=["33TWL"], dates=["02-01", "06-15", "10-15"]
    )
    bbox = json.loads((root / "manifest.json").read_text())["labels"]["33TWL"]["bbox"]
    work = base / "work"
    run_ingest(
        load_config(
            None,
            [
                f"workdir={work}",
                f"stac.url={root / 'catalog' / 'catalog.json'}",
                "ingest.chip_size=32",
                "ingest.num_locations=196",
                "ingest.sampling=grid",
                "ingest.max_chip_cloud=0.5",
                "ingest.dates_per_location=3",
                "ingest.workers=2",
                "ingest.bbox=" + json.dumps(bbox),
            ],
        )
    )
    return root, work


def _overrides(root: Path, work: Path, inits: list[dict[str, Any]]) -> list[str]:
    return [
        f"workdir={work}",
        f"data_dir={root}",
        'ingest.bands=["B02","B03","B04","B08"]',
        "finetune.name=gain",
        "finetune.backbone=resnet_tiny",
        "finetune.split.mode=blocks",
        "finetune.split.block_deg=0.004",
        "finetune.max_cloud=0.5",
        "finetune.max_eval_chips=60",
        "finetune.fractions=[0.05, 0.5]",
        f"finetune.seeds={list(SEEDS)}",
        "finetune.max_steps=150",
        "finetune.eval_every=50",
        "finetune.batch_size=16",
        "finetune.search.lr=3e-3",
        "finetune.search.encoder_lr_mult=1.0",
        f"finetune.inits={json.dumps(inits)}",
        "finetune.log_every_s=60",
    ]


@pytest.mark.xfail(
    strict=True,
    reason="measured: the claim does not hold on the synthetic data (first run: gains "
    "[-0.037, -0.121, +0.019], mean -0.046). Land cover there is a per-pixel spectral function "
    "that random init learns from a few labelled chips, a short SeCo on ~35 locations adds "
    "little, and seed-to-seed spread (~0.1 mIoU) exceeds any effect; see docs/finetune.md. "
    "Strict: if pretraining starts to help, this XPASS fails and the marker must go.",
)
def test_seco_beats_random_at_the_lowest_fraction(
    gain_data: tuple[Path, Path], tmp_path: Path
) -> None:
    from earthloop.config import load_config
    from earthloop.finetune.plan import plan_sweep, trial_configs
    from earthloop.finetune.quick_pretrain import quick_seco_pretrain, seco_tuples
    from earthloop.finetune.sweep import plain_loop
    from earthloop.stream import load_index

    root, work = gain_data
    probe = plan_sweep(load_config(None, _overrides(root, work, [{"name": "random"}])))
    train_locs = {probe.pool.samples[i].row["location_id"] for i in probe.pool.indices("train")}
    rows, _ = load_index(probe.cfg.table_uri("chips"), split=None)
    images, valid, ids = seco_tuples(
        [r for r in rows if r["location_id"] in train_locs], probe.bands
    )
    mean, std = probe.train_stats
    ckpt = quick_seco_pretrain(
        images,
        valid,
        tmp_path / "seco.pt",
        arch="resnet_tiny",
        bands=probe.bands,
        mean=mean,
        std=std,
        steps=200,
        batch_size=32,
        queue_size=512,
        seed=0,
    )
    plan = plan_sweep(
        load_config(
            None, _overrides(root, work, [{"name": "random"}, {"name": "seco", "path": str(ckpt)}])
        )
    )
    lowest = min(plan.fc.fractions)
    configs = [c for c in trial_configs(plan) if c["fraction"] == lowest]
    out = plain_loop(plan, configs)
    score = {(o["config"]["init"], o["config"]["seed"]): o["metrics"]["test_miou"] for o in out}
    gains = [score[("seco", s)] - score[("random", s)] for s in SEEDS]
    summary = (
        f"{len(ids)} SeCo locations, {len(plan.label_sets[(lowest, 0)].ids)} labelled "
        f"chips at {lowest:g}; test mIoU random "
        f"{[round(score[('random', s)], 3) for s in SEEDS]}, SeCo "
        f"{[round(score[('seco', s)], 3) for s in SEEDS]}, gains "
        f"{[round(g, 3) for g in gains]} (mean {np.mean(gains):+.3f}, margin {MARGIN})"
    )
    print(summary)
    assert np.mean(gains) > MARGIN, summary
