"""Digital numbers → surface reflectance.

Since processing baseline 04.00 (January 2022) ESA adds a +1000 DN offset to L2A bands so that
dark pixels are not clipped at zero. Mixing products from both sides of that change without
removing the offset shifts every reflectance by 0.1 — a silent, seasonal bias for SeCo-style
multi-date training. We therefore take scale/offset from the item's ``raster:bands`` when it
states them and otherwise infer them from ``s2:processing_baseline``.

One exception, learnt from real catalogues: Earth Search v1 subtracts the offset from its COGs for
many scenes (``earthsearch:boa_offset_applied: true``) while ``raster:bands`` still says
``offset: -0.1`` (Element84/earth-search#9, maintainers: the flag is the truth). Applying both
would make half of a vegetated scene negative, so the flag wins when present and true.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_SCALE = 1e-4
BASELINE_OFFSET_DN = -1000.0
OFFSET_BASELINE = (4, 0)


@dataclass(frozen=True)
class Radiometry:
    """``reflectance = DN * scale + offset``; DN == nodata stays masked (NaN)."""

    scale: float = DEFAULT_SCALE
    offset: float = 0.0
    nodata: float | None = 0.0


def parse_baseline(value: Any) -> tuple[int, int] | None:
    """Parse ``"04.00"``, ``"5.10"`` or ``4.0`` into ``(major, minor)``; None when absent."""
    if value is None:
        return None
    text = str(value).strip()
    try:
        major, _, minor = text.partition(".")
        return int(major), int(minor or 0)
    except ValueError as exc:
        raise ValueError(f"unparseable s2:processing_baseline {value!r}") from exc


def baseline_radiometry(baseline: Any) -> Radiometry:
    """Scale/offset implied by the processing baseline alone (no ``raster:bands`` given)."""
    parsed = parse_baseline(baseline)
    offset = 0.0
    if parsed is not None and parsed >= OFFSET_BASELINE:
        offset = BASELINE_OFFSET_DN * DEFAULT_SCALE
    return Radiometry(DEFAULT_SCALE, offset, 0.0)


def radiometry_for_asset(
    asset: Mapping[str, Any], item_properties: Mapping[str, Any]
) -> Radiometry:
    """Radiometry of one asset dict (STAC JSON), preferring what the item itself declares."""
    fallback = baseline_radiometry(item_properties.get("s2:processing_baseline"))
    already_applied = bool(
        item_properties.get("earthsearch:boa_offset_applied")
        or item_properties.get("sentinel:boa_offset_applied")
    )
    if already_applied:
        fallback = Radiometry(fallback.scale, 0.0, fallback.nodata)
    bands = asset.get("raster:bands") or []
    if not bands:
        return fallback
    rb = bands[0]
    scale = rb.get("scale")
    offset = None if already_applied else rb.get("offset")
    nodata = rb.get("nodata", asset.get("nodata", 0))
    return Radiometry(
        scale=float(scale) if scale is not None else fallback.scale,
        offset=float(offset) if offset is not None else fallback.offset,
        nodata=None if nodata is None else float(nodata),
    )


def to_reflectance(dn: np.ndarray, radiometry: Radiometry) -> np.ndarray:
    """Convert DN to float32 reflectance; nodata pixels become NaN so no mean includes them."""
    out = dn.astype(np.float32) * np.float32(radiometry.scale) + np.float32(radiometry.offset)
    if radiometry.nodata is not None:
        out[dn == radiometry.nodata] = np.nan
    return out
