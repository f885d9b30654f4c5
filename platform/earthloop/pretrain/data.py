"""Driver-side data preparation: normalisation statistics and the kNN probe set.

Both are computed from a small sample of the index before any worker starts, and both travel with
the run (the statistics inside the exported backbone), so fine-tuning normalises exactly as
pretraining did.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from earthloop.models.normalise import pixel_statistics
from earthloop.store.labels import LabelSource
from earthloop.stream.reader import plan_groups, read_group

log = logging.getLogger("earthloop.pretrain")


def band_statistics(
    rows: Sequence[dict[str, Any]], bands: Sequence[str], sample: int = 64, seed: int = 0
) -> tuple[list[float], list[float]]:
    """Per-band mean/std of valid pixels over a random sample of ``sample`` chips of ``rows``."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(rows), size=min(sample, len(rows)), replace=False)
    picked = [rows[i] for i in sorted(idx)]
    return pixel_statistics(_valid_pixels(picked, bands), len(bands))


def _valid_pixels(
    rows: Sequence[dict[str, Any]], bands: Sequence[str]
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(image, valid)`` of each readable chip of ``rows``, read in grouped COG reads."""
    for group in plan_groups(rows, 1024):
        for out in read_group(group, bands):
            if not out["error"]:
                yield out["image"], out["valid"]


def build_probe(
    rows: Sequence[dict[str, Any]],
    bands: Sequence[str],
    labels: LabelSource,
    n: int,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """A labelled probe: one chip per location (first date), labelled by its majority class.

    Chips whose majority class covers less than half of the labelled pixels are skipped, so the
    probe measures what the embedding knows, not how mixed a chip is.
    """
    rng = np.random.default_rng(seed)
    by_loc: dict[str, dict[str, Any]] = {}
    for r in sorted(rows, key=lambda r: (r["location_id"], r["season"])):
        by_loc.setdefault(r["location_id"], r)
    candidates = list(by_loc.values())
    rng.shuffle(candidates)
    images: list[np.ndarray] = []
    valids: list[np.ndarray] = []
    ys: list[int] = []
    for group in plan_groups(candidates[: n * 2], 1024):
        for out in read_group(group, bands, labels=labels.rasters):
            if out["error"] or len(ys) >= n:
                continue
            lab = out["label"][out["valid"] & (out["label"] != labels.ignore_index)]
            if lab.size < 0.25 * out["label"].size:
                continue
            counts = np.bincount(lab, minlength=labels.num_classes)
            if counts.max() < 0.5 * lab.size:
                continue
            images.append(out["image"])
            valids.append(out["valid"])
            ys.append(int(counts.argmax()))
    if len(ys) < 10:
        raise ValueError(f"only {len(ys)} probe chips found; need at least 10")
    log.info("kNN probe: %d chips, classes %s", len(ys), np.bincount(ys).tolist())
    return {"images": np.stack(images), "valid": np.stack(valids), "labels": np.asarray(ys)}
