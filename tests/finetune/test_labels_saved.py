"""benchmarks/labels_saved.py: the "labels saved" reading of a label-efficiency curve.

The reading is what the note quotes to a team budgeting annotation, so it must interpolate in
log(fraction), say when random init is already there or never gets there instead of
extrapolating, and compare each init with the random init of the same mode."""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import pytest
from bench_helpers import load_benchmark


def _module() -> ModuleType:
    return load_benchmark("labels_saved")


def test_interpolates_in_log_fraction() -> None:
    mod = _module()
    how, f = mod.matching_fraction({0.01: 0.2, 0.1: 0.4}, 0.3)
    assert how == "at"
    assert f == pytest.approx(math.sqrt(0.01 * 0.1))  # half-way in log space, not 0.055


def test_out_of_range_is_said_not_extrapolated() -> None:
    mod = _module()
    assert mod.matching_fraction({0.01: 0.2, 1.0: 0.4}, 0.5) == ("above", 1.0)
    assert mod.matching_fraction({0.01: 0.35, 1.0: 0.4}, 0.3) == ("below", 0.01)
    # the first crossing counts: a later dip and recovery does not move it
    how, f = mod.matching_fraction({0.01: 0.2, 0.05: 0.31, 0.1: 0.28, 1.0: 0.5}, 0.3)
    assert how == "at" and 0.01 < f < 0.05


def _cell(mean: float) -> dict[str, Any]:
    return {k: {"mean": mean} for k in ("heldout_miou", "test_miou")}


def test_rows_compare_each_mode_with_its_own_random() -> None:
    mod = _module()
    doc = {
        "results": {
            "random": {
                "linear": {"0.01": _cell(0.1), "0.1": _cell(0.3)},
                "full": {"0.01": _cell(0.2), "0.1": _cell(0.5)},
            },
            "dense": {"linear": {"0.01": _cell(0.3)}, "full": {"0.01": _cell(0.3)}},
        }
    }
    rows = {(r["mode"], r["random_mode"], r["score"]): r for r in mod.labels_saved(doc)}
    lin = rows[("linear", "linear", "heldout_miou")]
    full = rows[("full", "full", "heldout_miou")]
    assert lin["random_needs"] == "at" and lin["random_fraction"] == pytest.approx(0.1)
    assert lin["label_multiple"] == pytest.approx(10.0)
    assert full["random_needs"] == "at" and full["random_fraction"] < 0.1
    # the linear probe against random's full fine-tuning: the reading a team would act on
    cross = rows[("linear", "full", "heldout_miou")]
    assert cross["random_fraction"] == pytest.approx(full["random_fraction"])
    assert len(rows) == 2 * 2 * 2


def test_chips_say_what_a_nominal_fraction_hides() -> None:
    """A stratified 1 % keeps every class (7 chips of 157 here), so a multiple of fractions
    overstates the labels saved; the chip count is read off the same segment."""
    mod = _module()
    chips = {0.01: 7, 0.1: 19, 1.0: 157}
    assert mod.chips_at(0.1, chips) == 19
    mid = mod.chips_at(math.sqrt(0.1 * 1.0), chips)
    assert mid == pytest.approx(math.sqrt(19 * 157))
    assert mod.chips_at(2.0, chips) is None


def _run(random: dict[str, Any], **budget: Any) -> dict[str, Any]:
    base = {"finetune_max_steps": 400, "eval_every": 50, "lrs": [3e-3], "arch": "resnet_tiny"}
    return {
        "split": {"train": 157},
        "heldout_bbox": [0, 0, 1, 1],
        "budget": {**base, **budget},
        "results": {"random": random},
        "rows": [],
    }


def test_random_curve_from_another_run_fills_the_gap() -> None:
    """A random-only run at 50 % turns an interpolation across 10-100 % into a measurement."""
    mod = _module()
    doc = _run({"full": {"0.1": _cell(0.2), "1.0": _cell(0.5)}})
    doc["results"]["dense"] = {"full": {"0.1": _cell(0.45)}}
    before = {r["score"]: r for r in mod.labels_saved(doc)}["heldout_miou"]
    extra = _run({"full": {"0.5": _cell(0.46), "1.0": _cell(0.5)}}, pretrain_steps=1)
    extra["rows"] = [{"init": "random", "fraction": 0.5, "n_labelled": 78}]
    merged = mod.merge_random(doc, extra)
    after = {r["score"]: r for r in mod.labels_saved(merged)}["heldout_miou"]
    assert 0.1 < after["random_fraction"] < 0.5 < before["random_fraction"]
    assert sorted(merged["results"]["random"]["full"]) == ["0.1", "0.5", "1.0"]
    assert merged["rows"] == extra["rows"]
    assert "0.5" not in doc["results"]["random"]["full"]  # the input is not modified


def test_random_curves_of_other_runs_are_refused() -> None:
    mod = _module()
    doc = _run({"full": {"0.1": _cell(0.2)}})
    with pytest.raises(ValueError, match="budget.finetune_max_steps"):
        mod.merge_random(doc, _run({"full": {"0.5": _cell(0.3)}}, finetune_max_steps=1000))
    # the same fraction scored differently: not the same experiment
    with pytest.raises(ValueError, match="not comparable"):
        mod.merge_random(doc, _run({"full": {"0.1": _cell(0.25)}}))
