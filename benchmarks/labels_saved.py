"""How many labels pretraining saves, read off a label-efficiency curve.

    .venv/bin/python benchmarks/labels_saved.py docs/results/label_efficiency_3000.json \\
        --out docs/results/labels_saved_3000.json

A gain in mIoU at 1 % labels is hard to act on; "random init needs 10 % of the labels to score
what dense contrast scores with 1 %" is what a team budgeting annotation needs. The reading is
defined in docs/label-efficiency.md ("Curve at 3000 steps") before the run: the fraction at which
random init's mean reaches the pretrained init's mean at the lowest fraction, interpolated
linearly in log(fraction) between measured fractions. It is a reading of measured means, not a
fit: beyond the measured range it says so (">100 %", "≤1 %") rather than extrapolate.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

SCORES = ("heldout_miou", "test_miou")


def matching_fraction(curve: dict[float, float], target: float) -> tuple[str, float | None]:
    """Where a rising-or-not curve first reaches ``target``: ("at", f), ("below", lowest) or
    ("above", highest). Walks the fractions in order and interpolates in log(fraction) inside
    the first segment that crosses the target, so a curve that dips later does not move it."""
    fs = sorted(curve)
    if not fs:
        raise ValueError("empty curve")
    if curve[fs[0]] >= target:
        return "below", fs[0]
    for lo, hi in zip(fs, fs[1:], strict=False):
        ylo, yhi = curve[lo], curve[hi]
        if yhi >= target > ylo:
            t = (target - ylo) / (yhi - ylo)
            return "at", math.exp(math.log(lo) + t * (math.log(hi) - math.log(lo)))
    return "above", fs[-1]


def chips_at(fraction: float, chips: dict[float, int]) -> float | None:
    """Labelled chips at a fraction, read off the measured (fraction, chips) pairs the same way
    (log-log between neighbours). Needed because the nominal fraction understates the smallest
    subsets: a stratified 1 % keeps every class, so it holds 7 chips of 157, not 1.6."""
    fs = sorted(chips)
    if fraction in chips:
        return float(chips[fraction])
    for lo, hi in zip(fs, fs[1:], strict=False):
        if lo < fraction < hi:
            t = (math.log(fraction) - math.log(lo)) / (math.log(hi) - math.log(lo))
            return math.exp(math.log(chips[lo]) + t * (math.log(chips[hi]) - math.log(chips[lo])))
    return None


def labels_saved(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per pretrained init x mode x random's mode x score: its mean at the lowest
    fraction and the fraction random init needs for the same mean. Random init is read in both
    modes: against its own mode is the like-for-like reading, against full fine-tuning the one
    a team without pretraining would really use (a frozen random encoder is nobody's choice)."""
    res = doc["results"]
    chips = {float(r["fraction"]): int(r["n_labelled"]) for r in doc.get("rows", [])}
    rows = []
    for init in sorted(res):
        if init == "random":
            continue
        for mode in sorted(res[init]):
            for rmode in sorted(res.get("random", {})):
                for r in _rows(res, init, mode, rmode):
                    if chips:
                        r["chips_at_fraction"] = chips.get(r["at_fraction"])
                        r["random_chips"] = (
                            chips_at(r["random_fraction"], chips)
                            if r["random_needs"] == "at"
                            else None
                        )
                    rows.append(r)
    return rows


def _rows(res: dict[str, Any], init: str, mode: str, rmode: str) -> list[dict[str, Any]]:
    base = res["random"][rmode]
    rows = []
    for score in SCORES:
        curve = {
            float(f): cell[score]["mean"]
            for f, cell in base.items()
            if cell.get(score, {}).get("mean") is not None
        }
        mine = {
            float(f): cell[score]["mean"]
            for f, cell in res[init][mode].items()
            if cell.get(score, {}).get("mean") is not None
        }
        if not curve or not mine:
            continue
        low = min(mine)
        how, frac = matching_fraction(curve, mine[low])
        rows.append(
            {
                "init": init,
                "mode": mode,
                "random_mode": rmode,
                "score": score,
                "at_fraction": low,
                "pretrained_mean": mine[low],
                "random_curve": dict(sorted(curve.items())),
                "random_needs": how,
                "random_fraction": frac,
                "label_multiple": (frac / low) if how == "at" and frac else None,
            }
        )
    return rows


