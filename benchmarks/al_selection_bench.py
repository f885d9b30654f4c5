"""Selection speed: every active-learning strategy over 1 M chips × 512-d embeddings.

Issue 12 §2/§4 asks for selection over 1 M chips × 512-d on 2 cores in under 60 s per strategy,
with a real nearest-neighbour library if hand-written search is slower. This script makes a
seeded synthetic pool shaped like a real round (embeddings with low intrinsic dimension in
clusters, 4 dates per location, lon/lat, uncertainty summaries, 1 % labelled, 1 % queued), times
each strategy through ``select_batch`` with the default batch constraints, reads each one's
peak RSS, and compares FAISS against the hand-written exact numpy search side by side.

    .venv/bin/python benchmarks/al_selection_bench.py --json docs/results/al_selection.json

The numpy search over all 1 M queries would take minutes, so it runs on a ``--nn-queries``
sample and is extrapolated linearly (its cost is exactly linear in the number of queries);
every searcher is timed on the same sample, and recall@k is measured against the exact answer.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
from earthloop.active import Pool, SelectionConfig, build_strategy, select_batch
from earthloop.active.nn import NeighbourIndex, exact_search
from earthloop.active.pool import unit_rows

LOG = logging.getLogger("al_bench")
STRATEGIES = ["random", "entropy", "margin", "knn", "seasonal", "coreset", "hybrid"]


def rss_mib(field: str = "VmRSS") -> float:
    """Resident (or peak, ``VmHWM``) memory of this process in MiB, from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def reset_peak() -> None:
    """Restart the kernel's peak-RSS counter, so each strategy gets its own peak."""
    Path("/proc/self/clear_refs").write_text("5")


def synthetic_pool(args: argparse.Namespace) -> tuple[Pool, np.ndarray]:
    """A seeded pool: latent clusters on a 64-d subspace, 4 dates per location, 5 % of
    locations changing between dates; returns the pool and each chip's cluster id."""
    rng = np.random.default_rng(args.seed)
    n, dim, latent = args.chips, args.dim, 64
    n_loc = n // 4
    basis = np.linalg.qr(rng.standard_normal((dim, latent)))[0].T.astype(np.float32)
    centres = rng.standard_normal((2000, latent)).astype(np.float32)
    loc_cluster = rng.integers(0, len(centres), n_loc)
    loc_base = centres[loc_cluster] + 0.5 * rng.standard_normal((n_loc, latent), dtype=np.float32)
    changing = rng.random(n_loc) < 0.05
    emb = np.empty((n, dim), dtype=np.float32)
    step = 65536
    for s in range(0, n, step):
        loc = np.arange(s, min(s + step, n)) // 4
        jitter = np.where(changing[loc], 1.0, 0.1).astype(np.float32)[:, None]
        z = loc_base[loc] + jitter * rng.standard_normal((len(loc), latent), dtype=np.float32)
        emb[s : s + len(loc)] = z @ basis
        emb[s : s + len(loc)] += 0.05 * rng.standard_normal((len(loc), dim), dtype=np.float32)
        if s % (step * 4) == 0:
            LOG.info("generate: %d/%d chips", s, n)
    emb = unit_rows(emb)
    codes = np.repeat(np.arange(n_loc), 4)[:n]
    lon = np.repeat(rng.uniform(0, 10, n_loc), 4)[:n]
    lat = np.repeat(rng.uniform(40, 50, n_loc), 4)[:n]
    n_classes = 10
    hist = rng.dirichlet(np.ones(n_classes), size=n)
    labelled = np.zeros(n, dtype=bool)
    labelled[rng.choice(n, args.labelled, replace=False)] = True
    queued = np.zeros(n, dtype=bool)
    queued[rng.choice(np.flatnonzero(~labelled), args.queued, replace=False)] = True
    cluster = loc_cluster[codes]
    vectors = np.zeros((n, n_classes), dtype=np.float32)
    noisy = (cluster + (rng.random(n) < 0.2) * rng.integers(1, n_classes, n)) % n_classes
    vectors[labelled, noisy[labelled]] = 1.0
    pool = Pool(
        chip_ids=np.array([f"chip{i:07d}" for i in range(n)], dtype=object),
        embeddings=emb,
        location_codes=codes.astype(np.int64),
        season=np.tile(np.arange(4), n_loc)[:n],
        lon=lon,
        lat=lat,
        mean_entropy=rng.random(n),
        mean_margin=rng.random(n),
        class_histogram=hist,
        excluded=queued,
        labelled=labelled,
        label_vectors=vectors,
    )
    return pool, cluster


