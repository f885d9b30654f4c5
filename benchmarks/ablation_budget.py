"""Ablations A and C of docs/label-efficiency.md: the gain at 1 % labels against a budget.

    .venv/bin/python benchmarks/ablation_budget.py docs/results/label_efficiency_ablation_a/steps*.json \
        --out docs/results/label_efficiency_ablation_a.json --plot docs/results/label_efficiency_ablation_a.png
    .venv/bin/python benchmarks/ablation_budget.py --key cscl_steps \
        docs/results/label_efficiency_ablation_c/cscl*.json --out docs/results/label_efficiency_ablation_c.json

Each input is the results JSON of one ``label_efficiency.py`` run that differs from the others
only in one budget key (``--key``: ``pretrain_steps`` for SeCo and dense contrast, ``cscl_steps``
for CSCL, whose pretraining is per cell and budgeted apart). The runs are checked to be comparable (same budget keys but the
steps, and random init scoring the same in each: it is deterministic on one machine, so a
difference means the runs did not see the same data or code), then tabulated per budget as the
paired gain over random, the figure the protocol's +10 target is about.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

SCORES = ("heldout_miou", "test_miou", "heldout_boundary_miou", "test_boundary_miou")


def load_runs(paths: list[str], key: str = "pretrain_steps") -> dict[int, dict[str, Any]]:
    """The runs keyed by the budget ``key``, refusing two runs that differ in anything else."""
    runs: dict[int, dict[str, Any]] = {}
    ref: dict[str, Any] | None = None
    for p in paths:
        doc = json.loads(Path(p).read_text())
        budget = dict(doc["budget"])
        if key not in budget:
            raise SystemExit(f"{p}: its budget has no {key!r}")
        steps = int(budget.pop(key))
        # the labelled manifest lives in each run's --out; its path differs, its content does not
        budget["overrides"] = [
            o for o in budget["overrides"] if not o.startswith("finetune.labels=")
        ]
        if ref is None:
            ref = budget
        elif budget != ref:
            diff = sorted(k for k in set(ref) | set(budget) if ref.get(k) != budget.get(k))
            raise SystemExit(f"{p}: differs from the first run in more than {key}: {diff}")
        if steps in runs:
            raise SystemExit(f"{p}: a second run at {key} = {steps}")
        runs[steps] = doc
    return dict(sorted(runs.items()))


def random_drift(runs: dict[int, dict[str, Any]]) -> float:
    """The largest difference of a random-init score between runs (0 when they are comparable)."""
    worst = 0.0
    first: dict[tuple[str, str, str, str], float] = {}
    for doc in runs.values():
        for mode, fracs in doc["results"]["random"].items():
            for f, cell in fracs.items():
                for k in SCORES:
                    for seed, v in cell[k]["per_seed"].items():
                        key = (mode, f, k, seed)
                        if key in first:
                            worst = max(worst, abs(v - first[key]))
                        else:
                            first[key] = v
    return worst


def table(runs: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per budget x init x mode x fraction: every score's mean, std, gain, seeds ahead."""
    rows = []
    for steps, doc in runs.items():
        train_s = {p["method"]: p.get("train_s") for p in doc.get("pretraining", [])}
        for init, modes in sorted(doc["results"].items()):
            if init == "random":
                continue
            for mode, fracs in sorted(modes.items()):
                for f, cell in sorted(fracs.items(), key=lambda kv: float(kv[0])):
                    base = doc["results"]["random"][mode][f]
                    row: dict[str, Any] = {
                        "steps": steps,
                        "init": init,
                        "mode": mode,
                        "fraction": float(f),
                        "pretrain_train_s": train_s.get(init),
                    }
                    for k in SCORES:
                        mine, theirs = cell[k]["per_seed"], base[k]["per_seed"]
                        ahead = sum(1 for s, v in mine.items() if v > theirs[s])
                        row[k] = {
                            "mean": cell[k]["mean"],
                            "std": cell[k]["std"],
                            "random_mean": base[k]["mean"],
                            "gain": cell[k].get("gain_over_random"),
                            "seeds_ahead": ahead,
                            "seeds": len(mine),
                        }
                    rows.append(row)
    return rows


