"""The sweep's report: a markdown file and PNG plots people can look at without a notebook.

Everything is computed from the trial rows (the Delta table), so a report can be rebuilt later
from the table alone (:func:`report_from_table`). Per grid cell only the trial selected on the
*validation* split enters the tables and plots; its *test* score is what is shown.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from earthloop.store.delta import read_table
from earthloop.store.fs import local_staging, staged_path

__all__ = ["ReportPaths", "curves", "gains", "report_from_table", "write_report"]


@dataclass
class ReportPaths:
    markdown: str
    plots: list[str]


def _curve(r: dict[str, Any]) -> str:
    return f"{r['init']} ({r['mode']})" if "|mode=" in r["cell"] else str(r["init"])


def _ok(x: Any) -> bool:
    return isinstance(x, int | float) and not math.isnan(float(x))


def curves(
    rows: Sequence[dict[str, Any]], key: str = "test_metric"
) -> dict[str, dict[float, dict[int, float]]]:
    """``{curve: {fraction: {seed: value}}}`` over the selected trials."""
    out: dict[str, dict[float, dict[int, float]]] = {}
    for r in rows:
        if not r.get("selected") or not _ok(r.get(key)):
            continue
        out.setdefault(_curve(r), {}).setdefault(float(r["fraction"]), {})[int(r["seed"])] = float(
            r[key]
        )
    return out


def _baselines(rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    """Curve -> its random-init baseline curve (same mode when modes are a grid dimension)."""
    random_curves = {_curve(r): r for r in rows if r.get("init_kind") == "random"}
    out = {}
    for r in rows:
        c = _curve(r)
        if r.get("init_kind") == "random":
            continue
        match = [
            k
            for k, rr in random_curves.items()
            if "|mode=" not in r["cell"] or rr["mode"] == r["mode"]
        ]
        if match:
            out[c] = sorted(match)[0]
    return out


def gains(
    rows: Sequence[dict[str, Any]], key: str = "test_metric"
) -> dict[str, dict[float, dict[int, float]]]:
    """Per pretrained curve: ``{fraction: {seed: value - random-init value (same seed)}}``."""
    cur = curves(rows, key)
    out: dict[str, dict[float, dict[int, float]]] = {}
    for c, base in _baselines(rows).items():
        if c not in cur or base not in cur:
            continue
        for f, by_seed in cur[c].items():
            for s, v in by_seed.items():
                b = cur[base].get(f, {}).get(s)
                if b is not None:
                    out.setdefault(c, {}).setdefault(f, {})[s] = v - b
    return out


def _stats(vals: Sequence[float]) -> tuple[float, float, float, float]:
    a = np.asarray(vals, dtype=np.float64)
    return (
        float(a.mean()),
        float(a.std(ddof=1)) if a.size > 1 else 0.0,
        float(a.min()),
        float(a.max()),
    )


def _fmt(vals: dict[int, float] | None, signed: bool = False) -> str:
    if not vals:
        return "–"
    m, s, _, _ = _stats(list(vals.values()))
    sign = "+" if signed and m >= 0 else ""
    txt = f"{sign}{m:.3f}"
    if len(vals) > 1:
        txt += f" ± {s:.3f}"
    if signed:
        pos = sum(1 for v in vals.values() if v > 0)
        txt += f" ({pos}/{len(vals)} seeds > 0)"
    return txt


def _plot_curves(data: dict[str, dict[float, dict[int, float]]], ax: Any, ylabel: str) -> None:
    for i, (name, by_f) in enumerate(sorted(data.items())):
        fs = sorted(by_f)
        means = [_stats(list(by_f[f].values()))[0] for f in fs]
        lo = [_stats(list(by_f[f].values()))[2] for f in fs]
        hi = [_stats(list(by_f[f].values()))[3] for f in fs]
        color = f"C{i}"
        ax.plot(fs, means, "o-", color=color, label=name)
        ax.fill_between(fs, lo, hi, color=color, alpha=0.15)
        for f in fs:
            ys = list(by_f[f].values())
            ax.scatter([f] * len(ys), ys, color=color, s=12, alpha=0.6)
    ax.set_xscale("log")
    ax.set_xlabel("label fraction (log scale)")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)


def _write_plots(rows: Sequence[dict[str, Any]], out: str, metric: str, task: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    main = curves(rows)
    panels = [(main, f"test {metric}")]
    if task == "segmentation":
        panels.append((curves(rows, "test_boundary_miou"), "test boundary mIoU"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    for ax, (data, label) in zip(axes[0], panels, strict=True):
        if data:
            _plot_curves(data, ax, label)
        else:
            ax.text(0.5, 0.5, "no finished trial", ha="center", transform=ax.transAxes)
    fig.suptitle("Label efficiency: mean over seeds, band = seed min-max, dots = seeds")
    fig.tight_layout()
    p = os.path.join(out, "metric_vs_fraction.png")
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)

    g = gains(rows)
    fig, ax = plt.subplots(figsize=(6, 4.2))
    if g:
        _plot_curves(g, ax, f"test {metric} gain over random init")
        ax.axhline(0.0, color="k", lw=1)
    else:
        ax.text(0.5, 0.5, "no pretrained/random pair finished", ha="center", transform=ax.transAxes)
    ax.set_title("Gain of pretraining over random initialisation (same seed)")
    fig.tight_layout()
    p = os.path.join(out, "gain_over_random.png")
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)
    return paths


def write_report(
    rows: Sequence[dict[str, Any]], out_dir: str, summary: dict[str, Any]
) -> ReportPaths:
    """Write ``report.md``, ``metric_vs_fraction.png`` and ``gain_over_random.png``.

    ``out_dir`` may be ``s3://…`` (a workdir on S3): matplotlib and the markdown writer only know
    local files, so they write into a local staging folder that is uploaded at the end, and the
    returned paths are the uploaded URIs.
    """
    with local_staging(out_dir) as local:
        written = _write_report(rows, local, summary)
    return ReportPaths(
        staged_path(written.markdown, local, out_dir),
        [staged_path(p, local, out_dir) for p in written.plots],
    )


def _table(
    title: str,
    by_init: dict[str, dict[float, dict[int, float]]],
    fractions: list[float],
    *,
    signed: bool = False,
) -> list[str]:
    """A markdown table: one row per initialisation, one column per label fraction."""
    lines = [
        title,
        "",
        "| initialisation | " + " | ".join(f"{f:g}" for f in fractions) + " |",
        "|---|" + "---|" * len(fractions),
    ]
    for name in sorted(by_init):
        lines.append(
            f"| {name} | "
            + " | ".join(_fmt(by_init[name].get(f), signed=signed) for f in fractions)
            + " |"
        )
    return lines


def _setup_lines(summary: dict[str, Any], metric: str, task: str) -> list[str]:
    chips = summary.get("chips") or {}
    return [
        f"# Label-efficiency sweep `{summary.get('sweep', '')}`",
        "",
        "## Setup",
        "",
        f"- task: **{task}**, metric: **{metric}** (mean over classes present), backbone "
        f"`{summary.get('backbone')}`, bands {summary.get('bands')}",
        f"- labels: `{summary.get('labels')}`; chip index `{chips.get('uri', '–')}` at version "
        f"{chips.get('version', '–')}",
        f"- spatial split (mode {summary.get('split', {}).get('mode')}, "
        f"{summary.get('split', {}).get('block_deg')}° blocks): labelled locations "
        f"{summary.get('pool')}; {summary.get('dropped_overlap', 0)} val/test chips dropped "
        "for touching a train chip",
        f"- train-split classes (labelled pixels or samples): {summary.get('classes')}",
        f"- label subsets (nested, stratified; `fraction|seed`: chips): "
        f"{summary.get('label_sets')}",
        f"- {summary.get('max_steps')} optimiser steps per trial"
        + (f" of batch {summary['batch_size']}" if summary.get("batch_size") else "")
        + (
            f" on random {summary['train_crop']} px crops (val/test on whole chips)"
            if summary.get("train_crop")
            else ""
        )
        + f", class weights "
        f"{summary.get('class_weights', 'none')}; search "
        f"{json.dumps(summary.get('search'))}; ASHA {json.dumps(summary.get('asha'))}",
        "- each cell's trial is selected on **validation**; the numbers below are its **test** "
        "scores",
        *_pretraining_lines(summary.get("pretraining") or {}),
        "",
    ]


def _pretraining_lines(facts: dict[str, dict[str, Any]]) -> list[str]:
    """One line per pretrained init: how much pretraining its curve stands on."""
    lines = []
    for init, f in sorted(facts.items()):
        wall = f.get("wall_s")
        where = (
            f"{f['locations']} train-split locations ({f['chips']} chips)"
            if f.get("locations") is not None
            else "an unreadable chip index"
        )
        lines.append(
            f"- `{init}` = pretraining run `{f.get('run')}` ({f.get('method')}): "
            f"{f.get('steps')} optimiser steps"
            + (f" in {wall / 60:.1f} min" if wall is not None else "")
            + f" on {where}; status {f.get('status')}"
        )
    if lines:
        lines.append(
            "- a short pretraining on a small archive shows the plumbing, not what pretraining "
            "buys at scale, and a short fine-tuning budget can hide what more labels buy (the "
            "demo: docs/finetune.md#demo-crops); the protocol's figures: "
            "docs/label-efficiency.md and docs/benchmarks.md"
        )
    return lines


def _result_lines(rows: Sequence[dict[str, Any]], metric: str, task: str) -> list[str]:
    """The test-score, boundary and gain tables."""
    fractions = sorted({float(r["fraction"]) for r in rows})
    lines = _table(f"## Test {metric} by label fraction", curves(rows), fractions)
    if task == "segmentation":
        b = curves(rows, "test_boundary_miou")
        lines += ["", *_table("## Test boundary mIoU by label fraction", b, fractions)]
    g = gains(rows)
    title = f"## Gain over random initialisation (test {metric}, same seed)"
    if g:
        lines += ["", *_table(title, g, fractions, signed=True)]
    else:
        lines += ["", title, "", "No pretrained/random pair of finished trials to compare."]
    return lines


def _trial_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    lines = [
        "## All trials",
        "",
        "| trial | init | mode | fraction | seed | lr | wd | enc mult | labelled | status "
        "| iters | best val | test | selected |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["fraction"], r["init"], r["seed"], r["trial_id"])):
        lines.append(
            f"| {r['trial_id']} | {r['init']} | {r['mode']} | {r['fraction']:g} | {r['seed']} | "
            f"{r['lr']:.2g} | {r['weight_decay']:.2g} | {r['encoder_lr_mult']:.2g} | "
            f"{r['n_labelled']} | {r['status']} | {r['iterations']} | "
            f"{r['best_val_metric']:.3f} | {r['test_metric']:.3f} | "
            f"{'yes' if r['selected'] else ''} |"
        )
    return lines


_READING = [
    "## Reading these numbers",
    "",
    "- Train, val and test are disjoint spatial blocks. Random pixel (or random chip) splits "
    "put near-identical neighbours on both sides and inflate remote-sensing scores; gains "
    "measured that way are not gains on new places.",
    "- Label subsets are nested (1 % ⊂ 5 % ⊂ 10 %) and stratified by chip majority class with "
    "`ceil(fraction × n_class)` per class, so the smallest budgets hold at least one chip "
    "per class and can exceed the nominal fraction (see the labelled column).",
    "- Each trial materialises its labelled subset in memory: this is meant for small "
    "label budgets, which is what label-efficiency curves are about.",
    "- With few seeds the spread is a rough guide, not a confidence interval.",
]


def _write_report(
    rows: Sequence[dict[str, Any]], out_dir: str, summary: dict[str, Any]
) -> ReportPaths:
    metric = str(summary.get("metric", "metric"))
    task = str(summary.get("task", ""))
    plots = _write_plots(rows, out_dir, metric, task)
    lines = [
        *_setup_lines(summary, metric, task),
        *_result_lines(rows, metric, task),
        "",
        "![metric vs label fraction](metric_vs_fraction.png)",
        "",
        "![gain over random](gain_over_random.png)",
        "",
        *_trial_lines(rows),
        "",
        *_READING,
    ]
    md = os.path.join(out_dir, "report.md")
    with open(md, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return ReportPaths(md, plots)


def report_from_table(
    uri: str, sweep: str, out_dir: str, summary: dict[str, Any] | None = None
) -> ReportPaths:
    """Rebuild a sweep's report from its Delta rows alone."""
    rows = [r for r in read_table(uri).to_pylist() if r["sweep"] == sweep]
    if not rows:
        raise ValueError(f"no rows of sweep {sweep!r} in {uri}")
    info = dict(summary or {})
    info.setdefault("sweep", sweep)
    info.setdefault("metric", rows[0]["metric"])
    info.setdefault("task", rows[0]["task"])
    info.setdefault("backbone", rows[0]["backbone"])
    info.setdefault("bands", rows[0]["bands"])
    info.setdefault(
        "chips", {"uri": rows[0]["chips_table"], "version": rows[0]["chips_table_version"]}
    )
    return write_report(rows, out_dir, info)
