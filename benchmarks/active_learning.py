"""Learning curves of the active-learning strategies: test mIoU against labelled chips.

Issue 12 §4 asks whether choosing chips with a strategy of ``earthloop.active`` reaches random
selection's final score with fewer labels (target: ≥ 40 % fewer for the best strategy). The
protocol is fixed in docs/benchmarks.md § "Active learning: learning curves by strategy".

    .venv/bin/python benchmarks/active_learning.py --json docs/results/active_learning.json \
        --png docs/results/active_learning.png

Everything runs in this process, without Label Studio: a simulated oracle labels the chips a
strategy selects with their ground truth. What a round does is the loop's own code: the
fine-tuning loop (``finetune.train.fit`` on a ``TaskModel``) trains the round's model; its
forward pass (``inference.forward_outputs``) and the embed job's ``chip_summaries`` and
``result_tables`` make the ``embeddings``/``predictions`` rows; ``pool_from_tables`` and
``select_batch`` choose the batch with the configured batch constraints. Only the reading of
chips and labels is done once up front (``finetune.data.materialise``) instead of per round.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from earthloop.active import SelectionConfig, pool_from_tables, select_batch
from earthloop.active.embed import chip_summaries, result_tables
from earthloop.config import EarthloopConfig, load_config
from earthloop.finetune.data import Sample, TrialArrays, materialise, read_raw
from earthloop.finetune.model import build_encoder
from earthloop.finetune.plan import SweepPlan, plan_sweep
from earthloop.finetune.train import EvalSpec, TrainParams, fit
from earthloop.inference import forward_outputs
from earthloop.models.task import TaskModel
from earthloop.stream import load_index

LOG = logging.getLogger("al_curves")
STRATEGIES = ["random", "entropy", "margin", "knn", "seasonal", "coreset", "hybrid"]
STAGES = ("train", "infer", "select", "label")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--config", default="configs/demo.yaml")
    ap.add_argument("--world", default="runs/al-bench", help="synthetic world (made if absent)")
    ap.add_argument("--strategies", nargs="+", default=STRATEGIES, choices=STRATEGIES)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--initial", type=int, default=20, help="random chips labelled first")
    ap.add_argument("--batch", type=int, default=20, help="chips selected per round")
    ap.add_argument("--rounds", type=int, default=4, help="selection rounds after the first")
    ap.add_argument("--arch", default="resnet_tiny")
    ap.add_argument("--steps", type=int, default=60, help="training steps per round")
    ap.add_argument("--train-batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    ap.add_argument("--png", default=None)
    return ap.parse_args(argv)


def world_overrides(world: Path) -> list[str]:
    """Config overrides pointing at the synthetic demo world in ``world`` (made if absent)."""
    from earthloop.ingest.pipeline import run_ingest
    from earthloop.synth import generate
    from earthloop.synth.manifest import load_manifest

    data, work = world / "data", world / "work"
    manifest_path = data / "manifest.json"
    manifest = (
        load_manifest(data) if manifest_path.exists() else generate(data, preset="demo", seed=0)
    )
    overrides = [
        f"workdir={work}",
        f"data_dir={data}",
        f"stac.url={manifest.catalog_path}",
        f"pretrain.probe.labels={manifest_path}",
    ]
    if not (work / "tables" / "chips").exists():
        LOG.info("ingesting the synthetic demo world into %s", world)
        LOG.info("%s", run_ingest(load_config(None, overrides)).summary())
    return overrides


@dataclass
class Bench:
    """What every run shares: the plan, the candidate chips with their truth, val and test."""

    plan: SweepPlan
    spec: EvalSpec
    rows: list[dict[str, Any]]  # candidate chips (index rows), in pool order
    chips: TrialArrays  # candidates, normalised, with their label maps (the oracle's truth)
    valid: np.ndarray  # (N, H, W) bool
    val: TrialArrays
    test: TrialArrays
    fractions: np.ndarray  # (N, num_outputs) class fractions of each candidate's labels
    chips_table: pa.Table = field(init=False)

    def __post_init__(self) -> None:
        self.chips_table = pa.table(
            {
                "chip_id": [r["chip_id"] for r in self.rows],
                "lon": [float(r["lon"]) for r in self.rows],
                "lat": [float(r["lat"]) for r in self.rows],
            }
        )


def class_fractions(targets: np.ndarray, n: int, ignore: int | None) -> np.ndarray:
    """(N, n) share of each class among each chip's labelled pixels (the pull's histogram)."""
    out = np.zeros((len(targets), n), dtype=np.float64)
    for i, t in enumerate(targets):
        counts = np.bincount(t.ravel(), minlength=n)[:n].astype(np.float64)
        if ignore is not None and 0 <= ignore < n:
            counts[ignore] = 0.0
        out[i] = counts / max(counts.sum(), 1.0)
    return out


def build_bench(cfg: EarthloopConfig) -> Bench:
    """Plan the split, read every candidate chip of the train locations once, and val/test."""
    plan = plan_sweep(cfg)
    pool = plan.pool
    mean, std = plan.train_stats
    train_locs = {pool.samples[i].row["location_id"] for i in pool.indices("train")}
    version = pool.chips.version if pool.chips else None
    index, _ = load_index(
        cfg.table_uri("chips"), version=version, split=None, max_cloud=plan.fc.max_cloud
    )
    rows = sorted((r for r in index if r["location_id"] in train_locs), key=lambda r: r["chip_id"])
    cands = dataclasses.replace(
        pool, samples=[Sample(r["chip_id"], "train", 0, {}, r) for r in rows]
    )
    every = list(range(len(rows)))
    chips = materialise(cands, every, mean, std, boundary_px=plan.fc.boundary_px)
    _, valid, _, _, ids = read_raw(cands, every)
    if ids != chips.ids:
        raise RuntimeError("candidate reads disagree on which chips are readable")
    by_id = {r["chip_id"]: r for r in rows}
    rows = [by_id[i] for i in chips.ids]
    spec = EvalSpec(
        plan.fc.task,
        pool.num_outputs,
        pool.class_ids,
        pool.class_names,
        pool.ignore_index,
        plan.fc.boundary_px,
        plan.fc.primary_metric,
    )
    val = materialise(pool, pool.indices("val"), mean, std, boundary_px=plan.fc.boundary_px)
    test = materialise(pool, pool.indices("test"), mean, std, boundary_px=plan.fc.boundary_px)
    fractions = class_fractions(chips.targets, pool.num_outputs, pool.ignore_index)
    return Bench(plan, spec, rows, chips, valid, val, test, fractions)


def subset(data: TrialArrays, idx: list[int]) -> TrialArrays:
    boundary = data.boundary[idx] if data.boundary is not None else None
    return TrialArrays(data.images[idx], data.targets[idx], boundary, [data.ids[i] for i in idx])


def train_round(bench: Bench, labelled: list[int], seed: int, ns: argparse.Namespace) -> Any:
    """Train the round's model from scratch on the labelled chips; (model, test score)."""
    torch.manual_seed(seed)
    plan = bench.plan
    model = TaskModel(
        bench.spec.task, build_encoder(plan.inits["random"]), plan.pool.num_outputs, frozen=False
    )
    params = TrainParams(
        lr=ns.lr,
        weight_decay=1e-4,
        encoder_lr_mult=1.0,
        mode="full",
        batch_size=ns.train_batch,
        max_steps=ns.steps,
        eval_every=max(1, ns.steps // 2),
        seed=seed,
        augment=True,
    )
    last = fit(model, subset(bench.chips, labelled), bench.val, bench.test, params, bench.spec)
    return model, float(last[f"test_{bench.spec.primary}"])


def model_tables(bench: Bench, model: TaskModel, version: str) -> tuple[pa.Table, pa.Table]:
    """The round model's ``embeddings`` and ``predictions`` rows for every candidate chip."""
    x = torch.from_numpy(bench.chips.images)
    outs = [
        forward_outputs(model, x[s : s + 64], bench.spec.class_ids) for s in range(0, len(x), 64)
    ]
    probs = np.concatenate([o.probs for o in outs])
    entropy, margin, hist = chip_summaries(bench.spec.task, probs, bench.valid)
    grids = np.concatenate([o.grid for o in outs])
    batch = {
        "chip_id": np.asarray(bench.chips.ids),
        "location_id": np.asarray([r["location_id"] for r in bench.rows]),
        "season": np.asarray([int(r["season"]) for r in bench.rows], dtype=np.int32),
        "embedding": np.concatenate([o.embedding for o in outs]).astype(np.float32),
        "grid": grids.reshape(len(grids), -1).astype(np.float32),
        "grid_shape": np.tile(np.asarray(grids.shape[1:], np.int32), (len(grids), 1)),
        "mean_entropy": entropy,
        "mean_margin": margin,
        "class_histogram": hist,
    }
    return result_tables(batch, version)


def select_round(
    bench: Bench,
    cfg: SelectionConfig,
    tables: tuple[pa.Table, pa.Table],
    labelled: list[int],
    round_: int,
) -> list[int]:
    """The strategy's batch: pool from the round's tables, labelled chips as references."""
    emb, pred = tables
    ids = bench.chips.ids
    vectors = {ids[i]: bench.fractions[i] for i in labelled}
    pool = pool_from_tables(emb, chips=bench.chips_table, predictions=pred, label_vectors=vectors)
    picked = select_batch(pool, cfg, round_=round_).chip_ids
    pos = {c: i for i, c in enumerate(ids)}
    return [pos[c] for c in picked]


@dataclass
class Curve:
    labels: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    stage_s: list[dict[str, float]] = field(default_factory=list)  # per selection round


def run_strategy(
    bench: Bench,
    name: str,
    seed: int,
    start: tuple[list[int], float, tuple[pa.Table, pa.Table]],
    base: SelectionConfig,
    ns: argparse.Namespace,
) -> Curve:
    """One strategy × seed: from the shared first round, ``ns.rounds`` select → label → train."""
    labelled, score, tables = list(start[0]), start[1], start[2]
    cfg = base.model_copy(
        update={
            "batch_size": ns.batch,
            "seed": seed,
            "strategies": SelectionConfig.model_validate(
                {"strategies": [{"name": name}]}
            ).strategies,
        }
    )
    curve = Curve([len(labelled)], [score])
    for r in range(1, ns.rounds + 1):
        t: dict[str, float] = {}
        t0 = time.perf_counter()
        new = select_round(bench, cfg, tables, labelled, r)
        t["select"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        labelled += new  # the oracle: truth is at hand, this is only bookkeeping
        t["label"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        model, score = train_round(bench, labelled, seed, ns)
        t["train"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        if r < ns.rounds:  # the last model selects nothing
            tables = model_tables(bench, model, f"{name}-s{seed}-r{r}")
        t["infer"] = time.perf_counter() - t0
        curve.labels.append(len(labelled))
        curve.scores.append(score)
        curve.stage_s.append(t)
        LOG.info("%s seed %d round %d: %d labels, test mIoU %.4f %s", name, seed, r,
                 len(labelled), score, {k: round(v, 1) for k, v in t.items()})  # fmt: skip
    return curve


def savings(labels: list[float], scores: list[float], target: float, final: float) -> float | None:
    """1 − (labels at which the mean curve first reaches ``target``) / ``final``; None if never."""
    for i, s in enumerate(scores):
        if s >= target:
            if i == 0:
                return 1.0 - labels[0] / final
            frac = (target - scores[i - 1]) / max(s - scores[i - 1], 1e-12)
            reached = labels[i - 1] + frac * (labels[i] - labels[i - 1])
            return 1.0 - reached / final
    return None


def apply_savings(summary: dict[str, Any]) -> None:
    """Each strategy's label savings against random's final mean score (in place).

    Undefined (None, with the reason under ``savings_note``) when random's final score is not
    above the shared initial round's: every curve starts there, so "reaching random's final
    score" would then be read off the starting point, not off anything selection did.
    """
    rnd = summary["random"]
    target, final = rnd["test_miou_mean"][-1], rnd["labels_per_round"][-1]
    start = rnd["test_miou_mean"][0]
    for s in summary.values():
        if target <= start:
            s["label_savings_vs_random"] = None
            s["savings_note"] = (
                f"undefined: random's final mean test mIoU {target:.3f} at {final:g} labels is "
                f"not above the initial round's {start:.3f}"
            )
        else:
            s["label_savings_vs_random"] = savings(
                s["labels_per_round"], s["test_miou_mean"], target, final
            )
            s.pop("savings_note", None)


def summarise(curves: dict[str, list[Curve]]) -> dict[str, Any]:
    """Per strategy: labels per round, mean/std test mIoU, savings vs random, stage times."""
    out: dict[str, Any] = {}
    for name, runs in curves.items():
        scores = np.array([c.scores for c in runs])
        out[name] = {
            "labels_per_round": np.mean([c.labels for c in runs], axis=0).tolist(),
            "labels_per_seed": [c.labels for c in runs],
            "test_miou_mean": scores.mean(axis=0).tolist(),
            "test_miou_std": scores.std(axis=0).tolist(),
            "test_miou_per_seed": scores.tolist(),
            "round_stage_s": {
                k: float(np.mean([t.get(k, 0.0) for c in runs for t in c.stage_s])) for k in STAGES
            },
        }
    if "random" in out:
        apply_savings(out)
    return out


def plot(summary: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, s in summary.items():
        x, m, sd = (
            np.asarray(s[k]) for k in ("labels_per_round", "test_miou_mean", "test_miou_std")
        )
        if name == "random":
            ax.plot(x, m, marker="o", label=name, color="black", linewidth=2.5)
        else:
            ax.plot(x, m, marker="o", label=name)
        ax.fill_between(x, m - sd, m + sd, alpha=0.12, color=ax.lines[-1].get_color())
    ax.set_xlabel("labelled chips")
    ax.set_ylabel("test mIoU (mean ± std over seeds)")
    ax.set_title("Active learning on the synthetic demo world")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def first_round(
    bench: Bench, seed: int, ns: argparse.Namespace
) -> tuple[tuple[list[int], float, tuple[pa.Table, pa.Table]], dict[str, float]]:
    """The seed's random initial set, its model and its tables: shared by every strategy."""
    rng = np.random.default_rng([seed, 0])
    labelled = sorted(rng.choice(len(bench.chips), size=ns.initial, replace=False).tolist())
    t0 = time.perf_counter()
    model, score = train_round(bench, labelled, seed, ns)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    tables = model_tables(bench, model, f"initial-s{seed}")
    LOG.info("seed %d: %d initial labels, test mIoU %.4f", seed, len(labelled), score)
    return (labelled, score, tables), {"train": train_s, "infer": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> int:
    ns = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("earthloop").setLevel(logging.WARNING)
    torch.set_num_threads(ns.threads)
    t_all = time.perf_counter()
    overrides = world_overrides(Path(ns.world))
    cfg = load_config(
        ns.config,
        [*overrides, f"finetune.backbone={ns.arch}", "finetune.max_eval_chips=null",
         "finetune.fractions=[1.0]", "finetune.inits=[{name: random}]"],
    )  # fmt: skip
    t0 = time.perf_counter()
    bench = build_bench(cfg)
    prep_s = time.perf_counter() - t0
    LOG.info("pool %d candidates; val %d, test %d chips (%.1fs)", len(bench.chips),
             len(bench.val), len(bench.test), prep_s)  # fmt: skip
    curves: dict[str, list[Curve]] = {s: [] for s in ns.strategies}
    initial_s = []
    for seed in ns.seeds:
        start, times = first_round(bench, seed, ns)
        initial_s.append(times)
        for name in ns.strategies:
            curves[name].append(run_strategy(bench, name, seed, start, cfg.active, ns))
    summary = summarise(curves)
    doc = {
        "protocol": {
            "world": "synthetic demo world (earthloop.synth preset demo, seed 0; configs/demo.yaml)",
            "candidates": len(bench.chips),
            "val_chips": len(bench.val),
            "test_chips": len(bench.test),
            "initial": ns.initial,
            "batch": ns.batch,
            "rounds": ns.rounds,
            "seeds": ns.seeds,
            "arch": ns.arch,
            "init": "random",
            "steps": ns.steps,
            "train_batch": ns.train_batch,
            "lr": ns.lr,
            "torch_threads": ns.threads,
            "selection": cfg.active.model_dump(mode="json", exclude={"batch_size", "seed"}),
        },
        "strategies": summary,
        "initial_round_s": initial_s,
        "prepare_s": prep_s,
        "total_s": time.perf_counter() - t_all,
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(),
                 "torch": torch.__version__, "load_avg": os.getloadavg()},
    }  # fmt: skip
    if ns.json:
        Path(ns.json).parent.mkdir(parents=True, exist_ok=True)
        Path(ns.json).write_text(json.dumps(doc, indent=1))
    if ns.png:
        plot(summary, ns.png)
    for name, s in summary.items():
        curve = " ".join(f"{m:.3f}" for m in s["test_miou_mean"])
        print(f"{name:9s} labels {s['labels_per_round']} mIoU {curve} "
              f"savings {s.get('label_savings_vs_random')}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
