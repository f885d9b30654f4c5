"""GPU throughput of SeCo ResNet-50 (bf16, channels-last) fed from the stream, with utilisation.

    python benchmarks/gpu_bench.py [--steps 200] [--batch 256] [--source stream|memory]

Run it whenever an NVIDIA GPU is at hand (target ≥ 90 % utilisation). `--source memory` gives
the compute ceiling (random tensors already on the device); `--source stream` feeds the model
from earthloop's Ray Data SeCo stream over the synthetic COGs (`earthloop sample-data`), so the
gap between the two is the input pipeline's cost. Utilisation is sampled from `nvidia-smi`
every 0.2 s while timing. On a machine without CUDA it runs on the CPU as a smoke test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("RAY_AUTH_MODE", "token")


class UtilSampler(threading.Thread):
    """Samples GPU utilisation (%) with nvidia-smi until stopped."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[float] = []
        self._stop = threading.Event()

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run(
                    ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                    capture_output=True,
                    text=True,
                    timeout=5,
                )
                self.samples.append(float(out.stdout.split()[0]))
            except Exception:
                return
            time.sleep(0.2)

    def stop(self) -> float | None:
        self._stop.set()
        return statistics.mean(self.samples) if self.samples else None


def memory_batches(batch: int, device: torch.device) -> Iterator[dict[str, torch.Tensor]]:
    images = torch.randn(batch, 3, 4, 64, 64, device=device)
    valid = torch.ones(batch, 3, 64, 64, dtype=torch.bool, device=device)
    while True:
        yield {"images": images, "valid": valid}


def stream_batches(batch: int, data: Path) -> Iterator[dict[str, torch.Tensor]]:
    import ray
    from earthloop.config import load_config
    from earthloop.ingest.pipeline import run_ingest
    from earthloop.stream import seco_dataset

    work = tempfile.mkdtemp(prefix="gpu-bench-")
    cfg = load_config(None, [f"workdir={work}", f"stac.url={data / 'catalog' / 'catalog.json'}"])
    run_ingest(cfg)
    ray.init(include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    ds, _, _ = seco_dataset(cfg.table_uri("chips"), split=None, dates=3)
    ds = ds.select_columns(["images", "valid"])
    while True:
        yield from ds.iter_torch_batches(batch_size=batch, drop_last=True, prefetch_batches=8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--backbone", default="resnet50")
    ap.add_argument("--source", choices=["memory", "stream"], default="memory")
    ap.add_argument("--data", default=str(ROOT / "data" / "synthetic"))
    args = ap.parse_args()

    from earthloop.config import PretrainConfig
    from earthloop.pretrain.methods import build_method

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    pc = PretrainConfig(backbone=args.backbone, queue_size=16384, seed=0)
    method = build_method(pc, 4)
    method.model.to(device)
    if cuda:
        method.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        torch.backends.cudnn.benchmark = True
    opt = method.optimizer()
    mean = torch.zeros(4, device=device)
    std = torch.ones(4, device=device)
    batches = (
        memory_batches(args.batch, device)
        if args.source == "memory"
        else stream_batches(args.batch, Path(args.data))
    )
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if cuda
        else torch.autocast("cpu", enabled=False)
    )
    sampler = UtilSampler() if cuda else None
    wait = 0.0
    t0 = time.perf_counter()
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            if cuda:
                torch.cuda.synchronize()
            if sampler:
                sampler.start()
            t0, wait = time.perf_counter(), 0.0
        tw = time.perf_counter()
        b = {k: v.to(device, non_blocking=True) for k, v in next(batches).items()}
        wait += time.perf_counter() - tw
        with autocast:
            out = method.loss(method.inputs(b, mean, std))
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
    if cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    util = sampler.stop() if sampler else None
    name = torch.cuda.get_device_name() if cuda else "cpu"
    print(
        f"device {name}; SeCo {args.backbone} bf16={cuda} batch {args.batch}; source {args.source}"
    )
    print(
        f"samples/s {args.steps * args.batch / elapsed:.1f}; step {1000 * elapsed / args.steps:.1f} ms; "
        f"data wait {100 * wait / elapsed:.1f} %; GPU util "
        f"{'n/a' if util is None else f'{util:.0f} %'} (target ≥ 90 %)"
    )


if __name__ == "__main__":
    main()
