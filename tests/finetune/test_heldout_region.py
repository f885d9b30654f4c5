"""A held-out region: never trained or selected on, scored apart at the best val iteration."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from earthloop.config import ConfigError, SplitConfig, load_config
from earthloop.finetune.plan import plan_sweep, trial_configs
from earthloop.finetune.splits import assign_split
from earthloop.finetune.trial import execute_trial


def test_points_inside_the_bbox_are_heldout_whatever_their_block() -> None:
    sc = SplitConfig(mode="blocks", block_deg=0.01, heldout_bbox=[10.0, 45.0, 10.5, 45.5])
    assert assign_split(10.2, 45.2, None, sc) == "heldout"
    assert assign_split(10.2, 45.2, "train", sc.model_copy(update={"mode": "index"})) == "heldout"
    # half-open on the east and north edges, like the blocks
    assert assign_split(10.5, 45.2, None, sc) != "heldout"
    assert assign_split(9.99, 45.2, None, sc) != "heldout"


@pytest.mark.parametrize("bad", [[1.0, 2.0, 3.0], [10.0, 45.0, 9.0, 46.0], [0, 1, 1, 1]])
def test_a_malformed_bbox_is_refused_with_its_key(bad: list[float]) -> None:
    with pytest.raises(ConfigError, match="heldout_bbox"):
        load_config(None, ["finetune.split.heldout_bbox=" + json.dumps(bad)])


def test_heldout_chips_are_scored_apart_and_never_trained_on(tiny_data: Any, tmp_path: Any) -> None:
    manifest = json.loads((tiny_data.root / "manifest.json").read_text())
    w, s, e, n = manifest["labels"]["33TWL"]["bbox"]
    east = [w + (e - w) * 0.7, s - 1.0, e + 1.0, n + 1.0]  # the eastern 30 % of the tile
    over = tiny_data.overrides(
        tmp_path, name="heldout", fractions=[1.0], seeds=[0], max_steps=4, eval_every=2
    )
    plan = plan_sweep(load_config(None, [*over, "finetune.split.heldout_bbox=" + json.dumps(east)]))
    pool = plan.pool
    inside = {sm.id for sm in pool.samples if east[0] <= sm.row["lon"] < east[2]}  # lat spans all
    held = {pool.samples[i].id for i in pool.indices("heldout")}
    assert held and held == inside
    for split in ("train", "val", "test"):
        assert not held & {pool.samples[i].id for i in pool.indices(split)}, split
        assert pool.indices(split), split  # the rest of the tile still has all three
    assert pool.summary()["heldout"] == len(held)

    last = execute_trial(trial_configs(plan)[0], plan.context())
    for key in ("test_miou", "heldout_miou", "heldout_boundary_miou"):
        assert key in last and not math.isnan(last[key]), (key, last)
    assert 0.0 <= last["heldout_miou"] <= 1.0
