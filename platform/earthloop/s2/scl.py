"""Scene Classification Layer (SCL) semantics and masks.

Scene-level ``eo:cloud_cover`` says little about one 2.5 km chip: a 40 % cloudy scene has clear
chips and a 2 % one can hide a cloud over exactly our field. Chips are therefore judged on their
own SCL window with these masks.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np


class SCL(IntEnum):
    NO_DATA = 0
    SATURATED_OR_DEFECTIVE = 1
    DARK_AREA = 2
    CLOUD_SHADOW = 3
    VEGETATION = 4
    NOT_VEGETATED = 5
    WATER = 6
    UNCLASSIFIED = 7
    CLOUD_MEDIUM_PROBABILITY = 8
    CLOUD_HIGH_PROBABILITY = 9
    THIN_CIRRUS = 10
    SNOW = 11


CLOUD_CLASSES = (SCL.CLOUD_MEDIUM_PROBABILITY, SCL.CLOUD_HIGH_PROBABILITY, SCL.THIN_CIRRUS)
SHADOW_CLASSES = (SCL.CLOUD_SHADOW,)
INVALID_CLASSES = (SCL.NO_DATA, SCL.SATURATED_OR_DEFECTIVE)


def cloud_mask(scl: np.ndarray) -> np.ndarray:
    """True where the pixel is cloud (medium/high probability) or thin cirrus."""
    return np.isin(scl, [int(c) for c in CLOUD_CLASSES])


def scl_invalid_mask(
    scl: np.ndarray, *, shadow: bool = True, snow: bool = False, nodata: bool = True
) -> np.ndarray:
    """True where a pixel must not be trusted: cloud, (shadow), saturated, (nodata), (snow)."""
    classes = [int(c) for c in CLOUD_CLASSES] + [int(SCL.SATURATED_OR_DEFECTIVE)]
    if shadow:
        classes += [int(c) for c in SHADOW_CLASSES]
    if nodata:
        classes.append(int(SCL.NO_DATA))
    if snow:
        classes.append(int(SCL.SNOW))
    return np.isin(scl, classes)


def chip_quality(scl: np.ndarray, *, snow: bool = False) -> dict[str, float]:
    """Fractions of a chip's SCL window that are cloud, shadow, nodata and invalid overall."""
    n = max(int(scl.size), 1)
    return {
        "cloud_fraction": float(cloud_mask(scl).sum()) / n,
        "shadow_fraction": float(np.isin(scl, [int(c) for c in SHADOW_CLASSES]).sum()) / n,
        "nodata_fraction": float((scl == int(SCL.NO_DATA)).sum()) / n,
        "invalid_fraction": float(scl_invalid_mask(scl, snow=snow).sum()) / n,
    }
