"""Sentinel-2 L2A domain knowledge: bands, radiometry and scene classification.

Pure functions and data only; nothing here imports Ray, torch or storage, so every other stage
can rely on it without dragging a runtime along.
"""

from earthloop.s2.bands import BANDS, Band, resolve_band, resolve_bands
from earthloop.s2.radiometry import Radiometry, radiometry_for_asset, to_reflectance
from earthloop.s2.scl import SCL, scl_invalid_mask

__all__ = [
    "BANDS",
    "SCL",
    "Band",
    "Radiometry",
    "radiometry_for_asset",
    "resolve_band",
    "resolve_bands",
    "scl_invalid_mask",
    "to_reflectance",
]
