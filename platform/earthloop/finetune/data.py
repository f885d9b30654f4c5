"""The labelled pool (driver side) and the in-memory training set of one trial (worker side).

Why in memory: label-efficiency sweeps are about *small* label budgets. 10 % of a few thousand
chips is a few hundred 64x64 chips, megabytes; reading them once per trial with grouped COG reads
costs seconds, whereas streaming them through Ray Data every epoch would cost more than the
training. The whole pool is never read: the driver only reads the (tiny, one-band) label windows
to know each chip's classes, and each trial reads the pixels of its own subset plus val/test.
This does not scale to large label budgets (tens of thousands of chips per trial); use the
streaming ``earthloop.stream.chip_dataset`` path for that.

One chip per location: the index holds several dates per location, and counting each date as a
label would both inflate the budget and leak a location across dates. The least cloudy date is
kept.
"""

from __future__ import annotations

import logging
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from earthloop.config import FinetuneConfig, resolve_path
from earthloop.finetune.bigearthnet import (
    CLASSES_19,
    CLASSES_43,
    find_patches,
    multi_hot,
    read_patch,
)
from earthloop.finetune.bigearthnet import patch_labels as read_labels
from earthloop.finetune.bigearthnet_layout import patch_record
from earthloop.finetune.metrics import boundary_mask
from earthloop.finetune.splits import assign_split, overlapping_eval
from earthloop.finetune.subsets import check_class_coverage, nested_stratified_subset
from earthloop.models.normalise import normalise, pixel_statistics
from earthloop.observe.progress import Progress
from earthloop.raster.read import ChipReadError, read_window
from earthloop.store.delta import TableRef
from earthloop.store.labels import LabelSource, label_source_from_manifest
from earthloop.stream import load_index
from earthloop.stream.reader import plan_groups, read_group

log = logging.getLogger("earthloop.finetune")

__all__ = ["Pool", "Sample", "TrialArrays", "build_pool", "materialise", "train_statistics"]


@dataclass
class Sample:
    """One labelled location: where to read it, its split, stratum and class counts."""

    id: str
    split: str
    stratum: int
    counts: dict[int, int]  # class id -> labelled pixels (chips) or 1 per present label
    row: dict[str, Any]  # chip index row, or {"folder": ...} for BigEarthNet


@dataclass
class Pool:
    """Every sample the sweep may use, with what is needed to read and score it."""

    source: str
    task: str
    bands: list[str]
    class_ids: list[int]  # scored classes (the ignore class excluded)
    class_names: dict[int, str]
    num_outputs: int  # logits: max class id + 1 (per-pixel / single-label), K (multi-label)
    ignore_index: int | None
    samples: list[Sample]
    label_rasters: dict[str, str] = field(default_factory=dict)
    parcel_rasters: dict[str, str] = field(default_factory=dict)
    chips: TableRef | None = None
    labels_source: str = ""
    dropped_overlap: int = 0
    multilabel_min_share: float = 0.05
    # chip id -> pixels read once (preload): trials then never touch storage. Every trial
    # re-reads the same val/test chips otherwise, and a machine without the raster stack (a
    # GPU box fed a bundle) can still run trials.
    pixels: dict[str, dict[str, Any]] | None = None

    def preload(self, indices: Sequence[int] | None = None) -> int:
        """Read ``indices`` (default: every sample) once and keep their pixels; returns how
        many chips are held. Unreadable chips stay out, as in :func:`read_raw`."""
        if self.source != "chips":
            raise ValueError(f"preload reads chip pools only, not {self.source!r}")
        idx = range(len(self.samples)) if indices is None else indices
        rows = [self.samples[i].row for i in idx]
        got = _read_chips(self, rows)
        self.pixels = {**(self.pixels or {}), **got}
        return len(self.pixels)

    def indices(self, split: str) -> list[int]:
        return [i for i, s in enumerate(self.samples) if s.split == split]

    def train_subset(self, fraction: float, seed: int) -> list[int]:
        """Indices into ``samples`` of the nested stratified ``fraction`` of the train split."""
        train = self.indices("train")
        picked = nested_stratified_subset(
            [self.samples[i].id for i in train],
            [self.samples[i].stratum for i in train],
            fraction,
            seed,
        )
        return [train[j] for j in picked]

    def class_counts(self, indices: Sequence[int]) -> dict[int, int]:
        total: Counter[int] = Counter()
        for i in indices:
            total.update(self.samples[i].counts)
        return dict(total)

    def required_classes(self, min_count: int = 1) -> list[int]:
        """Classes the train split has examples of: a subset must not lose them."""
        counts = self.class_counts(self.indices("train"))
        return [c for c in self.class_ids if counts.get(c, 0) >= min_count]

    def check_subset(self, fraction: float, seed: int, min_count: int = 1) -> list[int]:
        """The subset, after checking every train class keeps ``min_count`` examples."""
        idx = self.train_subset(fraction, seed)
        counts = self.class_counts(idx)
        what = "labelled pixels" if self.task == "segmentation" else "labelled samples"
        required = self.required_classes(min_count)
        short = {c: (counts.get(c, 0) if counts.get(c, 0) >= min_count else 0) for c in required}
        check_class_coverage(short, required, fraction, self.class_names, what=what)
        return idx

    def summary(self) -> dict[str, int]:
        out = {s: len(self.indices(s)) for s in ("train", "val", "test")}
        if any(s.split == "heldout" for s in self.samples):
            out["heldout"] = len(self.indices("heldout"))
        return out


