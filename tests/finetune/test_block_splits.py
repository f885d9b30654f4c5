"""finetune.splits: block keys, the salted block hash, both split modes and the overlap filter."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from earthloop.config import SplitConfig
from earthloop.finetune.splits import assign_split, block_key, block_unit, overlapping_eval


def test_block_key_is_a_half_open_floor_square() -> None:
    assert block_key(0.0, 0.0, 0.05) == "0|0"
    assert block_key(0.0499, 0.0499, 0.05) == "0|0"
    assert block_key(0.05, 0.0, 0.05) == "1|0"
    assert block_key(-0.0001, 0.0, 0.05) == "-1|0"  # floor, not truncation towards zero
    assert block_key(12.34, 45.67, 0.1) == "123|456"


def test_block_unit_is_stable_uniform_and_salted() -> None:
    assert block_unit("3|4", "s") == block_unit("3|4", "s")
    assert block_unit("3|4", "s") != block_unit("3|4", "t")
    units = np.array([block_unit(f"{i}|{j}", "s") for i in range(60) for j in range(60)])
    assert ((units >= 0) & (units < 1)).all()
    assert abs(units.mean() - 0.5) < 0.02
    assert abs((units < 0.2).mean() - 0.2) < 0.03


def test_blocks_mode_fractions_and_whole_blocks() -> None:
    sc = SplitConfig(mode="blocks", block_deg=0.01, val_fraction=0.2, test_fraction=0.3, salt="x")
    rng = np.random.default_rng(0)
    points = rng.uniform([10.0, 45.0], [11.0, 46.0], size=(5000, 2))
    splits = [assign_split(lon, lat, None, sc) for lon, lat in points]
    share = {s: splits.count(s) / len(splits) for s in ("train", "val", "test")}
    assert abs(share["test"] - 0.3) < 0.05 and abs(share["val"] - 0.2) < 0.05
    by_block: dict[str, set[str]] = {}
    for (lon, lat), s in zip(points, splits, strict=True):
        by_block.setdefault(block_key(lon, lat, sc.block_deg), set()).add(s)
    assert all(len(sides) == 1 for sides in by_block.values())  # a block never straddles


def test_index_mode_keeps_train_and_carves_test_from_val() -> None:
    sc = SplitConfig(mode="index", block_deg=0.01, index_test_share=0.5, salt="x")
    rng = np.random.default_rng(1)
    points = rng.uniform([10.0, 45.0], [11.0, 46.0], size=(3000, 2))
    assert {assign_split(lon, lat, "train", sc) for lon, lat in points} == {"train"}
    from_val = [assign_split(lon, lat, "val", sc) for lon, lat in points]
    assert set(from_val) == {"val", "test"}
    assert abs(from_val.count("test") / len(from_val) - 0.5) < 0.06


@pytest.mark.parametrize("bad", [None, "test", "holdout"])
def test_index_mode_refuses_an_unknown_index_split(bad: str | None) -> None:
    with pytest.raises(ValueError, match="mode=blocks"):
        assign_split(10.0, 45.0, bad, SplitConfig(mode="index"))


def _chip(x: float, y: float, size: float = 10.0, crs: str = "EPSG:32633") -> dict[str, Any]:
    return {"crs": crs, "minx": x, "miny": y, "maxx": x + size, "maxy": y + size}


def test_overlapping_eval_flags_eval_chips_touching_train() -> None:
    rows = [
        _chip(0, 0),  # train
        _chip(5, 5),  # val, overlaps the train chip
        _chip(11, 0),  # test, shares only an edge (x = 11): not an overlap
        _chip(100, 100),  # val, far away
        _chip(5, 5, crs="EPSG:32634"),  # test, same numbers in another CRS: not compared
        _chip(1, 1),  # train, overlaps train: train chips are never flagged
    ]
    splits = ["train", "val", "test", "val", "test", "train"]
    assert overlapping_eval(rows, splits) == [False, True, False, False, False, False]


def test_overlapping_eval_without_train_flags_nothing() -> None:
    rows = [_chip(0, 0), _chip(5, 5)]
    assert overlapping_eval(rows, ["val", "test"]) == [False, False]
