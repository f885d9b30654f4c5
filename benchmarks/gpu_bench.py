"""GPU throughput of SeCo ResNet-50 (bf16, channels-last) fed from the stream, with utilisation.

    python benchmarks/gpu_bench.py [--steps 200] [--batch 256] [--backbone resnet50] \
        [--methods seco dense cscl] [--sources memory host stream] [--json out.jsonl]

Run it whenever an NVIDIA GPU is at hand (target ≥ 90 % utilisation). `memory` gives the
compute ceiling (random tensors already on the device); `host` copies pinned host tensors every
step (what a loader-fed step pays for the copy); `stream` feeds SeCo from earthloop's Ray Data
stream over the synthetic COGs (`earthloop sample-data`; needs Ray), so the gap to `memory` is
the input pipeline's cost. Utilisation is sampled from `nvidia-smi` every 0.2 s while timing.
Every step is the production `Engine.step` (what Ray Train workers run). Before timing, a few
steps run under `torch.cuda.set_sync_debug_mode("warn")`: `syncs_per_step` counts the device
syncs a step makes (0 is the target, tests/pretrain/test_device_syncs.py).
On a machine without CUDA it runs on the CPU as a smoke test.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import tempfile
import threading
import time
import warnings
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


def method_batch(
    method: str, batch: int, size: int = 64, bands: int = 4
) -> dict[str, torch.Tensor]:
    """A random batch in the layout each method's stream delivers (host memory)."""
    if method == "cscl":
        return {
            "image": torch.randn(batch, bands, size, size),
            "valid": torch.ones(batch, size, size, dtype=torch.bool),
            "label": torch.randint(0, 6, (batch, size, size)),
        }
    dates = 3 if method == "seco" else 2
    return {
        "images": torch.randn(batch, dates, bands, size, size),
        "valid": torch.ones(batch, dates, size, size, dtype=torch.bool),
    }


def memory_batches(
    method: str, batch: int, device: torch.device, host: bool = False
) -> Iterator[dict[str, torch.Tensor]]:
    """``host``: pinned host tensors copied every step (what a loader-fed step pays), else
    tensors already on the device (the compute ceiling)."""
    b = method_batch(method, batch)
    if host and device.type == "cuda":
        b = {k: v.pin_memory() for k, v in b.items()}
    elif not host:
        b = {k: v.to(device) for k, v in b.items()}
    while True:
        yield b


def stream_batches(batch: int, data: Path) -> Iterator[dict[str, torch.Tensor]]:
    import ray
    from earthloop.config import load_config
    from earthloop.ingest.pipeline import run_ingest
    from earthloop.stream import seco_dataset

    work = tempfile.mkdtemp(prefix="gpu-bench-")
    cfg = load_config(None, [f"workdir={work}", f"stac.url={data / 'catalog' / 'catalog.json'}"])
    run_ingest(cfg)
    ray.init(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    ds, _, _ = seco_dataset(cfg.table_uri("chips"), split=None, dates=3)
    ds = ds.select_columns(["images", "valid"])
    while True:
        yield from ds.iter_torch_batches(batch_size=batch, drop_last=True, prefetch_batches=8)


def run_one(
    args: argparse.Namespace, method_name: str, source: str, backbone: str, batch: int
) -> dict[str, object]:
    """Time ``args.steps`` optimiser steps after ``args.warmup``; one result row."""
    from earthloop.config import PretrainConfig
    from earthloop.pretrain.engine import Engine, Schedule
    from earthloop.pretrain.methods import build_method

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    torch.manual_seed(0)
    extra = {"queue_size": 16384} if method_name == "seco" else {}
    pc = PretrainConfig(method=method_name, backbone=backbone, seed=0, batch_size=batch, **extra)
    method = build_method(pc, 4)
    method.model.to(device)
    if cuda:
        method.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        torch.backends.cudnn.benchmark = True
    engine = Engine(
        method,
        Schedule(epochs=1, amp=cuda),
        mean=torch.zeros(4),
        std=torch.ones(4),
        device=device,
        batch_size=batch,
    )
    batches = (
        stream_batches(batch, Path(args.data))
        if source == "stream"
        else memory_batches(method_name, batch, device, host=source == "host")
    )
    sampler = UtilSampler() if cuda else None
    syncs = count_syncs(engine, batches, steps=5) if cuda else None
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
        b = next(batches)
        wait += time.perf_counter() - tw
        engine.step(b)
    if cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    util = sampler.stop() if sampler else None
    row: dict[str, object] = {
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "method": method_name,
        "backbone": backbone,
        "batch": batch,
        "source": source,
        "bf16": cuda,
        "steps": args.steps,
        "samples_per_s": round(args.steps * batch / elapsed, 1),
        "step_ms": round(1000 * elapsed / args.steps, 2),
        "data_wait_pct": round(100 * wait / elapsed, 2),
        "gpu_util_pct": None if util is None else round(util, 1),
        "syncs_per_step": syncs,
        "peak_mem_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
    }
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    return row


def count_syncs(engine: object, batches: Iterator[dict[str, torch.Tensor]], steps: int) -> float:
    """Device syncs per ``Engine.step``, counted by PyTorch's sync debug mode (CUDA only)."""
    step = engine.step  # type: ignore[attr-defined]
    for _ in range(2):  # warm-up: cuDNN autotuning and first allocations sync on their own
        step(next(batches))
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(steps):
                step(next(batches))
        finally:
            torch.cuda.set_sync_debug_mode("default")
    found = [w for w in caught if "synchroniz" in str(w.message)]
    return round(len(found) / steps, 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--backbone", default="resnet50")
    ap.add_argument("--methods", nargs="+", default=["seco"], choices=["seco", "dense", "cscl"])
    ap.add_argument(
        "--sources", nargs="+", default=["memory"], choices=["memory", "host", "stream"]
    )
    ap.add_argument("--data", default=str(ROOT / "data" / "synthetic"))
    ap.add_argument("--json", default=None, help="append one JSON line per result here")
    args = ap.parse_args()
    for m in args.methods:
        for src in args.sources:
            try:
                row = run_one(args, m, src, args.backbone, args.batch)
            except Exception as e:  # one failing configuration must not hide the others
                row = {"method": m, "source": src, "backbone": args.backbone, "error": repr(e)}
            print(json.dumps(row), flush=True)
            if args.json:
                with open(args.json, "a") as fh:
                    fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