# --------------------------------------------------------------------------------------------
# Pool construction (driver)
# --------------------------------------------------------------------------------------------


def _one_per_location(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    best: dict[str, dict[str, Any]] = {}
    for r in sorted(
        rows, key=lambda r: (r["cloud_fraction"] + r["shadow_fraction"], r["season"], r["chip_id"])
    ):
        best.setdefault(r["location_id"], r)
    return sorted(best.values(), key=lambda r: r["chip_id"])


def _label_counts(row: dict[str, Any], href: str, n_classes: int, ignore: int | None) -> np.ndarray:
    size = int(row["chip_size"])
    lab = (
        read_window(
            href, row["crs"], (row["minx"], row["miny"], row["maxx"], row["maxy"]), (size, size)
        )
        .astype(np.int64)
        .ravel()
    )
    lab = lab[(lab >= 0) & (lab < n_classes)]
    counts = np.bincount(lab, minlength=n_classes)
    if ignore is not None and 0 <= ignore < n_classes:
        counts[ignore] = 0
    return counts


def _strata(samples_counts: list[dict[int, int]], task: str) -> list[int]:
    """Majority class; for multi-label the rarest present class (rare labels survive at 1 %)."""
    if task != "multilabel":
        return [max(c.items(), key=lambda kv: (kv[1], -kv[0]))[0] for c in samples_counts]
    freq: Counter[int] = Counter()
    for c in samples_counts:
        freq.update({k: 1 for k, v in c.items() if v > 0})
    return [
        min((k for k, v in c.items() if v > 0), key=lambda k: (freq[k], k)) for c in samples_counts
    ]


def build_pool(cfg: Any, fc: FinetuneConfig, bands: list[str]) -> Pool:
    """Read the index (chips) or the patch folder (BigEarthNet) into a :class:`Pool`."""
    if fc.source == "bigearthnet":
        return _bigearthnet_pool(fc, bands)
    return _chip_pool(cfg, fc, bands)


def _chip_rows(
    cfg: Any, fc: FinetuneConfig, bands: list[str]
) -> tuple[list[dict[str, Any]], TableRef]:
    """The index rows admitted to the pool (cloud cap, bands checked), pinned to a version."""
    rows, ref = load_index(
        cfg.table_uri("chips"), version=fc.chips_version, split=None, max_cloud=fc.max_cloud
    )
    if not rows:
        raise ValueError(f"no chip with cloud+shadow <= {fc.max_cloud} in {ref.uri}@v{ref.version}")
    have = set(rows[0]["bands"])
    missing = [b for b in bands if b not in have]
    if missing:
        raise ValueError(f"bands {missing} are not in the chip index (it has {sorted(have)})")
    return rows, ref


def _labelled(
    rows: list[dict[str, Any]], labels: LabelSource, class_ids: list[int], fc: FinetuneConfig
) -> tuple[list[dict[str, Any]], list[dict[int, int]]]:
    """The rows with a labelled pixel, and each one's class counts (multi-label: presence)."""
    counts_list: list[dict[int, int]] = []
    kept: list[dict[str, Any]] = []
    progress = Progress(
        "finetune label pool", len(rows), unit="chips", every_s=fc.log_every_s, logger=log
    )
    with progress:
        for r in rows:
            counts = _label_counts(
                r, labels.rasters[r["tile"]], labels.num_classes, labels.ignore_index
            )
            progress.update(1)
            total = int(counts.sum())
            if total == 0:
                continue
            if fc.task == "multilabel":
                share = counts / total
                present = {c: 1 for c in class_ids if share[c] >= fc.multilabel_min_share}
                if not present:
                    continue
                counts_list.append(present)
            else:
                counts_list.append({c: int(counts[c]) for c in class_ids if counts[c] > 0})
            kept.append(r)
    return kept, counts_list


def _parcel_rasters(manifest: str, fc: FinetuneConfig) -> dict[str, str]:
    """Parcel instance rasters (boundary mIoU on parcel edges), when the manifest has them."""
    if not fc.parcel_boundaries:
        return {}
    try:
        return label_source_from_manifest(manifest, "parcels").rasters
    except (KeyError, ValueError):
        return {}


def _chip_pool(cfg: Any, fc: FinetuneConfig, bands: list[str]) -> Pool:
    manifest = resolve_path(fc.labels or f"{cfg.data_dir}/manifest.json")
    labels = label_source_from_manifest(manifest, fc.kind)
    parcels = _parcel_rasters(manifest, fc)
    rows, ref = _chip_rows(cfg, fc, bands)
    rows = [r for r in _one_per_location(rows) if r["tile"] in labels.rasters]
    n_classes = labels.num_classes
    ignore = labels.ignore_index
    class_ids = sorted(c for c in labels.classes if c != ignore)
    kept, counts_list = _labelled(rows, labels, class_ids, fc)
    if not kept:
        raise ValueError(f"no chip of {ref.uri} has a labelled pixel in {manifest} ({fc.kind})")
    splits = [assign_split(r["lon"], r["lat"], r.get("split"), fc.split) for r in kept]
    drop = overlapping_eval(kept, splits) if fc.split.drop_overlapping else [False] * len(kept)
    strata = _strata(counts_list, fc.task)
    if fc.task == "classification":
        # a scene label is one example of its class, whatever minority pixels the chip holds
        counts_list = [{st: 1} for st in strata]
    samples = [
        Sample(r["chip_id"], s, st, c, r)
        for r, s, st, c, d in zip(kept, splits, strata, counts_list, drop, strict=True)
        if not d
    ]
    samples = _cap_eval(samples, fc.max_eval_chips)
    num_outputs = len(class_ids) if fc.task == "multilabel" else n_classes
    pool = Pool(
        source="chips",
        task=fc.task,
        bands=bands,
        class_ids=class_ids,
        class_names={c: labels.classes[c] for c in class_ids},
        num_outputs=num_outputs,
        ignore_index=ignore if fc.task == "segmentation" else None,
        samples=samples,
        label_rasters=labels.rasters,
        parcel_rasters=parcels if fc.task == "segmentation" else {},
        chips=ref,
        labels_source=f"{manifest}#{fc.kind}",
        dropped_overlap=sum(drop),
        multilabel_min_share=fc.multilabel_min_share,
    )
    _check_splits(pool)
    _log_pool(pool, fc)
    return pool


def _log_pool(pool: Pool, fc: FinetuneConfig) -> None:
    ref = pool.chips
    assert ref is not None
    log.info(
        "label pool: %s locations (%d val/test chips dropped for touching a train chip) from "
        "%s@v%d, %s labels %s",
        pool.summary(),
        pool.dropped_overlap,
        ref.uri,
        ref.version,
        fc.kind,
        {
            pool.class_names[c]: n
            for c, n in sorted(
                Counter(s.stratum for s in pool.samples if s.split == "train").items()
            )
        },
    )


def _cap_eval(samples: list[Sample], cap: int | None) -> list[Sample]:
    """At most ``cap`` val, test and held-out samples each, chosen by a stable hash of ids."""
    if cap is None:
        return samples
    out = [s for s in samples if s.split == "train"]
    for split in ("val", "test", "heldout"):
        members = sorted(
            (s for s in samples if s.split == split), key=lambda s: zlib.crc32(s.id.encode())
        )
        out.extend(members[:cap])
    return sorted(out, key=lambda s: s.id)


def _check_splits(pool: Pool) -> None:
    sizes = pool.summary()
    empty = [s for s, n in sizes.items() if n == 0]
    if empty:
        raise ValueError(
            f"split(s) {empty} are empty ({sizes} labelled locations): the area has too few "
            "blocks. Use finetune.split.mode=blocks with a smaller finetune.split.block_deg, or "
            "ingest more locations"
        )


def _bigearthnet_pool(fc: FinetuneConfig, bands: list[str]) -> Pool:
    assert fc.bigearthnet_dir is not None
    root = resolve_path(fc.bigearthnet_dir)
    names = CLASSES_19 if fc.bigearthnet_classes == 19 else CLASSES_43
    class_ids = list(range(len(names)))
    rows: list[dict[str, Any]] = []
    counts_list: list[dict[int, int]] = []
    for folder in find_patches(root):
        labels, (lon, lat) = read_labels(folder)
        vec = multi_hot(labels, fc.bigearthnet_classes, f" in patch {folder.name}")
        if not vec.any():
            continue
        official = patch_record(folder).split  # v2: the release's own split; v1: None
        rows.append(
            {
                "chip_id": folder.name,
                "folder": str(folder),
                "lon": lon,
                "lat": lat,
                "official": official,
            }
        )
        counts_list.append({int(i): 1 for i in np.flatnonzero(vec)})
    if not rows:
        raise ValueError(f"no usable BigEarthNet patch under {root}")
    # The official split where the release has one (v2): results stay comparable with every
    # paper that reports on it. Spatial blocks otherwise (v1). A held-out region wins over both.
    blocks = fc.split.model_copy(update={"mode": "blocks"})
    splits = []
    for r in rows:
        s = assign_split(r["lon"], r["lat"], None, blocks)
        splits.append(s if s == "heldout" or r["official"] is None else str(r["official"]))
    if any(r["official"] is not None for r in rows):
        log.info("BigEarthNet: the release's official train/val/test split is used")
    strata = _strata(counts_list, "multilabel")
    samples = [
        Sample(r["chip_id"], s, st, c, r)
        for r, s, st, c in zip(rows, splits, strata, counts_list, strict=True)
    ]
    pool = Pool(
        source="bigearthnet",
        task="multilabel",
        bands=bands,
        class_ids=class_ids,
        class_names=dict(enumerate(names)),
        num_outputs=len(names),
        ignore_index=None,
        samples=samples,
        labels_source=f"{root}#bigearthnet{fc.bigearthnet_classes}",
    )
    _check_splits(pool)
    return pool


# --------------------------------------------------------------------------------------------
# Materialising a trial's arrays (worker)
# --------------------------------------------------------------------------------------------


@dataclass
class TrialArrays:
    """Images (normalised), validity, targets and, for segmentation, boundary masks."""

    images: np.ndarray  # (N, C, H, W) float32, standardised, invalid pixels 0
    targets: np.ndarray  # (N, H, W) int64 | (N,) int64 | (N, K) float32
    boundary: np.ndarray | None  # (N, H, W) bool, segmentation only
    ids: list[str]

    def __len__(self) -> int:
        return len(self.ids)


def read_raw(
    pool: Pool, indices: Sequence[int], *, boundary_px: int = 2
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, list[str]]:
    """Pixels of ``indices``: (images, valid, label maps or None, boundary masks or None, ids).

    Unreadable chips are skipped with a warning (their count is in the log), never fatal.
    """
    if pool.source == "bigearthnet":
        imgs = [read_patch(pool.samples[i].row["folder"], pool.bands) for i in indices]
        images = np.stack(imgs) if imgs else np.zeros((0, len(pool.bands), 120, 120), np.float32)
        valid = np.ones((len(imgs), images.shape[-2], images.shape[-1]), dtype=bool)
        return images, valid, None, None, [pool.samples[i].id for i in indices]
    rows = [pool.samples[i].row for i in indices]
    cached = pool.pixels or {}
    missing = [r for r in rows if r["chip_id"] not in cached]
    got = {**cached, **_read_chips(pool, missing)} if missing else cached
    ids = [r["chip_id"] for r in rows if r["chip_id"] in got]
    if not ids:
        raise ValueError(f"none of {len(rows)} chips could be read")
    images = np.stack([got[i]["image"] for i in ids])
    valid = np.stack([got[i]["valid"] for i in ids])
    labels = np.stack([got[i]["label"] for i in ids]).astype(np.int64)
    boundary = None
    if pool.task == "segmentation":
        ign = pool.ignore_index
        if ign is not None:
            labels[~valid] = ign  # clouds are unlabelled: neither trained on nor scored
        parcels = [got[i].get("parcels") for i in ids]
        inst = (
            np.stack(parcels)  # type: ignore[arg-type]
            if pool.parcel_rasters and all(p is not None for p in parcels)
            else None
        )
        boundary = boundary_mask(labels, boundary_px, ignore_index=ign, instances=inst)
    return images, valid, labels, boundary, ids


def _read_chips(pool: Pool, rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """chip id -> image, valid, label (and parcels when the pool has parcel rasters) of the
    readable ``rows``; unreadable ones are counted in a warning and left out."""
    got: dict[str, dict[str, Any]] = {}
    failed = 0
    for group in plan_groups(list(rows), 1024):
        for out in read_group(group, pool.bands, labels=pool.label_rasters):
            if out["error"]:
                failed += 1
                continue
            got[out["chip_id"]] = {k: out[k] for k in ("image", "valid", "label")}
    if failed:
        log.warning("%d of %d chips could not be read and are left out", failed, len(rows))
    if pool.parcel_rasters:
        for r in rows:
            if r["chip_id"] in got:
                got[r["chip_id"]]["parcels"] = _parcels(pool, r)
    return got


def _parcels(pool: Pool, r: dict[str, Any]) -> np.ndarray | None:
    """The parcel instance ids under one chip, or None when its tile has no parcel raster."""
    href = pool.parcel_rasters.get(r["tile"])
    if href is None:
        return None
    size = int(r["chip_size"])
    try:
        return read_window(
            href, r["crs"], (r["minx"], r["miny"], r["maxx"], r["maxy"]), (size, size)
        ).astype(np.int64)
    except ChipReadError:
        return None


def materialise(
    pool: Pool,
    indices: Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
    *,
    boundary_px: int = 2,
) -> TrialArrays:
    """Read, normalise and attach the task's targets to ``indices`` of the pool."""
    images, valid, labels, boundary, ids = read_raw(pool, indices, boundary_px=boundary_px)
    x = normalise(torch.from_numpy(images), mean, std, torch.from_numpy(valid)).numpy()
    by_id = {pool.samples[i].id: pool.samples[i] for i in indices}
    targets: np.ndarray
    if pool.task == "segmentation":
        assert labels is not None
        targets = labels
    elif pool.task == "classification":
        targets = np.asarray([by_id[i].stratum for i in ids], dtype=np.int64)
    else:
        pos = {c: k for k, c in enumerate(pool.class_ids)}
        targets = np.zeros((len(ids), len(pool.class_ids)), dtype=np.float32)
        for n, i in enumerate(ids):
            for c, v in by_id[i].counts.items():
                if v > 0:
                    targets[n, pos[c]] = 1.0
    return TrialArrays(x, targets, boundary, ids)


def train_statistics(
    pool: Pool, sample: int = 64, seed: int = 0
) -> tuple[list[float], list[float]]:
    """Band mean/std over valid pixels of up to ``sample`` train-split samples.

    Used for random and external initialisations (a pretrained earthloop backbone brings its own).
    Unlabelled pixels count too: statistics need no labels.
    """
    train = pool.indices("train")
    rng = np.random.default_rng(seed)
    pick = sorted(rng.choice(train, size=min(sample, len(train)), replace=False).tolist())
    images, valid, _, _, _ = read_raw(pool, pick)
    return pixel_statistics(zip(images, valid, strict=True), len(pool.bands))
