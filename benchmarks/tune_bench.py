"""Fine-tuning sweep throughput: Ray Tune vs. the same trials in a plain Python loop.

    RAY_AUTH_MODE=token .venv/bin/python benchmarks/tune_bench.py [--steps 60 300] [--address ADDR]

Builds the tiny synthetic data set (one 256-px tile, 49 chips of 32 px) in a temporary folder,
then runs the same four trials (2 label fractions x 2 initialisations x 1 seed, resnet_tiny
U-Net, ``--steps`` optimiser steps each, an evaluation every quarter), for each ``--steps``:

1. plain loop: one after the other in this process (no Ray), 1 torch thread;
2. Tune, sequential: ``max_concurrent_trials=1``, 1 CPU per trial — the same work and the same
   parallelism as the loop, so the difference is Tune's overhead (driver start, trial actor start
   and imports, result and checkpoint reporting, Delta rows, report and PNGs);
3. Tune, parallel: every trial at once on the two-node cluster (4 logical CPUs, 2 real cores).

Figures are wall-clock seconds on this machine and therefore depend on what else runs on it
(the 2 cores are shared): run it on a quiet machine, and compare the columns of one run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

BANDS = ["B02", "B03", "B04", "B08"]


def build_data(base: Path) -> tuple[Path, Path]:
    from earthloop.config import load_config
    from earthloop.ingest.pipeline import run_ingest
    from earthloop.synth import generate

    root = base / "synthetic"
    generate(root, preset="tiny", seed=0, size_px=256, tiles=["33TWL"])
    bbox = json.loads((root / "manifest.json").read_text())["labels"]["33TWL"]["bbox"]
    work = base / "work"
    cfg = load_config(
        None,
        [
            f"workdir={work}",
            f"stac.url={root / 'catalog' / 'catalog.json'}",
            "ingest.chip_size=32",
            "ingest.num_locations=49",
            "ingest.sampling=grid",
            "ingest.max_chip_cloud=0.5",
            "ingest.dates_per_location=3",
            "ingest.workers=2",
            "ingest.bbox=" + json.dumps(bbox),
        ],
    )
    run_ingest(cfg)
    return root, work


def overrides(
    root: Path, work: Path, ckpt: Path, name: str, steps: int, concurrent: int | None
) -> list[str]:
    inits = [{"name": "random"}, {"name": "seco", "path": str(ckpt)}]
    out = [
        f"workdir={work}",
        f"data_dir={root}",
        "ingest.bands=" + json.dumps(BANDS),
        f"finetune.name={name}",
        "finetune.backbone=resnet_tiny",
        "finetune.split.mode=blocks",
        "finetune.split.block_deg=0.004",
        "finetune.max_cloud=0.5",
        "finetune.fractions=[0.5, 1.0]",
        "finetune.seeds=[0]",
        f"finetune.max_steps={steps}",
        f"finetune.eval_every={max(1, steps // 4)}",
        "finetune.batch_size=8",
        "finetune.max_eval_chips=12",
        f"finetune.inits={json.dumps(inits)}",
        "finetune.resources.cpu=1",
        "finetune.log_every_s=30",
        "finetune.verbose=0",
    ]
    if concurrent:
        out.append(f"finetune.resources.max_concurrent_trials={concurrent}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--steps",
        type=int,
        nargs="+",
        default=[60, 300],
        help="optimiser steps per trial; several values give one table each",
    )
    ap.add_argument("--address", default=os.environ.get("RAY_ADDRESS", "127.0.0.2:6390"))
    ap.add_argument("--workdir", default=None, help="keep data and results here")
    ns = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("RAY_AUTH_MODE", "token")

    import ray
    import torch
    from earthloop.config import load_config
    from earthloop.finetune.plan import plan_sweep
    from earthloop.finetune.sweep import plain_loop, run_sweep
    from earthloop.models import build_backbone, save_backbone

    base = Path(ns.workdir or tempfile.mkdtemp(prefix="tune-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    root, work = build_data(base)
    ckpt = save_backbone(
        base / "seco.pt",
        build_backbone("resnet_tiny", 4),
        arch="resnet_tiny",
        bands=BANDS,
        mean=[0.07, 0.1, 0.1, 0.28],
        std=[0.03, 0.03, 0.05, 0.09],
        method="seco",
    )
    print(f"data: {base} ({time.perf_counter() - t0:.0f}s)", flush=True)
    stamp = time.strftime("%H%M%S")
    torch.set_num_threads(1)
    ray.init(address=ns.address, logging_level="ERROR", log_to_driver=False)

    tables: list[tuple[int, list[tuple[str, int, float]]]] = []
    phases: list[str] = []
    for steps in ns.steps:
        results: list[tuple[str, int, float]] = []
        plan = plan_sweep(
            load_config(None, overrides(root, work, ckpt, f"loop{steps}-{stamp}", steps, 1))
        )
        t0 = time.perf_counter()
        out = plain_loop(plan)
        results.append(("plain loop (sequential, 1 process)", len(out), time.perf_counter() - t0))
        for label, concurrent in (
            ("Ray Tune, sequential (1 trial at a time)", 1),
            ("Ray Tune, parallel (4 x 1 CPU, 2 nodes)", None),
        ):
            name = f"tune{concurrent or 'all'}-{steps}-{stamp}"
            cfg = load_config(None, overrides(root, work, ckpt, name, steps, concurrent))
            plan = plan_sweep(cfg)
            t0 = time.perf_counter()
            res = run_sweep(cfg, plan=plan)
            wall = time.perf_counter() - t0
            if res.errors:
                print(f"{label}: {res.errors} trial errors", file=sys.stderr)
                return 1
            results.append((label, res.trials, wall))
            phases.append(
                f"{steps} steps, {label}: Tuner.fit {res.fit_s:.1f}s, Delta rows + "
                f"report + PNGs {res.report_s:.1f}s, planning/start "
                f"{wall - res.fit_s - res.report_s:.1f}s"
            )
        tables.append((steps, results))

    print(
        f"\ntiny sweep: 4 trials (2 fractions x 2 inits x 1 seed), resnet_tiny U-Net, 32-px "
        f"chips, batch 8; {os.cpu_count()} cores; Tune times include Delta rows + report"
    )
    print("| steps / trial | run | wall s | s / trial | trials / hour | vs plain loop |")
    print("|---|---|---|---|---|---|")
    for steps, results in tables:
        loop_s = results[0][2]
        for label, n, wall in results:
            rel = "—" if label.startswith("plain") else f"{100 * (wall - loop_s) / loop_s:+.0f} %"
            print(
                f"| {steps} | {label} | {wall:.1f} | {wall / n:.1f} | {3600 * n / wall:.0f} | "
                f"{rel} |"
            )
    print()
    for line in phases:
        print(line)
    for steps, results in tables:
        loop_s, seq = results[0][2], results[1][2]
        print(
            f"Tune overhead at {steps} steps/trial (sequential vs loop, same work): "
            f"{100 * (seq - loop_s) / loop_s:.1f} % (target <= 15 %)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
