"""Spatially disjoint train/val/test splits by lon/lat blocks.

Why blocks: neighbouring pixels (and overlapping chips) of a satellite image are nearly copies of
each other. A random pixel or random chip split puts near-duplicates on both sides and inflates
every score, the more so the more the model memorises texture; pretraining gains measured that
way are not gains on new places. Whole blocks go to one side, and a val/test chip whose footprint
still touches a train chip (chips near a block edge) is dropped.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from earthloop.config import SplitConfig

__all__ = ["assign_split", "block_key", "block_unit", "overlapping_eval"]

SPLITS = ("train", "val", "test", "heldout")


def block_key(lon: float, lat: float, block_deg: float) -> str:
    """The block a point falls in; ``floor`` so a block is a half-open ``block_deg`` square."""
    return f"{math.floor(lon / block_deg)}|{math.floor(lat / block_deg)}"


def block_unit(key: str, salt: str) -> float:
    """A uniform number in [0, 1) per block, stable across runs and machines."""
    h = hashlib.sha1(f"{salt}|{key}".encode()).hexdigest()[:12]
    return int(h, 16) / float(16**12)


def assign_split(lon: float, lat: float, index_split: str | None, sc: SplitConfig) -> str:
    """``train``/``val``/``test`` for a location (see :class:`SplitConfig` for the two modes).

    ``heldout`` for a location inside ``sc.heldout_bbox``, whatever its block.
    """
    b = sc.heldout_bbox
    if b is not None and b[0] <= lon < b[2] and b[1] <= lat < b[3]:
        return "heldout"
    u = block_unit(block_key(lon, lat, sc.block_deg), sc.salt)
    if sc.mode == "index":
        if index_split not in {"train", "val"}:
            raise ValueError(
                f"chip index split {index_split!r} is neither 'train' nor 'val'; "
                "use finetune.split.mode=blocks"
            )
        if index_split == "train":
            return "train"
        return "test" if u < sc.index_test_share else "val"
    if u < sc.test_fraction:
        return "test"
    if u < sc.test_fraction + sc.val_fraction:
        return "val"
    return "train"


def overlapping_eval(rows: Sequence[dict[str, Any]], splits: Sequence[str]) -> list[bool]:
    """For each row: is it a val/test chip whose footprint overlaps a train chip's?

    Compared in each chip's own CRS (chips of different UTM zones cannot overlap in practice).
    """
    out = [False] * len(rows)
    by_crs: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_crs.setdefault(str(r["crs"]), []).append(i)
    for idx in by_crs.values():
        train = [i for i in idx if splits[i] == "train"]
        if not train:
            continue
        tb = np.array(
            [[rows[i]["minx"], rows[i]["miny"], rows[i]["maxx"], rows[i]["maxy"]] for i in train]
        )
        for i in idx:
            if splits[i] == "train":
                continue
            r = rows[i]
            hit = (
                (tb[:, 0] < r["maxx"])
                & (tb[:, 2] > r["minx"])
                & (tb[:, 1] < r["maxy"])
                & (tb[:, 3] > r["miny"])
            )
            out[i] = bool(hit.any())
    return out
