"""Ray Train overhead and input-pipeline wait of earthloop's pretraining loop, side by side.

    python benchmarks/train_bench.py [--steps 24] [--backbone resnet18] [--batch 16]

1. Overhead: samples/s of `earthloop.pretrain.loop.train_loop` on Ray Train (2 workers × 1 CPU,
   DDP/gloo, data materialised in the object store) against a plain single-process PyTorch loop
   (1 thread) running the same SeCo model on the same in-memory data and per-worker batch.
   Overhead = 1 − ray / (2 × plain). Target ≤ 10 %.
2. Data wait: the same loop fed by the Ray Data stream from COGs (synthetic demo scenes, SeCo
   date tuples): fraction of step time spent waiting for the next batch. Target ≤ 5 % on CPU.

Both parts use an isolated in-process Ray (2 CPUs), never the demo cluster.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from earthloop.config import PretrainConfig
from earthloop.pretrain.loop import WorkerSetup, train_loop
from earthloop.pretrain.methods import build_method

os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("GDAL_CACHEMAX", "16")
ROOT = Path(__file__).resolve().parents[1]


def plain_loop(pc: PretrainConfig, data: dict[str, np.ndarray], steps: int, batch: int) -> float:
    """Samples/s of the method on one process and one thread (warm-up excluded)."""
    torch.set_num_threads(1)
    method = build_method(pc, data["images"].shape[2])
    opt = method.optimizer()
    mean = torch.zeros(data["images"].shape[2])
    std = torch.ones(data["images"].shape[2])
    rng = np.random.default_rng(0)
    n = len(data["images"])
    t0 = 0.0
    for step in range(steps + 2):
        if step == 2:
            t0 = time.perf_counter()
        idx = rng.choice(n, size=batch, replace=False)
        b = {k: torch.from_numpy(v[idx]) for k, v in data.items()}
        out = method.loss(method.inputs(b, mean, std))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    return steps * batch / (time.perf_counter() - t0)


def ray_loop(
    pc: PretrainConfig,
    ds: Any,
    steps: int,
    batch: int,
    channels: int,
    mean: list[float],
    std: list[float],
    cpus: float,
    storage: str,
) -> dict[str, Any]:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    setup = WorkerSetup(
        pretrain=pc.model_copy(
            update={
                "batch_size": 2 * batch,
                "max_steps": steps,
                "epochs": 1000,
                "checkpoint_every": 10**6,
            }
        ),
        mean=mean or [0.0] * channels,
        std=std or [1.0] * channels,
        run_name="bench",
        job_name="bench",
        cpus_per_worker=cpus,
    )
    trainer = TorchTrainer(
        train_loop_per_worker=train_loop,
        train_loop_config={"setup": setup},
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": cpus}),
        run_config=RunConfig(name=f"bench-{time.time_ns()}", storage_path=storage),
        datasets={"train": ds},
    )
    result = trainer.fit()
    return dict(result.metrics or {})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--batch", type=int, default=16, help="per worker")
    ap.add_argument("--data", default=str(ROOT / "data" / "synthetic"))
    args = ap.parse_args()

    import ray

    pc = PretrainConfig(backbone=args.backbone, queue_size=1024, seed=0)
    rng = np.random.default_rng(0)
    n, t, c, s = 24 * args.batch, 3, 4, 64
    data = {
        "images": rng.normal(size=(n, t, c, s, s)).astype(np.float32),
        "valid": np.ones((n, t, s, s), dtype=bool),
    }
    print(
        f"load: {os.getloadavg()[0]:.2f} (1-min) on {os.cpu_count()} cores; "
        f"SeCo {args.backbone}, batch {args.batch}/worker, {args.steps} steps"
    )
    plain = plain_loop(pc, data, args.steps, args.batch)
    print(f"plain PyTorch, 1 process × 1 thread: {plain:8.2f} samples/s")

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _temp_dir=tempfile.mkdtemp(prefix="rb"),
        logging_level="ERROR",
        log_to_driver=False,
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    storage = tempfile.mkdtemp(prefix="earthloop-bench-")
    ds = ray.data.from_items(
        [{"images": data["images"][i], "valid": data["valid"][i]} for i in range(n)]
    ).materialize()
    m = ray_loop(pc, ds, args.steps, args.batch, c, [], [], 1.0, storage)
    ray_rate = float(m["samples_per_s"])
    overhead = 1 - ray_rate / (2 * plain)
    print(
        f"earthloop Ray Train, 2 workers × 1 CPU: {ray_rate:8.2f} samples/s "
        f"(ideal {2 * plain:.2f}); overhead {100 * overhead:.1f} % (target ≤ 10 %)"
    )

    # ---- part 2: fed by the stream from COGs ----
    from earthloop.config import load_config
    from earthloop.ingest.pipeline import run_ingest
    from earthloop.pretrain.data import band_statistics
    from earthloop.stream import load_index, seco_dataset

    manifest = Path(args.data) / "manifest.json"
    if not manifest.exists():
        print(
            f"skipping the stream part: no synthetic data at {args.data} "
            "(run `earthloop sample-data --preset demo`)"
        )
        return
    work = tempfile.mkdtemp(prefix="earthloop-bench-work-")
    cfg = load_config(
        None, [f"workdir={work}", f"stac.url={Path(args.data) / 'catalog' / 'catalog.json'}"]
    )
    run_ingest(cfg)
    uri = cfg.table_uri("chips")
    rows, _ = load_index(uri, split=None)
    mean, std = band_statistics(rows, ["B02", "B03", "B04", "B08"])
    stream, _, n_loc = seco_dataset(uri, split=None, bands=["B02", "B03", "B04", "B08"], dates=3)
    stream = stream.select_columns(["images", "valid"])
    steps = min(args.steps, n_loc // (2 * args.batch) * 3)
    m2 = ray_loop(pc, stream, steps, args.batch, c, mean, std, 0.5, storage)
    print(
        f"stream from COGs ({n_loc} locations, 2 workers × 0.5 CPU + readers): "
        f"{float(m2['samples_per_s']):.2f} samples/s, data wait "
        f"{100 * float(m2['data_wait_fraction']):.1f} % of step time "
        f"({100 * float(m2['data_wait_steady_fraction']):.1f} % after each epoch's first batch; "
        "target ≤ 5 %)"
    )
    ray.shutdown()


if __name__ == "__main__":
    main()