def time_strategy(pool: Pool, name: str, args: argparse.Namespace) -> dict[str, Any]:
    """One strategy through select_batch with the default constraints: time, peak RSS, picks."""
    cfg = SelectionConfig.model_validate(
        {"batch_size": args.batch, "seed": args.seed, "strategies": [{"name": name}]}
    )
    strategy = build_strategy(cfg)
    reset_peak()
    before = rss_mib()
    cpu0, t0 = time.process_time(), time.perf_counter()
    sel = select_batch(pool, cfg, round_=1, strategy=strategy)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0

    row = {
        "strategy": sel.strategy,
        "seconds": round(wall, 2),
        "cpu_seconds": round(cpu, 2),
        "peak_rss_mib": round(rss_mib("VmHWM"), 0),
        "rss_before_mib": round(before, 0),
        "picked": len(sel.picked.rows),
        "refused": sel.rejected,
        "index": getattr(strategy, "index_kind", None),
        "coreset_rescans": getattr(strategy, "rescans", None),
        "under_60s": wall < 60.0,
    }
    LOG.info("strategy %s: %s", name, row)
    return row


def nn_side_by_side(pool: Pool, args: argparse.Namespace) -> dict[str, Any]:
    """kNN of a query sample against the labelled set: numpy exact vs FAISS flat / IVF / IVF+PCA."""
    assert pool.embeddings is not None
    emb = pool.embeddings
    rng = np.random.default_rng(args.seed + 1)
    ref = np.ascontiguousarray(emb[pool.labelled])
    cand = np.flatnonzero(pool.candidates)
    sample = np.sort(rng.choice(cand, args.nn_queries, replace=False))
    queries = np.ascontiguousarray(emb[sample])
    scale = len(cand) / len(sample)
    k = 10
    t0 = time.perf_counter()
    _, truth = exact_search(ref, queries, k)
    t_numpy = time.perf_counter() - t0
    rows = [{"searcher": "numpy exact (hand-written)", "sample_s": round(t_numpy, 2),
             "extrapolated_1m_s": round(t_numpy * scale, 1), "recall_at_10": 1.0}]  # fmt: skip
    fit = emb[np.sort(rng.choice(len(emb), 20_000, replace=False))]
    variants: list[tuple[str, dict[str, Any]]] = [
        ("faiss flat (exact)", {"exact_max_pairs": 10**18}),
        ("faiss IVF, 512-d", {"exact_max_pairs": 0, "pca_dims": None}),
        ("faiss IVF + PCA-64 (default)", {"exact_max_pairs": 0, "pca_dims": 64}),
    ]
    for label, kw in variants:
        t0 = time.perf_counter()
        index = NeighbourIndex(ref, expected_queries=len(cand), fit_sample=fit, seed=0, **kw)
        build = time.perf_counter() - t0
        t0 = time.perf_counter()
        _, got = index.search(queries, k)
        t_q = time.perf_counter() - t0
        recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(got, truth, strict=True)]))
        rows.append({"searcher": label, "index": index.kind, "build_s": round(build, 2),
                     "sample_s": round(t_q, 2), "extrapolated_1m_s": round(build + t_q * scale, 1),
                     "recall_at_10": round(recall, 4)})  # fmt: skip
        LOG.info("nn %s: %s", label, rows[-1])
    return {"queries_sampled": len(sample), "candidates": len(cand), "references": len(ref),
            "k": k, "rows": rows}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chips", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--labelled", type=int, default=10_000)
    ap.add_argument("--queued", type=int, default=10_000)
    ap.add_argument("--nn-queries", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("faiss").setLevel(logging.WARNING)
    t0 = time.perf_counter()
    pool, _ = synthetic_pool(args)
    gen_s = time.perf_counter() - t0
    LOG.info("pool ready in %.1fs, RSS %.0f MiB", gen_s, rss_mib())
    results = [time_strategy(pool, s, args) for s in args.strategies.split(",") if s]
    nn = nn_side_by_side(pool, args)
    out = {
        "command": "python benchmarks/al_selection_bench.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "json"),
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        },  # fmt: skip
        "pool": {
            "chips": args.chips,
            "dim": args.dim,
            "labelled": args.labelled,
            "queued": args.queued,
            "locations": args.chips // 4,
            "batch": args.batch,
            "generate_s": round(gen_s, 1),
        },  # fmt: skip
        "strategies": results,
        "nearest_neighbours": nn,
    }
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
