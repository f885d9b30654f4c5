"""True-colour PNG previews of chips, cut from the chip's COG windows, for the annotation UI.

Why a PNG per chip and not the COG: the browser cannot draw a 13-band float raster, and the
annotator must see the chip on exactly the grid the label will be decoded to (one preview pixel
is one chip pixel, so a brush mask maps back without resampling). Reads go through the stream
reader (one decode per tile region for neighbouring chips).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image  # Pillow: installed with matplotlib; writes RGB (imsave adds alpha)

from earthloop.stream.reader import plan_groups, read_group

log = logging.getLogger("earthloop.labelstudio")

Row = dict[str, Any]
# Red, green, blue: Sentinel-2 band ids first, then the common names some catalogs use.
TRUE_COLOUR: tuple[tuple[str, str, str], ...] = (("B04", "B03", "B02"), ("red", "green", "blue"))


def true_colour_bands(row: Row) -> tuple[str, str, str]:
    """The chip's red, green and blue band names.

    Raises:
        ValueError: the chip has no red/green/blue triple under a known naming.
    """
    have = set(row["bands"])
    for triple in TRUE_COLOUR:
        if have.issuperset(triple):
            return triple
    raise ValueError(f"chip {row['chip_id']} has no true-colour bands (has {sorted(have)})")


def to_rgb8(image: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """(3, H, W) reflectance → (H, W, 3) uint8 with a 2-98 % stretch per chip.

    A per-chip stretch, because a fixed gain leaves water black and bright soil white; the
    annotator needs contrast inside the chip, not comparability between chips.
    """
    rgb = np.moveaxis(image.astype(np.float32), 0, -1)
    pick = valid if valid is not None and valid.any() else np.ones(rgb.shape[:2], dtype=bool)
    lo, hi = np.percentile(rgb[pick], [2.0, 98.0])
    scaled = (rgb - lo) / max(float(hi - lo), 1e-6)
    out: np.ndarray = (np.clip(scaled, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return out


def write_previews(rows: Sequence[Row], out_dir: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """Write ``<out_dir>/<chip_id>.png`` for each chip row of the chips table.

    Args:
        rows: chip rows (``earthloop.store.tables.CHIPS`` columns, as dicts).
        out_dir: a folder under Label Studio's local-files document root.

    Returns:
        ``(written, failed)``: chip id → PNG path, and chip id → reason for chips whose windows
        could not be read (a caller skips them instead of pushing a task with no image).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    failed: dict[str, str] = {}
    for group in plan_groups(list(rows)):
        try:
            bands = true_colour_bands(group[0])
        except ValueError as exc:
            failed.update({r["chip_id"]: str(exc) for r in group})
            continue
        for out in read_group(group, bands, mask_clouds=False):
            if out["error"]:
                failed[out["chip_id"]] = out["error"]
                continue
            path = out_dir / f"{out['chip_id']}.png"
            Image.fromarray(to_rgb8(out["image"], out["valid"])).save(path, "PNG")
            written[out["chip_id"]] = path
    if failed:
        log.warning("%d chip preview(s) could not be read: %s", len(failed), _first(failed))
    return written, failed


def _first(failed: Mapping[str, str]) -> str:
    chip, reason = next(iter(failed.items()))
    return f"{chip}: {reason}"
