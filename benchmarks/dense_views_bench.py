"""Dense contrast's view making: per image (the replayable pipeline) vs batched (pixel_views).

    python benchmarks/dense_views_bench.py [--batch 64] [--size 64] [--steps 20] [--json out.json]

Both paths make the same recipe (integer zoom crop, flips, rotation, per-band jitter, noise,
pixel pairs). Figures, side by side in one run: milliseconds per ``make_views`` call, the number
of torch operator calls per call (on a GPU each is at least one kernel launch: the proxy for the
launch-bound 23-25 % H200 utilisation in docs/benchmarks.md), and a whole training step
(forward + backward, ``resnet_tiny`` U-Net). Runs on CUDA when available, else on the CPU.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch
from earthloop.models import build_backbone
from earthloop.models.methods._common import default_geometric, default_photometric
from earthloop.models.methods.dense import DenseContrastive
from earthloop.models.unet import UNet
from torch.profiler import ProfilerActivity, profile


def _timed(fn: Callable[[], object], steps: int, device: torch.device) -> float:
    for _ in range(3):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / steps * 1000


def _op_calls(fn: Callable[[], object]) -> int:
    acts = [ProfilerActivity.CPU]
    with profile(activities=acts) as prof:
        fn()
    return sum(e.count for e in prof.key_averages())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--bands", type=int, default=4)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--json")
    a = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    g = torch.Generator().manual_seed(0)
    images = torch.randn(a.batch, 3, a.bands, a.size, a.size, generator=g).to(device)
    valid = (torch.rand(a.batch, 3, a.size, a.size, generator=g) < 0.9).to(device)
    batch = {"images": images, "valid": valid}
    rows = []
    for name, kw in (
        ("per image", {"geometric": default_geometric(), "photometric": default_photometric()}),
        ("batched", {}),
    ):
        torch.manual_seed(0)
        m = DenseContrastive(
            UNet(build_backbone("resnet_tiny", a.bands)),
            seed=0,
            **kw,  # type: ignore[arg-type]
        ).to(device)
        assert m.batched == (name == "batched")
        opt = torch.optim.AdamW(m.parameters(), 1e-3)

        def views(m: DenseContrastive = m) -> object:
            return m.make_views(images, valid)

        def step(m: DenseContrastive = m, opt: torch.optim.Optimizer = opt) -> object:
            loss = m(batch)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
            return loss

        rows.append(
            {
                "views": name,
                "make_views_ms": round(_timed(views, a.steps, device), 2),
                "make_views_op_calls": _op_calls(views),
                "step_ms": round(_timed(step, max(3, a.steps // 4), device), 1),
                "pairs_per_step": float(m(batch)["num_pairs"]),
            }
        )
    per, bat = rows
    out = {
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(),
        "threads": torch.get_num_threads(),
        "batch": a.batch,
        "size": a.size,
        "bands": a.bands,
        "rows": rows,
        "make_views_speedup": round(per["make_views_ms"] / bat["make_views_ms"], 1),
        "op_call_ratio": round(per["make_views_op_calls"] / bat["make_views_op_calls"], 1),
        "step_speedup": round(per["step_ms"] / bat["step_ms"], 2),
    }
    for r in rows:
        print(
            f"{r['views']:>9}: make_views {r['make_views_ms']:8.2f} ms, "
            f"{r['make_views_op_calls']:6d} op calls; step {r['step_ms']:8.1f} ms; "
            f"{r['pairs_per_step']:.0f} pairs"
        )
    print(
        f"batched vs per image: make_views x{out['make_views_speedup']}, op calls "
        f"/{out['op_call_ratio']}, whole step x{out['step_speedup']} ({out['device']}, "
        f"{out['threads']} threads)"
    )
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
