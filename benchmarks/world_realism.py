"""Realism checks of the benchmark world (protocol: docs/world.md, "Realism checks").

Is the world hard in the ways real archives are? (a) a per-pixel spectral classifier trained on
one region and date loses accuracy on another region / date; (b) at 100 % labels a U-Net with
spatial context beats the per-pixel MLP; (c) the classes the MLP confuses are the context
classes. Then the same figures with each property of the world switched off alone.

    .venv/bin/python benchmarks/world_realism.py --out docs/results/world_realism.json

A measurement script, not library code: the world is rendered in memory with the renderer
``earthloop.synth.generate`` uses, and cached by a fingerprint of the preset parameters.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from earthloop.models.backbones import build_backbone
from earthloop.models.unet import SegmentationModel, UNet
from earthloop.s2.scl import SCL
from earthloop.synth.clouds import SunPosition
from earthloop.synth.generate import GENERATOR_VERSION, plan_scenes
from earthloop.synth.presets import SynthPreset, resolve_preset
from earthloop.synth.regions import SWITCHES
from earthloop.synth.tiles import tile_grid
from earthloop.synth.world import CONTEXT_TWINS, WORLD_CLASSES, build_world_tile
from earthloop.synth.world_render import render_world_scene, world_unit_tables
from torch import nn

BANDS = ["B02", "B03", "B04", "B08"]
N_CLASSES = len(WORLD_CLASSES)  # ids 1..9 → model classes 0..8
IGNORE = 255
FLAGGED = [
    SCL.NO_DATA,
    SCL.SATURATED_OR_DEFECTIVE,
    SCL.CLOUD_SHADOW,
    SCL.CLOUD_MEDIUM_PROBABILITY,
    SCL.CLOUD_HIGH_PROBABILITY,
    SCL.THIN_CIRRUS,
]
DATE_T, DATE_T2 = 4, 6  # 06-14 and 08-18 of the world preset
REGION_A, REGION_B = "atlantic", "mediterranean"


@dataclass
class Split:
    """Images (N, 4, n, n) float32 and targets (N, n, n) uint8 (0..8, IGNORE) of some tiles."""

    x: np.ndarray
    y: np.ndarray


def tiles_of(preset: SynthPreset, region: str, role: str) -> list[int]:
    w = preset.world
    assert w is not None
    return [
        i
        for i, (r, o) in enumerate(zip(w.regions, w.roles, strict=True))
        if r == region and o == role
    ]


def render_split(preset: SynthPreset, seed: int, tiles: list[int], date: int) -> Split:
    """Render tiles at one date exactly as ``generate`` would (same plans, sun, clouds)."""
    spec = preset.world
    assert spec is not None
    plans = {(p.tile_index, p.date_index): p for p in plan_scenes(preset, seed)}
    xs, ys = [], []
    for ti in tiles:
        plan = plans[(ti, date)]
        grid = tile_grid(preset.tiles[ti], preset.size_px)
        tile = build_world_tile(grid, preset, seed, ti)
        tables = world_unit_tables(tile, spec, seed)
        scene = render_world_scene(
            tile, tables, spec, doy=plan.doy, sun=SunPosition.at(grid.centre_lonlat()[1], plan.doy),
            cloud_target=plan.cloud_target, seed=seed, key=plan.acquired.strftime("%Y%m%d"),
            bands=BANDS,
        )  # fmt: skip
        n = grid.size
        xs.append(np.stack([scene.reflectance[b][:n, :n] for b in BANDS]))
        label = tile.label("landcover").astype(np.int64) - 1
        scl10 = np.repeat(np.repeat(scene.scl, 2, axis=0), 2, axis=1)[:n, :n]
        label[(label < 0) | np.isin(scl10, FLAGGED)] = IGNORE
        ys.append(label.astype(np.uint8))
    return Split(np.stack(xs).astype(np.float32), np.stack(ys))


def world_data(preset: SynthPreset, seed: int, cache: Path) -> dict[str, Split]:
    """The five splits of the protocol, cached by a fingerprint of everything that shapes them."""
    key = json.dumps(
        [preset.to_dict(), seed, GENERATOR_VERSION, BANDS, DATE_T, DATE_T2], sort_keys=True
    )
    path = cache / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"
    if path.exists():
        with np.load(path) as z:
            return {
                k: Split(z[f"{k}_x"], z[f"{k}_y"]) for k in ("train", "a_t", "b_t", "a_t2", "b_t2")
            }
    a_pool, a_test = tiles_of(preset, REGION_A, "pool"), tiles_of(preset, REGION_A, "test")
    b_test = tiles_of(preset, REGION_B, "test")
    out = {
        "train": render_split(preset, seed, a_pool, DATE_T),
        "a_t": render_split(preset, seed, a_test, DATE_T),
        "b_t": render_split(preset, seed, b_test, DATE_T),
        "a_t2": render_split(preset, seed, a_test, DATE_T2),
        "b_t2": render_split(preset, seed, b_test, DATE_T2),
    }
    cache.mkdir(parents=True, exist_ok=True)
    arrays = {f"{k}_{f}": getattr(s, f) for k, s in out.items() for f in ("x", "y")}
    np.savez_compressed(path, **arrays)
    return out


def confusion(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    ok = target != IGNORE
    idx = target[ok].astype(np.int64) * N_CLASSES + pred[ok].astype(np.int64)
    return np.bincount(idx, minlength=N_CLASSES**2).reshape(N_CLASSES, N_CLASSES)


def scores(cm: np.ndarray) -> dict[str, Any]:
    """Accuracy, per-class IoU (None for a class absent from target and prediction), mIoU."""
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - tp
    iou = [float(tp[c] / union[c]) if union[c] > 0 else None for c in range(N_CLASSES)]
    present = [v for v in iou if v is not None]
    return {
        "accuracy": float(tp.sum() / max(cm.sum(), 1)),
        "miou": float(np.mean(present)) if present else 0.0,
        "iou": {WORLD_CLASSES[c + 1]: iou[c] for c in range(N_CLASSES)},
        "confusion": cm.tolist(),
    }


def normalise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return (x - mean[None, :, None, None]) / std[None, :, None, None]


def train_mlp(train: Split, steps: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    x = torch.from_numpy(train.x.transpose(0, 2, 3, 1).reshape(-1, len(BANDS)))
    y = torch.from_numpy(train.y.reshape(-1).astype(np.int64))
    keep = y != IGNORE
    x, y = x[keep], y[keep]
    model = nn.Sequential(
        nn.Linear(len(BANDS), 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, N_CLASSES)
    )
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        i = torch.randint(0, len(y), (2048,), generator=gen)
        loss = nn.functional.cross_entropy(model(x[i]), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def predict_mlp(model: nn.Module, split: Split) -> np.ndarray:
    x = torch.from_numpy(split.x.transpose(0, 2, 3, 1).reshape(-1, len(BANDS)))
    with torch.no_grad():
        pred = model(x).argmax(1).numpy()
    return pred.reshape(split.y.shape).astype(np.uint8)


def _crops(
    train: Split, gen: np.random.Generator, batch: int, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    n_img, _, h, w = train.x.shape
    xs, ys = [], []
    for _ in range(batch):
        i, r, c = gen.integers(n_img), gen.integers(0, h - size + 1), gen.integers(0, w - size + 1)
        x, y = train.x[i, :, r : r + size, c : c + size], train.y[i, r : r + size, c : c + size]
        k = int(gen.integers(4))
        x, y = np.rot90(x, k, axes=(1, 2)), np.rot90(y, k)
        if gen.random() < 0.5:
            x, y = x[:, :, ::-1], y[:, ::-1]
        xs.append(np.ascontiguousarray(x))
        ys.append(np.ascontiguousarray(y))
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys).astype(np.int64))


def train_unet(train: Split, steps: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = SegmentationModel(UNet(build_backbone("resnet_tiny", len(BANDS))), N_CLASSES)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = np.random.default_rng(seed)
    model.train()
    for _ in range(steps):
        x, y = _crops(train, gen, 16, 64)
        loss = nn.functional.cross_entropy(model(x), y, ignore_index=IGNORE)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


def predict_unet(model: nn.Module, split: Split) -> np.ndarray:
    with torch.no_grad():
        pred = model(torch.from_numpy(split.x)).argmax(1).numpy()
    return pred.astype(np.uint8)


def checks(mlp: dict[str, Any], unet: dict[str, Any]) -> dict[str, Any]:
    """The three checks of the protocol, with the figures they are decided on."""
    a = mlp["a_t"]["accuracy"]
    drop_region = 100 * (a - mlp["b_t"]["accuracy"])
    drop_date = 100 * (a - mlp["a_t2"]["accuracy"])
    drop_both = 100 * (a - mlp["b_t2"]["accuracy"])
    gap = unet["a_t"]["miou"] - mlp["a_t"]["miou"]
    iou = mlp["a_t"]["iou"]
    ctx_ids = [c - 1 for c in CONTEXT_TWINS]
    ctx = [iou[WORLD_CLASSES[c + 1]] for c in ctx_ids]
    other = [iou[WORLD_CLASSES[c + 1]] for c in range(N_CLASSES) if c not in ctx_ids]
    ctx_mean = float(np.mean([v for v in ctx if v is not None]))
    other_mean = float(np.mean([v for v in other if v is not None]))
    cm = np.array(mlp["a_t"]["confusion"], dtype=np.float64)
    twins: dict[str, str] = {}
    matched = 0
    for c, tw in CONTEXT_TWINS.items():
        row = cm[c - 1].copy()
        row[c - 1] = -1
        top = int(np.argmax(row)) + 1
        twins[WORLD_CLASSES[c]] = WORLD_CLASSES[top]
        matched += int(top in tw)
    return {
        "a_drop_region_pts": drop_region,
        "a_drop_date_pts": drop_date,
        "a_drop_region_and_date_pts": drop_both,
        "a_pass": drop_region >= 15 and drop_date >= 15,
        "b_unet_minus_mlp_miou": gap,
        "b_pass": gap > 0,
        "c_context_iou_mlp": ctx_mean,
        "c_other_iou_mlp": other_mean,
        "c_most_confused_with": twins,
        "c_twins_matched": matched,
        "c_pass": ctx_mean < other_mean and matched == len(CONTEXT_TWINS),
    }


def run_row(name: str, preset: SynthPreset, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    data = world_data(preset, seed, Path(args.cache))
    t_data = time.perf_counter() - t0
    ok = data["train"].y != IGNORE
    flat = data["train"].x.transpose(1, 0, 2, 3)[:, ok]
    mean, std = flat.mean(1), flat.std(1)
    norm = {k: Split(normalise(s.x, mean, std).astype(np.float32), s.y) for k, s in data.items()}
    mlp = train_mlp(norm["train"], args.mlp_steps, 0)
    t_mlp = time.perf_counter() - t0 - t_data
    unet = train_unet(norm["train"], args.unet_steps, 0)
    t_unet = time.perf_counter() - t0 - t_data - t_mlp
    res: dict[str, Any] = {"row": name, "world_seed": seed, "mlp": {}, "unet": {}}
    for split in ("a_t", "b_t", "a_t2", "b_t2"):
        res["mlp"][split] = scores(confusion(predict_mlp(mlp, norm[split]), norm[split].y))
        res["unet"][split] = scores(confusion(predict_unet(unet, norm[split]), norm[split].y))
    res["checks"] = checks(res["mlp"], res["unet"])
    res["pixels"] = {k: int((s.y != IGNORE).sum()) for k, s in data.items()}
    res["seconds"] = {"data": t_data, "mlp": t_mlp, "unet": t_unet}
    return res


def line(r: dict[str, Any]) -> str:
    c, m, u = r["checks"], r["mlp"], r["unet"]
    return (
        f"{r['row']:<22} seed {r['world_seed']} | MLP acc A/t {m['a_t']['accuracy']:.3f} "
        f"B/t {m['b_t']['accuracy']:.3f} A/t' {m['a_t2']['accuracy']:.3f} "
        f"B/t' {m['b_t2']['accuracy']:.3f} | (a) drop region {c['a_drop_region_pts']:+.1f} "
        f"date {c['a_drop_date_pts']:+.1f} | (b) mIoU U-Net {u['a_t']['miou']:.3f} "
        f"MLP {m['a_t']['miou']:.3f} gap {c['b_unet_minus_mlp_miou']:+.3f} | (c) ctx "
        f"{c['c_context_iou_mlp']:.3f} other {c['c_other_iou_mlp']:.3f} twins "
        f"{c['c_twins_matched']}/3 | pass a={c['a_pass']} b={c['b_pass']} c={c['c_pass']}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/results/world_realism.json")
    ap.add_argument("--cache", default="runs/world_realism/cache")
    ap.add_argument("--preset", default="world", help="world (v1) | world_v2")
    ap.add_argument(
        "--protocol",
        default="docs/world.md#realism-checks-protocol-fixed-before-the-first-run",
        help="where the protocol this run follows is written (recorded in the JSON)",
    )
    ap.add_argument("--mlp-steps", type=int, default=2000)
    ap.add_argument("--unet-steps", type=int, default=500)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rows", default="all", help="all | full | comma-separated switch names")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows: list[tuple[str, dict[str, Any], int]] = [("full world", {}, 0), ("full world", {}, 1)]
    if args.rows == "full":
        pass
    else:
        names = SWITCHES if args.rows == "all" else tuple(args.rows.split(","))
        rows += [(f"no {s}", {s: False}, 0) for s in names]
    results = []
    t0 = time.perf_counter()
    for name, switches, seed in rows:
        preset = resolve_preset(args.preset, {"world": switches} if switches else {})
        results.append(run_row(name, preset, seed, args))
        print(line(results[-1]), f"[{time.perf_counter() - t0:.0f} s]", flush=True)
    out = {
        "protocol": args.protocol,
        "preset": args.preset,
        "bands": BANDS,
        "dates": {
            "t": resolve_preset(args.preset, {}).dates[DATE_T],
            "t_prime": resolve_preset(args.preset, {}).dates[DATE_T2],
        },
        "regions": {"A": REGION_A, "B": REGION_B},
        "mlp_steps": args.mlp_steps,
        "unet_steps": args.unet_steps,
        "threads": args.threads,
        "rows": results,
        "total_seconds": time.perf_counter() - t0,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
