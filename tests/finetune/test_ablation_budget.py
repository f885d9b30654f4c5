"""benchmarks/ablation_budget.py: the pretraining-budget ablation's merge of per-budget runs.

The merge is what the note's figures come from, so it must refuse runs that differ in more than
the budget (their gains would not be comparable), report a random init that moved between runs,
and compute each gain against the random init of its own run.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from bench_helpers import load_benchmark


def _module() -> ModuleType:
    return load_benchmark("ablation_budget")


SCORES = ("heldout_miou", "test_miou", "heldout_boundary_miou", "test_boundary_miou")


def _cell(per_seed: dict[str, float], base: dict[str, float] | None) -> dict[str, Any]:
    vals = list(per_seed.values())
    cell: dict[str, Any] = {
        "per_seed": per_seed,
        "mean": sum(vals) / len(vals),
        "std": 0.0,
    }
    if base is not None:
        cell["gain_over_random"] = sum(per_seed[s] - base[s] for s in per_seed) / len(per_seed)
    return cell


def _run(
    tmp: Path, steps: int, dense: dict[str, float], random: dict[str, float], **budget: Any
) -> str:
    results = {
        "random": {"full": {"0.01": {k: _cell(random, None) for k in SCORES}}},
        "dense": {"full": {"0.01": {k: _cell(dense, random) for k in SCORES}}},
    }
    doc = {
        "budget": {
            "pretrain_steps": steps,
            "pretrain_batch": 32,
            "overrides": [f"finetune.labels=runs/x/steps{steps}/labelled-manifest.json"],
            **budget,
        },
        "pretraining": [{"method": "dense", "train_s": 1.0 * steps}],
        "machine": "test",
        "results": results,
    }
    path = tmp / f"steps{steps}.json"
    path.write_text(json.dumps(doc))
    return str(path)


def test_gains_per_budget_against_each_runs_random(tmp_path: Path) -> None:
    mod = _module()
    rnd = {"0": 0.2, "1": 0.3}
    a = _run(tmp_path, 250, {"0": 0.25, "1": 0.29}, rnd)
    b = _run(tmp_path, 3000, {"0": 0.4, "1": 0.5}, rnd)
    out = tmp_path / "merged.json"
    assert mod.main([b, a, "--out", str(out), "--plot", str(tmp_path / "p.png")]) == 0
    doc = json.loads(out.read_text())
    assert doc["steps"] == [250, 3000]
    assert doc["random_init_max_drift"] == 0.0
    by_steps = {r["steps"]: r["heldout_miou"] for r in doc["rows"]}
    assert by_steps[250]["gain"] == pytest.approx(0.02)
    assert by_steps[250]["seeds_ahead"] == 1
    assert by_steps[3000]["gain"] == pytest.approx(0.2)
    assert by_steps[3000]["seeds_ahead"] == 2
    assert (tmp_path / "p.png").stat().st_size > 0


def test_a_random_init_that_moved_between_runs_is_reported(tmp_path: Path) -> None:
    mod = _module()
    a = _run(tmp_path, 250, {"0": 0.3}, {"0": 0.2})
    b = _run(tmp_path, 1000, {"0": 0.3}, {"0": 0.23})
    runs = mod.load_runs([a, b])
    assert mod.random_drift(runs) == pytest.approx(0.03)


def test_runs_that_differ_in_more_than_the_steps_are_refused(tmp_path: Path) -> None:
    mod = _module()
    a = _run(tmp_path, 250, {"0": 0.3}, {"0": 0.2}, finetune_max_steps=400)
    b = _run(tmp_path, 1000, {"0": 0.3}, {"0": 0.2}, finetune_max_steps=2000)
    with pytest.raises(SystemExit, match="finetune_max_steps"):
        mod.load_runs([a, b])


def test_cscl_runs_merge_on_their_own_budget_key(tmp_path: Path) -> None:
    """Ablation C varies CSCL's steps per cell and keeps ``pretrain_steps``: merging on the
    default key would call two different runs one budget; on ``cscl_steps`` they are two."""
    mod = _module()
    rnd = {"0": 0.2}
    paths = []
    for name, cscl, dense in (("a", 100, 0.21), ("b", 1000, 0.26)):
        written = Path(_run(tmp_path, 1000, {"0": dense}, rnd, cscl_steps=cscl))
        paths.append(str(written.rename(tmp_path / f"{name}.json")))
    with pytest.raises(SystemExit, match="cscl_steps"):
        mod.load_runs(paths)
    out = tmp_path / "c.json"
    assert mod.main([*paths, "--key", "cscl_steps", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["key"] == "cscl_steps"
    gains = {r["steps"]: r["test_boundary_miou"]["gain"] for r in doc["rows"]}
    assert gains == {100: pytest.approx(0.01), 1000: pytest.approx(0.06)}