def plot(
    rows: list[dict[str, Any]],
    path: Path,
    key: str = "pretrain_steps",
    scores: tuple[str, ...] = ("heldout_miou", "test_miou"),
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    modes = sorted({r["mode"] for r in rows})
    fig, axes = plt.subplots(1, len(modes), figsize=(5.5 * len(modes), 4), squeeze=False)
    for ax, mode in zip(axes[0], modes, strict=True):
        for init in sorted({r["init"] for r in rows}):
            for k in scores:
                style = "-" if k.startswith("heldout") else "--"
                pts = sorted(
                    (r["steps"], r[k]["gain"])
                    for r in rows
                    if r["init"] == init and r["mode"] == mode and r[k]["gain"] is not None
                )
                if pts:
                    xs, ys = zip(*pts, strict=True)
                    where = "held-out" if k.startswith("heldout") else "in-region"
                    what = " boundary" if "boundary" in k else ""
                    ax.plot(xs, ys, style, marker="o", label=f"{init}, {where}{what}")
        ax.axhline(0.0, color="grey", lw=0.8)
        if key == "cscl_steps":
            ax.axhline(0.03, color="red", lw=0.8, ls=":", label="target (+0.03 boundary)")
        else:
            ax.axhline(0.10, color="red", lw=0.8, ls=":", label="target (+0.10 held-out)")
        ax.set_xscale("log")
        budgets = sorted({r["steps"] for r in rows})
        ax.set_xticks(budgets, [str(b) for b in budgets])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlabel(
            "CSCL steps per cell" if key == "cscl_steps" else "pretraining steps (batch 32)"
        )
        ax.set_ylabel("gain over random at 1 % labels")
        ax.set_title(f"{mode}: paired gain, mean over seeds")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| steps | init | mode | held-out mIoU (gain; seeds ahead) | in-region mIoU (gain; ahead)"
        " | held-out boundary (gain; ahead) | in-region boundary (gain; ahead) | pretraining s |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def fmt(c: dict[str, Any]) -> str:
        return (
            f"{c['mean']:.3f} ± {c['std']:.3f} ({c['gain']:+.3f}; {c['seeds_ahead']}/{c['seeds']})"
        )

    for r in sorted(rows, key=lambda r: (r["mode"], r["init"], r["steps"])):
        cells = " | ".join(fmt(r[k]) for k in SCORES)
        lines.append(
            f"| {r['steps']} | {r['init']} | {r['mode']} | {cells} | {r['pretrain_train_s']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="results JSONs of label_efficiency.py, one per budget")
    ap.add_argument("--out", required=True)
    ap.add_argument("--plot", default=None)
    ap.add_argument(
        "--key",
        default="pretrain_steps",
        choices=["pretrain_steps", "cscl_steps"],
        help="the budget key the runs differ in",
    )
    ns = ap.parse_args(argv)
    runs = load_runs(ns.runs, ns.key)
    drift = random_drift(runs)
    rows = table(runs)
    doc = {
        "ablation": "docs/label-efficiency.md, "
        + ("Ablation C" if ns.key == "cscl_steps" else "Ablation A"),
        "key": ns.key,
        "inputs": ns.runs,
        "budget": {k: v for k, v in next(iter(runs.values()))["budget"].items()},
        "steps": list(runs),
        "random_init_max_drift": drift,
        "random": {
            str(steps): {
                mode: {f: {k: cell[k] for k in SCORES} for f, cell in fracs.items()}
                for mode, fracs in doc["results"]["random"].items()
            }
            for steps, doc in runs.items()
        },
        "machine": {str(s): d.get("machine") for s, d in runs.items()},
        "rows": rows,
    }
    Path(ns.out).write_text(json.dumps(doc, indent=1))
    if ns.plot:
        scores = (
            ("heldout_boundary_miou", "test_boundary_miou")
            if ns.key == "cscl_steps"
            else ("heldout_miou", "test_miou")
        )
        plot(rows, Path(ns.plot), ns.key, scores)
    print(markdown(rows))
    print(f"random init: largest score difference between runs {drift:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