FINETUNE_KEYS = ("finetune_max_steps", "eval_every", "lrs", "encoder_lr_mults", "arch")
"""What random init's score depends on besides its cell: two runs' random curves may be read
as one only when these agree (pretraining budgets do not touch random init)."""


def merge_random(doc: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with random init's cells from another run of the same split and fine-tuning
    budget added, for fractions the first run did not measure.

    Why: the reading interpolates random's curve between measured fractions, and a wide gap
    (19 to 157 chips) makes the figure an interpolation; a random-only run at the missing
    fractions is cheap, while re-running every init is not. A fraction measured in both must
    give the same means (random init is deterministic on one machine): a disagreement means
    the runs are not comparable and is refused, as is any other split or budget."""
    diff = [k for k in ("split", "heldout_bbox") if doc.get(k) != extra.get(k)]
    budget, other = doc.get("budget", {}), extra.get("budget", {})
    diff += [f"budget.{k}" for k in FINETUNE_KEYS if budget.get(k) != other.get(k)]
    if diff:
        raise ValueError(f"cannot merge random init's curves: {', '.join(diff)} differ")
    merged = json.loads(json.dumps(doc))
    mine = merged["results"].setdefault("random", {})
    added: set[float] = set()
    for mode, cells in extra.get("results", {}).get("random", {}).items():
        into = mine.setdefault(mode, {})
        for f, cell in cells.items():
            if f in into:
                for score in SCORES:
                    a = into[f].get(score, {}).get("mean")
                    b = cell.get(score, {}).get("mean")
                    if a is not None and b is not None and abs(a - b) > 1e-9:
                        raise ValueError(
                            f"random init, {mode}, fraction {f}: {score} {a} here, {b} in the "
                            "other run; the runs are not comparable"
                        )
                continue
            into[f] = cell
            added.add(float(f))
    merged["rows"] = merged.get("rows", []) + [
        r
        for r in extra.get("rows", [])
        if r.get("init") == "random" and float(r["fraction"]) in added
    ]
    return merged


def describe(r: dict[str, Any]) -> str:
    pct = 100 * (r["random_fraction"] or 0.0)
    if r["random_needs"] == "below":
        need = f"≤{pct:g} %"
    elif r["random_needs"] == "above":
        need = f">{pct:g} %"
    else:
        need = f"{pct:.1f} % (×{r['label_multiple']:.1f})"
        if r.get("random_chips") and r.get("chips_at_fraction"):
            n, n0 = r["random_chips"], r["chips_at_fraction"]
            need += f"; ≈{n:.0f} chips vs {n0} (×{n / n0:.1f})"
    return (
        f"| {r['init']} | {r['mode']} | random {r['random_mode']} | {r['score']} "
        f"| {100 * r['at_fraction']:g} % "
        f"| {r['pretrained_mean']:.3f} | {need} |"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("results", help="a label_efficiency.py results JSON")
    ap.add_argument("--out", default=None)
    ap.add_argument(
        "--random-from",
        action="append",
        default=[],
        help="a random-init-only results JSON at more fractions (same split and budget)",
    )
    ns = ap.parse_args(argv)
    doc = json.loads(Path(ns.results).read_text())
    for extra in ns.random_from:
        doc = merge_random(doc, json.loads(Path(extra).read_text()))
    rows = labels_saved(doc)
    print("| init | mode | against | score | at | pretrained mean | random needs |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(describe(r))
    if ns.out:
        Path(ns.out).write_text(
            json.dumps({"input": ns.results, "random_from": ns.random_from, "rows": rows}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
