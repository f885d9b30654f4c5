"""Does pretraining help at 1 % / 10 % labels? A self-contained measurement on the local data.

    .venv/bin/python benchmarks/finetune_evidence.py --config configs/demo.yaml \
        --out runs/demo/evidence [--arch resnet_tiny] [--pretrain-steps 200] [--seeds 0 1 2] \
        [section.key=value ...]

1. Plans the fine-tuning split exactly as the sweep does (``finetune:`` section + overrides).
2. Pretrains SeCo in-process (:mod:`earthloop.finetune.quick_pretrain`) on the *train-split
   locations only* — the pretraining never sees a val/test place, labelled or not — with the
   same band statistics the random initialisation is normalised with, so the two initialisations
   differ in their weights and nothing else.
3. Fine-tunes random vs. SeCo (and any ``--extra-init name=path``) for every fraction x seed, with
   the same hyper-parameter candidates for every cell (``--mults``: encoder lr multipliers;
   the best on *val* is kept per cell), in a plain loop (no Ray: this is a measurement, not a
   sweep), and writes the usual report (tables + PNGs) plus ``evidence.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch
from earthloop.config import EarthloopConfig, load_config
from earthloop.finetune.plan import SweepPlan, plan_summary, plan_sweep
from earthloop.finetune.quick_pretrain import quick_seco_pretrain, seco_tuples
from earthloop.finetune.report import gains, write_report
from earthloop.finetune.rows import mark_selected, trial_row
from earthloop.finetune.sweep import plain_loop
from earthloop.stream import load_index

log = logging.getLogger("earthloop.finetune")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--config", default=None)
    ap.add_argument("--out", required=True)
    ap.add_argument("--arch", default="resnet_tiny")
    ap.add_argument("--pretrain-steps", type=int, default=200)
    ap.add_argument("--pretrain-batch", type=int, default=32)
    ap.add_argument("--pretrained", default=None, help="reuse this SeCo backbone.pt")
    ap.add_argument("--extra-init", action="append", default=[], metavar="NAME=PATH")
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.1])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--mults", type=float, nargs="+", default=[0.1, 1.0])
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--mode", choices=["full", "linear"], default="full")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("overrides", nargs="*")
    return ap.parse_args(argv)


def pretrain_on_train_split(
    cfg: EarthloopConfig, probe: SweepPlan, ns: argparse.Namespace, out: Path
) -> None:
    """SeCo on the train-split locations of ``probe``, normalised with its train statistics."""
    mean, std = probe.train_stats
    train_locs = {probe.pool.samples[i].row["location_id"] for i in probe.pool.indices("train")}
    rows, _ = load_index(
        cfg.table_uri("chips"),
        version=probe.pool.chips.version if probe.pool.chips else None,
        split=None,
    )
    rows = [r for r in rows if r["location_id"] in train_locs]
    images, valid, ids = seco_tuples(rows, probe.bands)
    log.info("SeCo: %d train locations x 3 dates, %s px", len(ids), images.shape[-2:])
    quick_seco_pretrain(
        images,
        valid,
        out,
        arch=ns.arch,
        bands=probe.bands,
        mean=mean,
        std=std,
        steps=ns.pretrain_steps,
        batch_size=ns.pretrain_batch,
    )


def trial_grid(plan: SweepPlan, ns: argparse.Namespace) -> list[dict[str, Any]]:
    """Every fraction x init x seed x encoder-lr multiplier, at the one ``--lr``."""
    wd = plan.fc.search.weight_decay
    return [
        {
            "fraction": f,
            "init": i,
            "seed": seed,
            "mode": ns.mode,
            "lr": ns.lr,
            "weight_decay": wd[0] if isinstance(wd, tuple) else wd,
            "encoder_lr_mult": m,
        }
        for f in plan.fc.fractions
        for i in plan.inits
        for seed in plan.fc.seeds
        for m in ns.mults
    ]


def write_evidence(
    out: Path, rows: list[dict[str, Any]], g: dict[str, Any], timings: dict[str, float]
) -> None:
    """``evidence.json``: the gains over random, the timings and every trial row."""
    doc = {
        "gains": {k: {str(f): v for f, v in d.items()} for k, d in g.items()},
        **timings,
        "rows": [
            {k: v for k, v in r.items() if k not in ("finished_at", "label_chip_ids")} for r in rows
        ],
    }
    (out / "evidence.json").write_text(json.dumps(doc, indent=1, default=str))


def main(argv: list[str] | None = None) -> int:
    ns = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(ns.threads)
    out = Path(ns.out)
    out.mkdir(parents=True, exist_ok=True)
    base = [
        *ns.overrides,
        f"finetune.backbone={ns.arch}",
        f"finetune.fractions={json.dumps(ns.fractions)}",
        f"finetune.seeds={json.dumps(ns.seeds)}",
        "finetune.inits=[{name: random}]",
    ]
    cfg = load_config(ns.config, base)
    probe = plan_sweep(cfg)  # the split and the train statistics
    seco_path = Path(ns.pretrained) if ns.pretrained else out / "seco-quick.pt"
    t0 = time.perf_counter()
    if not ns.pretrained:
        pretrain_on_train_split(cfg, probe, ns, seco_path)
    pretrain_s = time.perf_counter() - t0
    inits = [{"name": "random"}, {"name": "seco", "path": str(seco_path.resolve())}]
    for item in ns.extra_init:
        name, _, path = item.partition("=")
        inits.append({"name": name, "path": path})
    plan = plan_sweep(
        load_config(
            ns.config,
            [
                *base[:-1],
                f"finetune.inits={json.dumps(inits)}",
                f"finetune.search.lr={ns.lr}",
                f"finetune.search.modes=[{ns.mode}]",
            ],
        )
    )
    t0 = time.perf_counter()
    results = plain_loop(plan, trial_grid(plan, ns))
    finetune_s = time.perf_counter() - t0
    rc = plan.row_context()
    rows = mark_selected(
        [
            trial_row(
                rc,
                f"e{n:03d}",
                res["config"],
                {**res["metrics"], "training_iteration": plan.fc.iterations},
                None,
                None,
            )
            for n, res in enumerate(results)
        ]
    )
    summary = plan_summary(plan)
    summary["sweep"] = f"evidence ({ns.arch}, SeCo {ns.pretrain_steps} steps, {ns.mode})"
    paths = write_report(rows, str(out), summary)
    g = gains(rows)
    timings = {"pretrain_s": pretrain_s, "finetune_s": finetune_s, "trials": len(results)}
    write_evidence(out, rows, g, timings)
    print(f"report: {paths.markdown}")
    for name, by_f in sorted(g.items()):
        for f, by_seed in sorted(by_f.items()):
            vals = list(by_seed.values())
            print(
                f"gain {name} at {f:g}: mean {sum(vals) / len(vals):+.4f} per seed "
                f"{[round(v, 4) for v in vals]}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
