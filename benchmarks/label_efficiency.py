"""What pretraining buys at a label budget: the protocol of docs/label-efficiency.md, run.

    .venv/bin/python benchmarks/label_efficiency.py --config configs/bench.yaml \
        --out runs/bench/label-efficiency --results docs/results/label_efficiency.json \
        [--heldout-bbox W S E N] [--pretrain-steps 3000] [--cscl-steps 1000] \
        [--fractions 0.01 0.05 0.1 1.0] [--seeds 0 1 2] [--modes linear full] \
        [--inits random seco dense cscl] [--extra-init NAME=PATH] [section.key=value ...]

1. Plans the fine-tuning split as the sweep does (``finetune:`` + ``--heldout-bbox``), and from it
   the pretraining archive: every chip of the train blocks, all dates, never a val/test/held-out
   place.
2. Pretrains SeCo and dense contrast on that archive, and CSCL once per (fraction, seed) on
   exactly that cell's labelled subset, with the production engine and methods
   (:mod:`earthloop.pretrain.local`) and the production export.
3. Fine-tunes every init x fraction x seed x mode x learning-rate candidate in a plain loop,
   keeps the best on val per cell, and writes test and held-out scores (mean, std, per seed),
   gains over random, PNG curves and the JSON of ``--results``.
The defaults are the protocol's budgets (hours on 2 CPU cores); a smaller run must say so, and
is recorded as such in the JSON (``budget``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from earthloop.config import EarthloopConfig, apply_overrides, load_config
from earthloop.finetune.data import read_raw
from earthloop.finetune.plan import SweepPlan, plan_sweep
from earthloop.finetune.rows import mark_selected, trial_row
from earthloop.finetune.splits import assign_split
from earthloop.finetune.sweep import plain_loop
from earthloop.pretrain.local import load_samples, pretrain_in_memory
from earthloop.pretrain.methods import method_class
from earthloop.stream import load_index

log = logging.getLogger("earthloop.bench")

PROTOCOL = "docs/label-efficiency.md v1"
SCORES = ("test_miou", "test_boundary_miou", "heldout_miou", "heldout_boundary_miou")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--config", default=None)
    ap.add_argument("--out", required=True)
    ap.add_argument("--results", default=None, help="write the results JSON here too")
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument(
        "--heldout-bbox", type=float, nargs=4, default=None, metavar=("W", "S", "E", "N")
    )
    ap.add_argument("--inits", nargs="+", default=["random", "seco", "dense", "cscl"])
    ap.add_argument(
        "--target-archive",
        action="store_true",
        help="pretraining also sees the held-out region's archive tiles (unlabelled); the "
        "held-out test is then its test tiles only (docs/label-efficiency.md, Ablation E)",
    )
    ap.add_argument("--extra-init", action="append", default=[], metavar="NAME=PATH")
    ap.add_argument("--pretrain-steps", type=int, default=3000)
    ap.add_argument("--pretrain-batch", type=int, default=64)
    ap.add_argument("--cscl-steps", type=int, default=1000)
    ap.add_argument("--cscl-batch", type=int, default=None, help="default: --pretrain-batch")
    ap.add_argument("--queue-size", type=int, default=None, help="SeCo queue (default: config)")
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.05, 0.1, 1.0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--modes", nargs="+", default=["linear", "full"])
    ap.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 3e-3, 1e-2])
    ap.add_argument("--mults", type=float, nargs="+", default=[0.1, 1.0])
    ap.add_argument("--max-steps", type=int, default=2000)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="where to pretrain and fine-tune: cpu | cuda")
    ap.add_argument("--workers", type=int, default=1, help="processes for trials and pretraining")
    ap.add_argument(
        "--deadline-s",
        type=float,
        default=None,
        help="start no fine-tuning trial this many seconds after the run started",
    )
    ap.add_argument(
        "--bundle-out",
        default=None,
        help="write the planned split, its chips and the pretraining samples here, then stop",
    )
    ap.add_argument(
        "--bundle",
        default=None,
        help="run from a --bundle-out file (no storage); a bundle is a pickle: load only your own",
    )
    ap.add_argument("overrides", nargs="*")
    return ap.parse_args(argv)


def finetune_overrides(ns: argparse.Namespace) -> list[str]:
    out = [
        *ns.overrides,
        f"finetune.backbone={ns.arch}",
        f"finetune.fractions={json.dumps(ns.fractions)}",
        f"finetune.seeds={json.dumps(ns.seeds)}",
        f"finetune.max_steps={ns.max_steps}",
        f"finetune.eval_every={ns.eval_every}",
        # the modes are part of a cell: linear probe and full fine-tuning are each selected on val
        f"finetune.search.modes={json.dumps(ns.modes)}",
        "finetune.search.modes_in_grid=true",
    ]
    if ns.heldout_bbox:
        out.append(f"finetune.split.heldout_bbox={json.dumps(ns.heldout_bbox)}")
    return out


def world_labels(
    cfg: EarthloopConfig, out: Path, target_archive: bool = False
) -> tuple[str, list[float], set[str]] | None:
    """For a benchmark world (docs/world.md): its labelled tiles, held-out box and archive tiles.

    The world's manifest holds ground truth for every tile, but only the ``pool`` and ``test``
    tiles are the labelled data set (the ``archive`` tiles are the unlabelled archive), and the
    held-out region's tiles are scored apart. Writes a manifest with only those labels (absolute
    paths) and returns (its path, the held-out region's lon/lat box, the archive tiles). None
    when the manifest is not a world's.

    ``target_archive``: the held-out region's ``archive`` tiles join the unlabelled archive
    (a team has imagery of the region it must map, only no labels there), so their labels are
    dropped and the held-out test is the region's ``test`` tiles alone.
    """
    src = Path(cfg.finetune.labels or f"{cfg.data_dir}/manifest.json")
    manifest = json.loads(src.read_text())
    world = (manifest.get("params") or {}).get("world")
    regions = manifest.get("regions") or {}
    if not world or not regions:
        return None
    held = world["heldout"]
    keep: dict[str, Any] = {}
    archive: set[str] = set()
    boxes: list[list[float]] = []
    for tile, entry in manifest["labels"].items():
        info = regions[tile]
        if info["region"] == held:
            boxes.append(entry["bbox"])
            if target_archive and info["role"] == "archive":
                archive.add(tile)
                continue
        elif info["role"] == "archive":
            archive.add(tile)
            continue
        keep[tile] = {
            k: (str((src.parent / v).resolve()) if k in ("landcover", "croptype", "parcels") else v)
            for k, v in entry.items()
        }
    pad = 0.01
    box = [
        min(b[0] for b in boxes) - pad,
        min(b[1] for b in boxes) - pad,
        max(b[2] for b in boxes) + pad,
        max(b[3] for b in boxes) + pad,
    ]
    path = out / "labelled-manifest.json"
    path.write_text(json.dumps({**manifest, "labels": keep}, indent=1))
    return str(path), box, archive


def pretrain_may_see(split: str, tile: str | None, archive_tiles: set[str]) -> bool:
    """The train blocks of the labelled tiles, and the unlabelled archive tiles wherever their
    blocks fall; never a val or test block of a labelled tile, never a held-out labelled tile.

    A held-out-region tile is in ``archive_tiles`` only under ``--target-archive``
    (:func:`world_labels`), and then its labels are not in the labelled manifest either."""
    return split == "train" or tile in archive_tiles


def archive_rows(
    cfg: EarthloopConfig, probe: SweepPlan, archive_tiles: set[str]
) -> list[dict[str, Any]]:
    """Chip index rows pretraining may see, every date (:func:`pretrain_may_see`)."""
    fc = cfg.finetune
    ref = probe.pool.chips
    rows, _ = load_index(cfg.table_uri("chips"), version=ref.version if ref else None, split=None)
    out = []
    for r in rows:
        s = assign_split(r["lon"], r["lat"], r.get("split"), fc.split)
        if pretrain_may_see(s, r.get("tile"), archive_tiles):
            out.append(r)
    return out


def _finite(x: Any) -> Any:
    """NaN/inf as null: the results are read by other tools, and strict JSON has no NaN."""
    if isinstance(x, float) and not np.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    return x


def _first_last(history: Sequence[dict[str, Any]]) -> list[float]:
    """First and last training loss (the history's entry before training has none: NaN)."""
    losses = [float(h["loss"]) for h in history if np.isfinite(h.get("loss", float("nan")))]
    return [losses[0], losses[-1]] if losses else []


def _pretrain_cfg(cfg: EarthloopConfig, ns: argparse.Namespace, method: str, **extra: Any) -> Any:
    over: dict[str, Any] = {
        "method": method,
        "backbone": ns.arch,
        "batch_size": ns.pretrain_batch,
        "seed": 0,
        **extra,
    }
    if method == "seco" and ns.queue_size is not None:
        over["queue_size"] = ns.queue_size
    return cfg.pretrain.model_copy(update=over)


def export(method: Any, path: Path, probe: SweepPlan, arch: str, name: str) -> Path:
    """The production export of a trained method (what fine-tuning restores)."""
    from earthloop.models import save_backbone

    mean, std = probe.train_stats
    return save_backbone(
        path,
        method.backbone,
        arch=arch,
        bands=probe.bands,
        mean=mean,
        std=std,
        method=name,
        decoder=method.decoder,  # dense contrast and CSCL: their loss acts on it
    )


def archive_samples(
    cfg: EarthloopConfig, probe: SweepPlan, ns: argparse.Namespace, name: str
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The train-block archive read as ``name``'s date series, and where it came from."""
    pc = _pretrain_cfg(cfg, ns, name)
    dates = method_class(name).stream_dates(pc) or 1
    rows = archive_rows(cfg, probe, ns.archive_tiles)
    t0 = time.perf_counter()
    samples = load_samples(rows, probe.bands, dates)
    return samples, {
        "dates": dates,
        "chips_in_archive": len(rows),
        "tiles": sorted({str(r.get("tile")) for r in rows}),
        "read_s": round(time.perf_counter() - t0, 1),
    }


def pretrain_self_supervised(
    cfg: EarthloopConfig,
    probe: SweepPlan,
    ns: argparse.Namespace,
    name: str,
    out: Path,
    read: tuple[dict[str, np.ndarray], dict[str, Any]] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """SeCo or dense contrast on the train-block archive; returns the export and its record."""
    _worker_threads(ns)
    pc = _pretrain_cfg(cfg, ns, name)
    samples, src = read or archive_samples(cfg, probe, ns, name)
    dates, read_s = src["dates"], src["read_s"]
    n = len(samples["images"])
    if name == "seco" and ns.queue_size is None:
        # half an epoch of keys (whole batches): never stale keys of the query's own location
        queue = pc.batch_size * max(1, (n // pc.batch_size) // 2)
        pc = pc.model_copy(update={"queue_size": queue})
    mean, std = probe.train_stats
    log.info("%s: %d train-block locations x %d dates", name, len(samples["images"]), dates)
    t0 = time.perf_counter()
    method, history = pretrain_in_memory(
        samples, pc, mean, std, steps=ns.pretrain_steps, device=ns.device
    )
    train_s = time.perf_counter() - t0
    path = export(method, out / f"{name}.pt", probe, ns.arch, name)
    return path, {
        "method": name,
        "locations": int(len(samples["images"])),
        "dates": dates,
        "chips_in_archive": src["chips_in_archive"],
        "tiles": src["tiles"],
        "device": ns.device,
        "steps": ns.pretrain_steps,
        "batch_size": ns.pretrain_batch,
        "queue_size": pc.queue_size if name == "seco" else None,
        "read_s": round(read_s, 1),
        "train_s": round(train_s, 1),
        "loss_first_last": _first_last(history),
    }


def pretrain_cscl(
    cfg: EarthloopConfig,
    probe: SweepPlan,
    ns: argparse.Namespace,
    fraction: float,
    seed: int,
    out: Path,
) -> tuple[Path, dict[str, Any]]:
    """CSCL on exactly the labelled subset of the cell (fraction, seed), nothing else."""
    _worker_threads(ns)
    pool = probe.pool
    idx = pool.train_subset(fraction, seed)
    ids = [pool.samples[i].id for i in idx]
    images, valid, labels, _, read_ids = read_raw(pool, idx)
    assert labels is not None, "CSCL needs segmentation labels"
    samples = {
        "image": images.astype(np.float32),
        "valid": valid,
        "label": labels.astype(np.int64),
    }
    pc = _pretrain_cfg(
        cfg,
        ns,
        "cscl",
        batch_size=min(ns.cscl_batch or ns.pretrain_batch, len(read_ids)),
        cscl_labelled_chips=ids,
        seed=seed,
    )
    mean, std = probe.train_stats
    t0 = time.perf_counter()
    method, history = pretrain_in_memory(
        samples, pc, mean, std, steps=ns.cscl_steps, device=ns.device
    )
    path = export(method, out / f"cscl-f{fraction:g}-s{seed}.pt", probe, ns.arch, "cscl")
    return path, {
        "method": "cscl",
        "fraction": fraction,
        "seed": seed,
        "device": ns.device,
        "labelled_chips": len(read_ids),
        "steps": ns.cscl_steps,
        "batch_size": min(ns.cscl_batch or ns.pretrain_batch, len(read_ids)),
        "train_s": round(time.perf_counter() - t0, 1),
        "loss_first_last": _first_last(history),
    }


def grid(
    plan: SweepPlan, ns: argparse.Namespace, init_names: Sequence[str]
) -> list[dict[str, Any]]:
    """Every cell x learning-rate candidate; a CSCL init only in its own (fraction, seed) cell."""
    wd = plan.fc.search.weight_decay
    out = []
    for f in plan.fc.fractions:
        for seed in plan.fc.seeds:
            for name in init_names:
                if name.startswith("cscl@") and name != f"cscl@{f:g}/{seed}":
                    continue
                for mode in ns.modes:
                    for lr in ns.lrs:
                        for m in ns.mults if mode == "full" else [1.0]:
                            out.append(
                                {
                                    "fraction": f,
                                    "init": name,
                                    "seed": seed,
                                    "mode": mode,
                                    "lr": lr,
                                    "weight_decay": wd[0] if isinstance(wd, tuple) else wd,
                                    "encoder_lr_mult": m,
                                }
                            )
    return out


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per init x mode x fraction: mean/std/per-seed of every score, and gains over random."""
    table: dict[str, Any] = {}
    for r in rows:
        if not r["selected"]:
            continue
        init = "cscl" if r["init"].startswith("cscl@") else r["init"]
        cell = (
            table.setdefault(init, {})
            .setdefault(r["mode"], {})
            .setdefault(f"{r['fraction']:g}", {})
        )
        for k in SCORES:
            cell.setdefault(k, {})[str(r["seed"])] = r.get(k)
    for init, modes in table.items():
        for mode, fracs in modes.items():
            for f, cell in fracs.items():
                for k in SCORES:
                    vals = [v for v in cell[k].values() if v is not None and v == v]
                    cell[k] = {
                        "per_seed": cell[k],
                        "mean": statistics.fmean(vals) if vals else None,
                        "std": statistics.stdev(vals) if len(vals) > 1 else 0.0 if vals else None,
                    }
                    base = table.get("random", {}).get(mode, {}).get(f, {}).get(k)
                    if init != "random" and base:
                        diffs = [
                            v - base["per_seed"][s]
                            for s, v in cell[k]["per_seed"].items()
                            if v is not None and base["per_seed"].get(s) is not None
                        ]
                        cell[k]["gain_over_random"] = statistics.fmean(diffs) if diffs else None
    return table


def plot(table: dict[str, Any], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for key, title in (("miou", "mIoU"), ("boundary_miou", "boundary mIoU")):
        modes = sorted({m for modes in table.values() for m in modes})
        fig, axes = plt.subplots(len(modes), 2, figsize=(10, 3.6 * len(modes)), squeeze=False)
        for i, mode in enumerate(modes):
            for j, where in enumerate(("test", "heldout")):
                ax = axes[i][j]
                for init in sorted(table):
                    fracs = table[init].get(mode, {})
                    xs = sorted(fracs, key=float)
                    ys = [fracs[x][f"{where}_{key}"]["mean"] for x in xs]
                    es = [fracs[x][f"{where}_{key}"]["std"] or 0.0 for x in xs]
                    if not xs or any(y is None for y in ys):
                        continue
                    ax.errorbar(
                        [float(x) * 100 for x in xs], ys, yerr=es, marker="o", label=init, capsize=3
                    )
                ax.set_xscale("log")
                ax.set_xlabel("labelled chips (% of the train pool)")
                ax.set_ylabel(f"{where} {title}")
                ax.set_title(f"{mode}: {where} {title} (mean ± std over seeds)")
                ax.grid(alpha=0.3)
                ax.legend(fontsize=8)
        fig.tight_layout()
        p = out / f"label_efficiency_{key}.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(str(p))
    return paths


def render_markdown(doc: dict[str, Any]) -> str:
    """The results as the tables docs/benchmarks.md shows: per mode, init x fraction, for each
    score ``mean ± std`` and, for a pretrained init, the paired gain over random with how many
    seeds it held in."""
    res = doc["results"]
    fracs = sorted({f for modes in res.values() for c in modes.values() for f in c}, key=float)
    lines: list[str] = []
    names = {
        "test_miou": "in-region test mIoU",
        "test_boundary_miou": "in-region test boundary mIoU",
        "heldout_miou": "held-out region mIoU",
        "heldout_boundary_miou": "held-out region boundary mIoU",
    }
    for mode in ("linear", "full"):
        for score, title in names.items():
            lines += [f"**{title}, {mode}**", ""]
            lines.append("| init | " + " | ".join(f"{float(f):g}".rstrip() for f in fracs) + " |")
            lines.append("|---" * (len(fracs) + 1) + "|")
            for init in sorted(res, key=lambda n: (n != "random", n)):
                cells = []
                for f in fracs:
                    c = res[init].get(mode, {}).get(f, {}).get(score)
                    if not c or c.get("mean") is None:
                        cells.append("—")
                        continue
                    text = f"{c['mean']:.3f} ± {c['std']:.3f}"
                    if init != "random" and c.get("gain_over_random") is not None:
                        seeds = c.get("per_seed", {})
                        rnd = res.get("random", {}).get(mode, {}).get(f, {}).get(score, {})
                        wins = sum(
                            1
                            for k, v in seeds.items()
                            if rnd.get("per_seed", {}).get(k) is not None and v > rnd["per_seed"][k]
                        )
                        text += f" ({c['gain_over_random']:+.3f}; {wins}/{len(seeds)})"
                    cells.append(text)
                lines.append(f"| {init} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines)


def _worker_threads(ns: argparse.Namespace) -> None:
    """Torch threads of one pretraining: the machine's cores shared by the parallel runs."""
    if ns.workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // ns.workers))


# --------------------------------------------------------------------------------------------
# Bundles: the planned split and its pixels, for a machine without the data's storage (a lent
# GPU box has torch but no raster or Delta stack, and no way to reach the chips).
# --------------------------------------------------------------------------------------------

BUNDLE_FORMAT = "earthloop.label_efficiency.bundle"


def _pack(a: np.ndarray) -> Any:
    """Reflectances as int16 of value x 10^4 when that is lossless (L2A chips are DN x 10^-4
    plus an offset): half the bytes of float32 and far better compression."""
    if a.dtype == np.float32 and a.size:
        k = np.round(a * 1e4)
        if np.abs(k).max() < 32767 and np.abs(k / 1e4 - a).max() < 1e-6:
            return ("int16e4", k.astype(np.int16))
    return ("raw", a)


def _unpack(v: Any) -> Any:
    if isinstance(v, tuple) and len(v) == 2 and v[0] in ("int16e4", "raw"):
        return (v[1].astype(np.float32) / np.float32(1e4)) if v[0] == "int16e4" else v[1]
    return v


def write_bundle(
    path: Path,
    probe: SweepPlan,
    ns: argparse.Namespace,
    reads: dict[str, tuple[dict[str, np.ndarray], dict[str, Any]]],
) -> dict[str, Any]:
    """The probe plan with every pool chip preloaded, and each method's archive samples."""
    import lzma
    import pickle

    n = probe.pool.preload()
    pixels, probe.pool.pixels = probe.pool.pixels or {}, None
    try:
        payload = {
            "format": BUNDLE_FORMAT,
            "version": 1,
            "probe": probe,
            "pixels": {cid: {k: _pack(v) for k, v in e.items()} for cid, e in pixels.items()},
            "reads": {
                name: ({k: _pack(v) for k, v in smp.items()}, src)
                for name, (smp, src) in reads.items()
            },
            "heldout_bbox": ns.heldout_bbox,
            "archive_tiles": sorted(ns.archive_tiles),
        }
        raw = pickle.dumps(payload, protocol=5)
    finally:
        probe.pool.pixels = pixels
    path.write_bytes(lzma.compress(raw, preset=6))
    return {"pool_chips": n, "bytes": path.stat().st_size, "raw_bytes": len(raw)}


def load_bundle(
    path: Path,
) -> tuple[SweepPlan, dict[str, tuple[dict[str, np.ndarray], dict[str, Any]]], dict[str, Any]]:
    import lzma
    import pickle

    payload = pickle.loads(lzma.decompress(Path(path).read_bytes()))  # our own file
    if payload.get("format") != BUNDLE_FORMAT:
        raise ValueError(f"{path}: not a label-efficiency bundle")
    probe: SweepPlan = payload["probe"]
    probe.pool.pixels = {
        cid: {k: _unpack(v) for k, v in e.items()} for cid, e in payload["pixels"].items()
    }
    reads = {
        name: ({k: _unpack(v) for k, v in smp.items()}, src)
        for name, (smp, src) in payload["reads"].items()
    }
    return probe, reads, payload


def _pretrain_record(out: Path, name: str) -> Path:
    """Where a finished pretraining's export path and record are kept for a re-run."""
    return out / f"pretrain-{name.replace('@', '-').replace('/', '-s')}.json"


RESUME_FILE = "resume.json"
TRIALS_FILE = "trials.jsonl"


def _budget(ns: argparse.Namespace) -> dict[str, Any]:
    """What a finished pretraining or trial depends on beyond its own config: a re-run into the
    same --out reuses them only when this is unchanged."""
    return {
        "data": ns.bundle or ns.config,
        "arch": ns.arch,
        "pretrain_steps": ns.pretrain_steps,
        "pretrain_batch": ns.pretrain_batch,
        "cscl_steps": ns.cscl_steps,
        "cscl_batch": ns.cscl_batch,
        "queue_size": ns.queue_size,
        "max_steps": ns.max_steps,
        "eval_every": ns.eval_every,
        "overrides": sorted(o for o in ns.overrides if not o.startswith("finetune.labels=")),
        "extra_init": sorted(ns.extra_init),
        # only when set, so an --out written before the flag existed still resumes
        **({"target_archive": True} if getattr(ns, "target_archive", False) else {}),
    }


def check_resume(out: Path, ns: argparse.Namespace) -> None:
    """A re-run into the same --out continues it (finished pretrainings and trials are kept);
    with other budgets it would mix two experiments, so it is refused, naming what differs."""
    path = out / RESUME_FILE
    now = _budget(ns)
    if path.exists():
        before = json.loads(path.read_text())
        diff = sorted(k for k in set(now) | set(before) if now.get(k) != before.get(k))
        if diff:
            raise SystemExit(
                f"{out} holds a run with other budgets ({', '.join(diff)} differ: "
                f"{ {k: before.get(k) for k in diff} } before, { {k: now.get(k) for k in diff} } "
                "now); use another --out"
            )
        return
    path.write_text(json.dumps(now, indent=1))


def load_trials(out: Path) -> dict[str, dict[str, Any]]:
    """Trials finished by an earlier run of this --out, by config (a torn last line is
    dropped: the trial it was recording runs again)."""
    done: dict[str, dict[str, Any]] = {}
    path = out / TRIALS_FILE
    if not path.exists():
        return done
    for line in path.read_text().splitlines():
        try:
            res = json.loads(line)
        except json.JSONDecodeError:
            continue
        done[_config_key(res["config"])] = res
    return done


def _config_key(c: dict[str, Any]) -> str:
    return json.dumps(c, sort_keys=True, default=str)


def _run_pretraining(
    cfg: EarthloopConfig,
    probe: SweepPlan,
    ns: argparse.Namespace,
    out: Path,
    reads: dict[str, tuple[dict[str, np.ndarray], dict[str, Any]]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every pretraining of the protocol (SeCo, dense, one CSCL per cell), in ``--workers``
    processes when asked: they are independent, and one alone leaves a GPU mostly idle."""
    jobs: list[tuple[str, Any, tuple[Any, ...]]] = []
    for name in ("seco", "dense"):
        if name in ns.inits:
            jobs.append(
                (name, pretrain_self_supervised, (cfg, probe, ns, name, out, reads.get(name)))
            )
    if "cscl" in ns.inits:
        for f in ns.fractions:
            for seed in ns.seeds:
                jobs.append((f"cscl@{f:g}/{seed}", pretrain_cscl, (cfg, probe, ns, f, seed, out)))
    done: dict[str, tuple[Path, dict[str, Any]]] = {}
    for name, _, _ in jobs:
        rec_path = _pretrain_record(out, name)
        if rec_path.exists():
            rec = json.loads(rec_path.read_text())
            if Path(rec["path"]).exists():
                log.info(
                    "pretraining %s: reusing %s (from an earlier run of this --out)",
                    name,
                    rec["path"],
                )
                done[name] = (Path(rec["path"]), rec["record"])
    jobs_left = [j for j in jobs if j[0] not in done]

    def keep(name: str, result: tuple[Path, dict[str, Any]]) -> None:
        done[name] = result
        _pretrain_record(out, name).write_text(
            json.dumps({"path": str(result[0].resolve()), "record": _finite(result[1])})
        )

    if ns.workers > 1 and len(jobs_left) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(
            min(ns.workers, len(jobs_left)), mp_context=mp.get_context("spawn")
        ) as pool:
            futures = {name: pool.submit(fn, *args) for name, fn, args in jobs_left}
            for name, fut in futures.items():
                try:
                    keep(name, fut.result())
                except Exception as e:  # one failed pretraining must not lose the others
                    log.error("pretraining %s failed: %r", name, e)
    else:
        for name, fn, args in jobs_left:
            keep(name, fn(*args))
    inits: list[dict[str, Any]] = [{"name": "random"}]
    records = []
    for name, _, _ in jobs:
        if name in done:
            path, rec = done[name]
            inits.append({"name": name, "path": str(path.resolve())})
            records.append(rec)
    for item in ns.extra_init:
        name, _, path = item.partition("=")
        inits.append({"name": name, "path": path})
    return inits, records


def _bundle_plan(
    probe: SweepPlan, ns: argparse.Namespace, inits: list[dict[str, Any]]
) -> SweepPlan:
    """The fine-tuning plan from a bundle's probe: its split and pool, this run's budget and
    inits (``plan_sweep`` would need the chip index, which a bundle machine cannot read)."""
    import dataclasses

    from earthloop.config import InitSpec
    from earthloop.finetune.model import resolve_init

    fc = probe.fc.model_copy(
        update={
            "name": "label-efficiency",
            "fractions": list(ns.fractions),
            "seeds": list(ns.seeds),
            "max_steps": ns.max_steps,
            "eval_every": ns.eval_every,
            "backbone": ns.arch,
            "resources": probe.fc.resources.model_copy(
                update={"gpu": 1.0 if ns.device == "cuda" else 0.0}
            ),
        }
    )
    specs = [InitSpec.model_validate(i) for i in inits]
    resolved = {sp.name: resolve_init(sp, ns.arch, probe.bands, probe.cfg) for sp in specs}
    return dataclasses.replace(probe, fc=fc, name="label-efficiency", inits=resolved)


def _machine(ns: argparse.Namespace) -> str:
    text = f"{os.uname().machine}, {os.cpu_count()} cores, torch {torch.__version__}"
    if ns.device == "cuda" and torch.cuda.is_available():
        text += f", {torch.cuda.get_device_name()}"
    return text


def main(argv: list[str] | None = None) -> int:
    t_main = time.perf_counter()
    ns = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(ns.threads)
    out = Path(ns.out)
    out.mkdir(parents=True, exist_ok=True)
    ns.archive_tiles = set()
    if not ns.bundle_out:
        check_resume(out, ns)
    reads: dict[str, tuple[dict[str, np.ndarray], dict[str, Any]]] = {}
    if ns.bundle:
        probe, reads, payload = load_bundle(Path(ns.bundle))
        # this run's overrides (e.g. pretrain.key_momentum) on the bundled configuration
        cfg = EarthloopConfig.model_validate(
            apply_overrides(probe.cfg.model_dump(), list(ns.overrides))
        )
        ns.heldout_bbox = payload["heldout_bbox"]
        ns.archive_tiles = set(payload["archive_tiles"])
        log.info(
            "bundle %s: split %s, %d pool chips",
            ns.bundle,
            probe.pool.summary(),
            len(probe.pool.pixels or {}),
        )
    else:
        world = world_labels(load_config(ns.config, ns.overrides), out, ns.target_archive)
        if world is not None:
            labels, box, ns.archive_tiles = world
            ns.overrides = [*ns.overrides, f"finetune.labels={labels}"]
            ns.heldout_bbox = ns.heldout_bbox or box
            log.info(
                "benchmark world: held-out box %s, %d archive tiles", box, len(ns.archive_tiles)
            )
        # the benchmark's own sweep records, in --out: never mixed with a user's sweeps
        base = [*finetune_overrides(ns), f"finetune.storage_path={(out / 'sweeps').resolve()}"]
        cfg = load_config(
            ns.config,
            [*base, "finetune.name=label-efficiency-probe", "finetune.inits=[{name: random}]"],
        )
        probe = plan_sweep(cfg)
        if ns.bundle_out:
            for name in ("seco", "dense"):
                if name in ns.inits:
                    reads[name] = archive_samples(cfg, probe, ns, name)
            info = write_bundle(Path(ns.bundle_out), probe, ns, reads)
            print(json.dumps({"bundle": ns.bundle_out, **info}))
            return 0
    log.info("split: %s", probe.pool.summary())
    t_pre = time.perf_counter()
    inits, pretraining = _run_pretraining(cfg, probe, ns, out, reads)
    pretrain_s = time.perf_counter() - t_pre
    if ns.bundle:
        plan = _bundle_plan(probe, ns, inits)
    else:
        plan = plan_sweep(
            load_config(
                ns.config,
                [*base, "finetune.name=label-efficiency", f"finetune.inits={json.dumps(inits)}"],
            )
        )
    todo = grid(plan, ns, [i["name"] for i in inits])
    finished = load_trials(out)
    remaining = [c for c in todo if _config_key(c) not in finished]
    log.info(
        "fine-tuning: %d trials (%d finished by an earlier run of %s)",
        len(todo),
        len(todo) - len(remaining),
        out,
    )
    t0 = time.perf_counter()
    left = None if ns.deadline_s is None else ns.deadline_s - (time.perf_counter() - t_main)

    def record(res: dict[str, Any]) -> None:
        with (out / TRIALS_FILE).open("a") as fh:
            fh.write(json.dumps(res, default=str) + "\n")  # NaN round-trips

    fresh = plain_loop(plan, remaining, workers=ns.workers, deadline_s=left, on_result=record)
    by_key = {**finished, **{_config_key(r["config"]): r for r in fresh}}
    results = [by_key[_config_key(c)] for c in todo if _config_key(c) in by_key]
    finetune_s = time.perf_counter() - t0

    # a deadline can stop a cell between its learning-rate candidates: such a cell would be
    # selected among fewer candidates than the others, so it is reported, not scored
    def cell_of(c: dict[str, Any]) -> tuple[Any, ...]:
        return (c["init"], c["fraction"], c["seed"], c["mode"])

    planned: dict[tuple[Any, ...], int] = {}
    for c in todo:
        planned[cell_of(c)] = planned.get(cell_of(c), 0) + 1
    ran: dict[tuple[Any, ...], int] = {}
    for res in results:
        ran[cell_of(res["config"])] = ran.get(cell_of(res["config"]), 0) + 1
    incomplete = sorted(k for k, n in ran.items() if n < planned[k])
    results = [res for res in results if cell_of(res["config"]) not in incomplete]
    rc = plan.row_context()
    rows = []
    for n, res in enumerate(results):
        m = {**res["metrics"], "training_iteration": plan.fc.iterations}
        row = trial_row(rc, f"le{n:04d}", res["config"], m, None, None)
        row.update({k: res["metrics"].get(k) for k in SCORES})
        rows.append(row)
    rows = mark_selected(rows)
    table = summarise(rows)
    plots = plot(table, out)
    doc = {
        "protocol": PROTOCOL,
        "command": " ".join(["benchmarks/label_efficiency.py", *(argv or sys.argv[1:])]),
        "budget": {
            "pretrain_steps": ns.pretrain_steps,
            "pretrain_batch": ns.pretrain_batch,
            "cscl_steps": ns.cscl_steps,
            "cscl_batch": ns.cscl_batch or ns.pretrain_batch,
            "overrides": list(ns.overrides),
            "finetune_max_steps": ns.max_steps,
            "eval_every": ns.eval_every,
            "lrs": ns.lrs,
            "encoder_lr_mults": ns.mults,
            "arch": ns.arch,
        },
        "split": plan.pool.summary(),
        "heldout_bbox": ns.heldout_bbox,
        "machine": _machine(ns),
        "pretraining": pretraining,
        "pretrain_s": round(pretrain_s, 1),
        "finetune_s": round(finetune_s, 1),
        "trials": len(results),
        "trials_planned": len(todo),
        "cells_not_run": len([k for k in planned if k not in ran]),
        "cells_incomplete": [list(k) for k in incomplete],
        "device": ns.device,
        "workers": ns.workers,
        "results": table,
        "plots": plots,
        "rows": [
            {k: v for k, v in r.items() if k not in ("finished_at", "label_chip_ids", "config")}
            for r in rows
        ],
    }
    text = json.dumps(_finite(doc), indent=1, default=str, allow_nan=False)
    (out / "label_efficiency.json").write_text(text)
    if ns.results:
        Path(ns.results).write_text(text)
    (out / "label_efficiency.md").write_text(render_markdown(doc))
    for init, modes in sorted(table.items()):
        for mode, fracs in sorted(modes.items()):
            for f, cell in sorted(fracs.items(), key=lambda kv: float(kv[0])):
                t, h = cell["test_miou"], cell["heldout_miou"]
                print(
                    f"{init:>8} {mode:>6} f={f:>5}: test mIoU {t['mean']} ± {t['std']}"
                    f" (gain {t.get('gain_over_random')}), heldout {h['mean']} ± {h['std']}"
                    f" (gain {h.get('gain_over_random')})"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
