"""Pull annotations from Label Studio into the Delta ``labels`` table (MERGE, idempotent).

Each annotation becomes one row keyed by (chip id, annotation id) — never by task id, which
SQLite reuses. Segmentation masks are decoded onto the chip grid and written as a one-band
GeoTIFF (the chip's CRS and bounds), so a pulled label is read by bounds exactly like a label
raster. The mask file name carries a hash of its pixels: an updated annotation writes a new
file and the row's ``mask_href`` moves to it, while a table version pinned by a training run
still points at the pixels it trained on. Re-pulling an unchanged annotation yields the same
``row_hash`` and MERGE leaves the row alone; a malformed annotation is counted by reason and
never written. Deleted annotations are not removed from the table (see docs/labelstudio.md).
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import rasterio
from rasterio.io import MemoryFile
from rasterio.transform import from_bounds

from earthloop.labelstudio.client import LabelStudio
from earthloop.labelstudio.configs import SEGMENTATION
from earthloop.labelstudio.project import ProjectSpec, open_project
from earthloop.labelstudio.results import (
    InvalidAnnotation,
    decode_classification,
    decode_segmentation,
)
from earthloop.store.delta import delete_keys, merge_rows, read_table, row_hash, table_exists
from earthloop.store.fs import pyarrow_filesystem, write_bytes
from earthloop.store.tables import LABELS

log = logging.getLogger("earthloop.labelstudio")

Json = dict[str, Any]
_GRID_COLUMNS = ["chip_id", "crs", "minx", "miny", "maxx", "maxy", "chip_size"]


@dataclass
class PullReport:
    """What one pull did; ``rejected`` counts malformed annotations by reason."""

    tasks: int = 0
    annotations: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    cancelled: int = 0  # skipped tasks: the annotator pressed "skip", not a label
    removed: int = 0  # rows of annotations deleted (or turned into skips) in Label Studio
    rejected: Counter[str] = field(default_factory=Counter)
    rejections: list[tuple[str, str, str, str]] = field(default_factory=list)
    version: int = -1  # the labels table version after the MERGE

    def summary(self) -> str:
        bad = ", ".join(f"{k}={v}" for k, v in sorted(self.rejected.items())) or "none"
        return (
            f"{self.annotations} annotation(s) on {self.tasks} task(s): {self.inserted} new, "
            f"{self.updated} updated, {self.unchanged} unchanged, {self.cancelled} skipped, "
            f"{self.removed} removed (deleted in Label Studio); "
            f"rejected: {bad}; labels table v{self.version}"
        )


@dataclass(frozen=True)
class _Decoded:
    chip_id: str
    annotation: Json
    task: Json
    mask: np.ndarray | None
    classes: list[str]


def chip_grids(chips_uri: str, chip_ids: Sequence[str]) -> dict[str, Json]:
    """Chip id → its grid (CRS, bounds, size) from the chips table, for the given ids only."""
    table = read_table(chips_uri, columns=_GRID_COLUMNS)
    table = table.filter(pc.is_in(table["chip_id"], value_set=pa.array(list(set(chip_ids)))))
    return {r["chip_id"]: r for r in table.to_pylist()}


def _decode(spec: ProjectSpec, task: Json, ann: Json, grid: Json | None) -> _Decoded:
    chip_id = str((task.get("data") or {}).get("chip_id", ""))
    if grid is None:
        raise InvalidAnnotation("unknown_chip", f"task {task.get('id')} names no known chip")
    size = int(grid["chip_size"])
    result = ann.get("result") or []
    if spec.kind == SEGMENTATION:
        mask = decode_segmentation(result, spec.classes, size, size)
        if not spec.allow_empty and not mask.any():
            raise InvalidAnnotation("empty", "no pixel is labelled")
        return _Decoded(chip_id, ann, task, mask, [])
    classes = decode_classification(result, spec.names)
    if not spec.allow_empty and not classes:
        raise InvalidAnnotation("empty", "no scene label chosen")
    return _Decoded(chip_id, ann, task, None, classes)


def write_mask(
    masks_root: str, chip_id: str, annotation_id: str, mask: np.ndarray, grid: Json
) -> str:
    """Write ``mask`` as a GeoTIFF on the chip grid; returns its href (content-addressed).

    An existing file of the same name holds the same pixels, so it is not written again.
    """
    digest = hashlib.sha1(mask.tobytes()).hexdigest()[:16]
    href = f"{masks_root.rstrip('/')}/{chip_id}/{annotation_id}-{digest}.tif"
    fs, path = pyarrow_filesystem(href)
    if fs.get_file_info(path).type.name != "NotFound":
        return href
    height, width = mask.shape
    profile = {
        "driver": "GTiff",
        "dtype": "uint8",
        "count": 1,
        "height": height,
        "width": width,
        "crs": rasterio.crs.CRS.from_user_input(grid["crs"]),
        "transform": from_bounds(
            grid["minx"], grid["miny"], grid["maxx"], grid["maxy"], width, height
        ),
        "nodata": 0,
        "compress": "deflate",
    }
    with MemoryFile() as mem:
        with mem.open(**profile) as dst:
            dst.write(mask, 1)
        blob = mem.read()
    # in one step (temporary file + rename; one PUT on S3): a pull killed mid-write must not
    # leave a truncated file that the existence check above would trust next time
    write_bytes(href, blob)
    return href


def class_histogram(spec: ProjectSpec, dec: _Decoded) -> list[float]:
    """Share of each class id (index) among the labelled pixels, or among the chosen labels."""
    size = max(spec.classes) + 1 if spec.classes else 1
    if dec.mask is not None:
        counts = np.bincount(dec.mask.ravel(), minlength=size)[:size].astype(np.float64)
        counts[0] = 0.0  # unlabelled pixels are not a class
    else:
        ids = {name: cid for cid, name in spec.classes.items()}
        counts = np.zeros(size, dtype=np.float64)
        for name in dec.classes:
            counts[ids[name]] += 1.0
    total = counts.sum()
    return (counts / total).tolist() if total > 0 else counts.tolist()


def _row(spec: ProjectSpec, dec: _Decoded, mask_href: str | None, users: Mapping[int, str]) -> Json:
    ann = dec.annotation
    who = ann.get("completed_by")
    row: Json = {
        "chip_id": dec.chip_id,
        "annotation_id": str(ann["id"]),
        "project": spec.title,
        "kind": spec.kind,
        "mask_href": mask_href,
        "classes": dec.classes or None,
        "class_histogram": class_histogram(spec, dec),
        "annotator": users.get(int(who), f"user:{who}") if who is not None else None,
        "lead_time_s": float(ann["lead_time"]) if ann.get("lead_time") is not None else None,
        "al_round": int((dec.task.get("data") or {}).get("al_round", 0)),
        "updated_at": datetime.fromisoformat(str(ann["updated_at"]).replace("Z", "+00:00")),
    }
    row["row_hash"] = row_hash(row)
    return row


def _remove_deleted(labels_uri: str, project: str, live: set[str]) -> tuple[int, int]:
    """Delete this project's label rows whose annotation Label Studio no longer holds.

    The export is the whole project, so an annotation absent from it was deleted (or turned
    into a skip) by a person; a label kept after that would train on a decision they took back.
    A rejected (malformed) annotation is still live: its last valid version stays. Mask files
    are left where they are (they are addressed by annotation id, never reused).
    """
    if not table_exists(labels_uri):
        return 0, -1
    have = read_table(labels_uri, columns=["chip_id", "annotation_id", "project"])
    stale = [
        (c, a)
        for c, a, p in zip(
            have["chip_id"].to_pylist(),
            have["annotation_id"].to_pylist(),
            have["project"].to_pylist(),
            strict=True,
        )
        if p == project and a not in live
    ]
    if not stale:
        return 0, -1
    keys = pa.table(
        {"chip_id": [c for c, _ in stale], "annotation_id": [a for _, a in stale]},
        schema=pa.schema([("chip_id", pa.string()), ("annotation_id", pa.string())]),
    )
    stats = delete_keys(labels_uri, keys)
    log.info("removed %d label row(s) of annotations deleted in %r", stats["deleted"], project)
    return stats["deleted"], stats["version"]


def pull_labels(
    client: LabelStudio, spec: ProjectSpec, *, chips_uri: str, labels_uri: str, masks_root: str
) -> PullReport:
    """Export the project's annotated tasks and MERGE valid annotations into ``labels_uri``.

    Args:
        client: a connected Label Studio client.
        spec: the project (found by title; created empty if absent).
        chips_uri: the chips table: chip grids (CRS, bounds, size) for decoding and validation.
        labels_uri: the Delta ``labels`` table (``earthloop.store.tables.LABELS``).
        masks_root: folder (local or ``s3://``) for the mask rasters.

    Returns:
        Counts; ``version`` is the labels table version holding this pull.

    Raises:
        LabelStudioError: the export failed. StoreWriteError: the MERGE kept conflicting.
    """
    pid = open_project(client, spec)
    tasks = client.export_annotated(pid)
    report = PullReport(tasks=len(tasks))
    grids = chip_grids(chips_uri, [str(t["data"].get("chip_id", "")) for t in tasks])
    users = client.user_emails()
    rows: list[Json] = []
    live: set[str] = set()  # annotation ids the project still holds (a rejected one included)
    for task in tasks:
        chip_id = str(task["data"].get("chip_id", ""))
        for ann in task.get("annotations") or []:
            report.annotations += 1
            if ann.get("was_cancelled"):
                report.cancelled += 1
                continue
            live.add(str(ann.get("id")))
            try:
                dec = _decode(spec, task, ann, grids.get(chip_id))
            except InvalidAnnotation as exc:
                report.rejected[exc.reason] += 1
                report.rejections.append((chip_id, str(ann.get("id")), exc.reason, str(exc)))
                continue
            href = None
            if dec.mask is not None:
                href = write_mask(masks_root, chip_id, str(ann["id"]), dec.mask, grids[chip_id])
            rows.append(_row(spec, dec, href, users))
    stats = merge_rows(labels_uri, pa.Table.from_pylist(rows, schema=LABELS.schema), LABELS.keys)
    report.inserted, report.updated, report.version = (
        stats["inserted"],
        stats["updated"],
        stats["version"],
    )
    report.unchanged = len(rows) - report.inserted - report.updated
    report.removed, version = _remove_deleted(labels_uri, spec.title, live)
    report.version = max(report.version, version)
    for chip_id, ann_id, reason, message in report.rejections:
        log.warning("annotation %s of chip %s rejected (%s): %s", ann_id, chip_id, reason, message)
    log.info("pull from project %d: %s", pid, report.summary())
    return report
