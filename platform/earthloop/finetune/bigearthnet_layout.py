"""Where a BigEarthNet download keeps its patches, labels, official splits and exclusions.

Two layouts are in users' hands, and a folder is recognised by what it contains:

* **v2 (reBEN, 2024)**, as extracted from the Zenodo release: ``metadata.parquet`` (one row per
  patch: ``patch_id``, ``labels`` as a list of 19-class names, the official ``split`` —
  ``train``/``validation``/``test`` — plus ``country``, ``s1_name``, ...), the band files under
  ``BigEarthNet-S2/<tile>/<patch_id>/<patch_id>_<band>.tif`` (``<tile>`` is the patch id without
  its two trailing grid numbers), and ``metadata_for_patches_with_snow_cloud_or_shadow.parquet``
  listing the patches the authors advise against (seasonal snow, cloud or cloud shadow). The
  archive still holds those patches' pixels, so they must be left out by name.
* **v1 (2019)**: one folder per patch, ``<patch>/<patch>_<band>.tif`` plus
  ``<patch>_labels_metadata.json`` with CORINE level-3 (43-class) names; no official split in
  the folder. The advised exclusions came as ``patches_with_seasonal_snow.csv`` and
  ``patches_with_cloud_and_shadow.csv`` (one patch name per line); they are honoured when they
  sit in the root folder.

This module only finds things and reads names; pixels and class vectors are
:mod:`earthloop.finetune.bigearthnet`'s job.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import pyarrow.parquet as pq

log = logging.getLogger("earthloop.finetune")

__all__ = [
    "V1_EXCLUSION_CSVS",
    "V2_EXCLUDED",
    "V2_METADATA",
    "V2_S2_DIR",
    "Catalogue",
    "Layout",
    "PatchRecord",
    "detect_layout",
    "patch_record",
    "record_labels",
    "scan",
]

V2_METADATA = "metadata.parquet"
V2_EXCLUDED = "metadata_for_patches_with_snow_cloud_or_shadow.parquet"
V2_S2_DIR = "BigEarthNet-S2"
V1_EXCLUSION_CSVS = ("patches_with_seasonal_snow.csv", "patches_with_cloud_and_shadow.csv")
_V1_LABELS = "_labels_metadata.json"
_V2_REQUIRED = ("patch_id", "labels", "split")
_V2_FLAGS = ("contains_seasonal_snow", "contains_cloud_or_shadow")
# official split names -> the project's (splits.py uses train/val/test)
_V2_SPLITS = {"train": "train", "validation": "val", "test": "test"}


@dataclass(frozen=True)
class Layout:
    """A recognised BigEarthNet download: its version and the files that define it."""

    version: Literal[1, 2]
    root: Path  # the folder holding metadata.parquet (v2) or the patch folders (v1)
    images: Path  # BigEarthNet-S2 (v2) or the root itself (v1)
    exclusions: tuple[Path, ...]  # exclusion lists found beside the data


@dataclass(frozen=True)
class PatchRecord:
    """One patch: where its band files are, its label names and its official split.

    ``labels`` is None for v1 until the patch's JSON is read (listing a v1 archive must not open
    590 000 files); ``split`` is None for v1, which has no official split in the folder.
    """

    id: str
    folder: Path
    labels: tuple[str, ...] | None
    split: str | None


@dataclass
class Catalogue:
    """The usable patches of a download, after the advised exclusions."""

    layout: Layout
    patches: list[PatchRecord]
    excluded: int  # patches of this download left out because an exclusion list names them
    excluded_by_reason: dict[str, int]


def detect_layout(root: str | Path) -> Layout:
    """Recognise a v2 or v1 download at ``root`` (or a v2 ``BigEarthNet-S2`` folder itself).

    Raises:
        FileNotFoundError: ``root`` is missing, or holds neither layout; the message names what
            each layout needs and what of it was found.
    """
    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"BigEarthNet folder not found: {base}")
    if base.name == V2_S2_DIR and (base.parent / V2_METADATA).is_file():
        base = base.parent
    if (base / V2_METADATA).is_file():
        images = base / V2_S2_DIR
        if not images.is_dir():
            raise FileNotFoundError(
                f"BigEarthNet v2: {base / V2_METADATA} is there but the image folder {images} "
                "is not (extract BigEarthNet-S2.tar.zst beside metadata.parquet)"
            )
        found = tuple(p for p in [base / V2_EXCLUDED] if p.is_file())
        if not found:
            log.warning(
                "BigEarthNet v2 at %s has no %s: only patches flagged in %s itself are excluded",
                base,
                V2_EXCLUDED,
                V2_METADATA,
            )
        return Layout(2, base, images, found)
    if next(iter(base.rglob(f"*{_V1_LABELS}")), None) is not None:
        csvs = tuple(base / n for n in V1_EXCLUSION_CSVS if (base / n).is_file())
        return Layout(1, base, base, csvs)
    if (base / V2_S2_DIR).is_dir():
        raise FileNotFoundError(
            f"BigEarthNet v2: {base / V2_S2_DIR} is there but {base / V2_METADATA} is not "
            f"(download metadata.parquet and {V2_EXCLUDED} from the reBEN release into {base})"
        )
    raise FileNotFoundError(
        f"no BigEarthNet layout under {base}: expected v2 ({V2_METADATA} beside "
        f"{V2_S2_DIR}/<tile>/<patch>/<patch>_B02.tif) or v1 (<patch>/<patch>{_V1_LABELS})"
    )


def scan(root: str | Path) -> Catalogue:
    """The patches of the download at ``root``, the advised exclusions left out and logged."""
    layout = detect_layout(root)
    excluded_ids = _exclusion_ids(layout)
    if layout.version == 2:
        meta = _v2_metadata(str(layout.root / V2_METADATA), _mtime(layout.root / V2_METADATA))
        for pid, reason in meta.flagged.items():
            excluded_ids.setdefault(pid, reason)
        dirs = _patch_dirs(layout.images)
        candidates = _v2_records(layout, meta, excluded_ids, dirs)
    else:
        folders = layout.root.rglob(f"*{_V1_LABELS}")
        dirs = {f.parent.name: str(f.parent) for f in folders}
        candidates = [
            PatchRecord(name, Path(path), None, None)
            for name, path in dirs.items()
            if name not in excluded_ids
        ]
    # count what this download loses, not every name on the release-wide lists
    dropped = {pid: why for pid, why in excluded_ids.items() if pid in dirs}
    reasons = Counter(dropped.values())
    if excluded_ids:
        log.info(
            "BigEarthNet v%d at %s: %d patches excluded as advised (%s); %d kept",
            layout.version,
            layout.root,
            len(dropped),
            ", ".join(f"{n} {r}" for r, n in sorted(reasons.items())) or "none of the listed",
            len(candidates),
        )
    if not candidates:
        raise ValueError(f"no BigEarthNet patch left under {layout.root} after the exclusions")
    patches = sorted(candidates, key=lambda r: r.id)
    return Catalogue(layout, patches, len(dropped), dict(reasons))


def patch_record(folder: str | Path) -> PatchRecord:
    """The record of one patch folder of either layout (v2: looked up in its metadata.parquet).

    Raises:
        FileNotFoundError: the folder has no v1 labels file and no v2 metadata.parquet above it.
        KeyError: a v2 folder whose patch is not in metadata.parquet (an excluded patch).
    """
    f = Path(folder)
    labels_json = f / f"{f.name}{_V1_LABELS}"
    if labels_json.is_file():
        return PatchRecord(f.name, f, _v1_labels(labels_json), None)
    for root in (f.parent.parent.parent, f.parent.parent):  # <tile>/<patch> or flat <patch>
        if (root / V2_METADATA).is_file() and f.is_relative_to(root / V2_S2_DIR):
            meta = _v2_metadata(str(root / V2_METADATA), _mtime(root / V2_METADATA))
            if f.name not in meta.by_id:
                raise KeyError(
                    f"BigEarthNet v2 patch {f.name} is not in {root / V2_METADATA} "
                    "(the release leaves snow/cloud/shadow patches out of it)"
                )
            labels, split = meta.by_id[f.name]
            return PatchRecord(f.name, f, labels, split)
    raise FileNotFoundError(
        f"{f} is not a BigEarthNet patch: no {labels_json.name} (v1) and no {V2_METADATA} "
        f"above it (v2: <root>/{V2_METADATA} + <root>/{V2_S2_DIR}/<tile>/<patch>)"
    )


def record_labels(record: PatchRecord) -> tuple[str, ...]:
    """The record's label names, reading a v1 patch's JSON when the scan did not."""
    if record.labels is not None:
        return record.labels
    return _v1_labels(record.folder / f"{record.id}{_V1_LABELS}")


def _v1_labels(path: Path) -> tuple[str, ...]:
    meta = json.loads(path.read_text())
    labels = meta.get("labels", [])
    if not isinstance(labels, list):
        raise ValueError(f"{path}: 'labels' is not a list of names")
    return tuple(str(x) for x in labels)


def _mtime(path: Path) -> int:
    return path.stat().st_mtime_ns


@dataclass(frozen=True)
class _V2Metadata:
    by_id: dict[str, tuple[tuple[str, ...], str]]  # patch id -> (labels, project split)
    flagged: dict[str, str]  # rows metadata.parquet itself marks as snow / cloud


@lru_cache(maxsize=4)
def _v2_metadata(path: str, _mtime_ns: int) -> _V2Metadata:
    """Read metadata.parquet once per file version (the modification time is in the key)."""
    schema = pq.read_schema(path)
    missing = [c for c in _V2_REQUIRED if c not in schema.names]
    if missing:
        raise ValueError(
            f"{path} lacks column(s) {missing} (BigEarthNet v2 metadata has {list(_V2_REQUIRED)}"
            f"; found {schema.names})"
        )
    flags = [c for c in _V2_FLAGS if c in schema.names]
    table = pq.read_table(path, columns=[*_V2_REQUIRED, *flags]).to_pydict()
    bad = sorted({str(s) for s in table["split"]} - set(_V2_SPLITS))
    if bad:
        raise ValueError(f"{path}: unknown split value(s) {bad}; expected {list(_V2_SPLITS)}")
    by_id: dict[str, tuple[tuple[str, ...], str]] = {}
    flagged: dict[str, str] = {}
    labels, splits = table["labels"], table["split"]
    for i, pid in enumerate(table["patch_id"]):
        by_id[str(pid)] = (tuple(labels[i] or ()), _V2_SPLITS[str(splits[i])])
        if any(table[c][i] for c in flags):
            flagged[str(pid)] = _flag_reason({c: bool(table[c][i]) for c in flags})
    return _V2Metadata(by_id, flagged)


def _flag_reason(flags: dict[str, bool]) -> str:
    snow = flags.get("contains_seasonal_snow", False)
    cloud = flags.get("contains_cloud_or_shadow", False)
    if snow and cloud:
        return "seasonal snow and cloud/shadow"
    return "seasonal snow" if snow else "cloud/shadow" if cloud else ""


def _exclusion_ids(layout: Layout) -> dict[str, str]:
    """Patch id -> why it is excluded, from every exclusion list found beside the data."""
    out: dict[str, str] = {}
    for path in layout.exclusions:
        if path.suffix == ".parquet":
            schema = pq.read_schema(path)
            if "patch_id" not in schema.names:
                raise ValueError(f"exclusion list {path} has no patch_id column ({schema.names})")
            flags = [c for c in _V2_FLAGS if c in schema.names]
            table = pq.read_table(path, columns=["patch_id", *flags]).to_pydict()
            for i, pid in enumerate(table["patch_id"]):
                reason = _flag_reason({c: bool(table[c][i]) for c in flags})
                out[str(pid)] = reason or "listed in " + path.name
        else:
            reason = "seasonal snow" if "snow" in path.name else "cloud/shadow"
            for line in path.read_text().splitlines():
                pid = line.split(",")[0].strip()
                if pid and pid != "patch_id":
                    out[pid] = reason
    return out


def _patch_dirs(images: Path) -> dict[str, str]:
    """Patch id -> folder, from one listing per tile folder (not one stat per patch).

    A folder with sub-folders is a tile (``<tile>/<patch_id>/``); one without is a patch kept
    directly under ``BigEarthNet-S2`` (some mirrors drop the tile level).
    """
    out: dict[str, str] = {}
    with os.scandir(images) as top:
        for entry in top:
            if not entry.is_dir():
                continue
            with os.scandir(entry.path) as inner:
                subdirs = [(e.name, e.path) for e in inner if e.is_dir()]
            if subdirs:
                out.update(subdirs)
            else:
                out[entry.name] = entry.path
    return out


def _v2_records(
    layout: Layout, meta: _V2Metadata, excluded_ids: dict[str, str], dirs: dict[str, str]
) -> list[PatchRecord]:
    """The kept patches of ``metadata.parquet``, each with its folder (every one must exist)."""
    kept = [pid for pid in meta.by_id if pid not in excluded_ids]
    absent = [pid for pid in kept if pid not in dirs]
    if absent:
        raise FileNotFoundError(
            f"{len(absent)} of {len(kept)} patches in {layout.root / V2_METADATA} have no folder "
            f"under {layout.images} (first: {absent[0]}); is the image archive fully extracted?"
        )
    return [PatchRecord(pid, Path(dirs[pid]), *meta.by_id[pid]) for pid in kept]
