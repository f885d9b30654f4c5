"""BigEarthNet (v1, Sentinel-2) patches for multi-label scene classification.

A patch is a folder with twelve single-band GeoTIFFs (``<patch>_B01.tif`` … ``_B12.tif``, no
B10) at their native 10/20/60 m resolution — 120x120, 60x60 and 20x20 pixels for the same
1.2 km square — and ``<patch>_labels_metadata.json`` with CORINE Land Cover level-3 names.
Models need one grid, so every band is resampled to 120x120 (bilinear for reflectance), the
usual BigEarthNet recipe. Values become reflectance (DN / 10000; BigEarthNet v1 is sen2cor
L2A of 2017-2018, before the +1000 DN offset of processing baseline 04.00).

Labels: the 43 original CORINE classes, or the 19-class nomenclature of Sumbul et al. (2020),
which merges classes that cannot be told apart at 10 m from a single date and drops those
(roads, ports, airports, mines, dumps, construction sites, green urban areas, sport facilities,
bare rock, burnt areas, intertidal flats). A label name outside the 43 is an error naming it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.warp import transform as warp_transform

log = logging.getLogger("earthloop.finetune")

__all__ = [
    "BANDS",
    "CLASSES_19",
    "CLASSES_43",
    "BigEarthNetData",
    "find_patches",
    "load_bigearthnet",
    "patch_labels",
    "read_patch",
]

BANDS: tuple[str, ...] = (
    "B01",
    "B02",
    "B03",
    "B04",
    "B05",
    "B06",
    "B07",
    "B08",
    "B8A",
    "B09",
    "B11",
    "B12",
)
"""BigEarthNet-S2 bands in the conventional order (B10, cirrus, is not in L2A products)."""

CLASSES_43: tuple[str, ...] = (
    "Continuous urban fabric",
    "Discontinuous urban fabric",
    "Industrial or commercial units",
    "Road and rail networks and associated land",
    "Port areas",
    "Airports",
    "Mineral extraction sites",
    "Dump sites",
    "Construction sites",
    "Green urban areas",
    "Sport and leisure facilities",
    "Non-irrigated arable land",
    "Permanently irrigated land",
    "Rice fields",
    "Vineyards",
    "Fruit trees and berry plantations",
    "Olive groves",
    "Pastures",
    "Annual crops associated with permanent crops",
    "Complex cultivation patterns",
    "Land principally occupied by agriculture, with significant areas of natural vegetation",
    "Agro-forestry areas",
    "Broad-leaved forest",
    "Coniferous forest",
    "Mixed forest",
    "Natural grassland",
    "Moors and heathland",
    "Sclerophyllous vegetation",
    "Transitional woodland/shrub",
    "Beaches, dunes, sands",
    "Bare rock",
    "Sparsely vegetated areas",
    "Burnt areas",
    "Inland marshes",
    "Peatbogs",
    "Salt marshes",
    "Salines",
    "Intertidal flats",
    "Water courses",
    "Water bodies",
    "Coastal lagoons",
    "Estuaries",
    "Sea and ocean",
)

_GROUPS_19: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Urban fabric", ("Continuous urban fabric", "Discontinuous urban fabric")),
    ("Industrial or commercial units", ("Industrial or commercial units",)),
    ("Arable land", ("Non-irrigated arable land", "Permanently irrigated land", "Rice fields")),
    (
        "Permanent crops",
        (
            "Vineyards",
            "Fruit trees and berry plantations",
            "Olive groves",
            "Annual crops associated with permanent crops",
        ),
    ),
    ("Pastures", ("Pastures",)),
    ("Complex cultivation patterns", ("Complex cultivation patterns",)),
    (
        "Land principally occupied by agriculture, with significant areas of natural vegetation",
        ("Land principally occupied by agriculture, with significant areas of natural vegetation",),
    ),
    ("Agro-forestry areas", ("Agro-forestry areas",)),
    ("Broad-leaved forest", ("Broad-leaved forest",)),
    ("Coniferous forest", ("Coniferous forest",)),
    ("Mixed forest", ("Mixed forest",)),
    (
        "Natural grassland and sparsely vegetated areas",
        ("Natural grassland", "Sparsely vegetated areas"),
    ),
    (
        "Moors, heathland and sclerophyllous vegetation",
        ("Moors and heathland", "Sclerophyllous vegetation"),
    ),
    ("Transitional woodland, shrub", ("Transitional woodland/shrub",)),
    ("Beaches, dunes, sands", ("Beaches, dunes, sands",)),
    ("Inland wetlands", ("Inland marshes", "Peatbogs")),
    ("Coastal wetlands", ("Salt marshes", "Salines")),
    ("Inland waters", ("Water courses", "Water bodies")),
    ("Marine waters", ("Coastal lagoons", "Estuaries", "Sea and ocean")),
)

CLASSES_19: tuple[str, ...] = tuple(name for name, _ in _GROUPS_19)
_TO_19: dict[str, int] = {old: i for i, (_, olds) in enumerate(_GROUPS_19) for old in olds}
_TO_43: dict[str, int] = {name: i for i, name in enumerate(CLASSES_43)}


@dataclass
class BigEarthNetData:
    """Patches in memory: reflectance images, multi-hot targets and where each patch is."""

    images: np.ndarray  # (N, C, 120, 120) float32 reflectance
    targets: np.ndarray  # (N, K) float32 multi-hot
    class_names: list[str]
    patch_ids: list[str]
    lonlat: np.ndarray  # (N, 2) patch centres, for spatial splits
    bands: list[str]


def find_patches(root: str | Path) -> list[Path]:
    """Patch folders under ``root`` (any depth), sorted by name."""
    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"BigEarthNet folder not found: {base}")
    found = sorted({p.parent for p in base.rglob("*_labels_metadata.json")}, key=lambda p: p.name)
    if not found:
        raise FileNotFoundError(f"no BigEarthNet patch (*_labels_metadata.json) under {base}")
    return found


def _band_file(folder: Path, band: str) -> Path:
    path = folder / f"{folder.name}_{band}.tif"
    if not path.exists():
        raise FileNotFoundError(f"patch {folder.name} lacks band {band} ({path})")
    return path


def read_patch(folder: str | Path, bands: Sequence[str] = BANDS, size: int = 120) -> np.ndarray:
    """``(len(bands), size, size)`` float32 reflectance, every band resampled to ``size``."""
    f = Path(folder)
    out = np.empty((len(bands), size, size), dtype=np.float32)
    for i, band in enumerate(bands):
        with rasterio.open(_band_file(f, band)) as src:
            resampling = Resampling.bilinear if src.height != size else Resampling.nearest
            dn = src.read(1, out_shape=(size, size), resampling=resampling)
        out[i] = dn.astype(np.float32) / np.float32(10000.0)
    return out


def patch_labels(folder: str | Path) -> tuple[list[str], tuple[float, float]]:
    """CORINE label names and the patch centre (lon, lat) from its metadata and B02 georeference."""
    f = Path(folder)
    meta_path = f / f"{f.name}_labels_metadata.json"
    meta = json.loads(meta_path.read_text())
    labels = list(meta.get("labels", []))
    with rasterio.open(_band_file(f, "B02")) as src:
        b = src.bounds
        crs = src.crs
    cx, cy = (b.left + b.right) / 2, (b.bottom + b.top) / 2
    lon, lat = warp_transform(crs, "EPSG:4326", [cx], [cy])
    return labels, (float(lon[0]), float(lat[0]))


def multi_hot(labels: Sequence[str], nomenclature: int, where: str = "") -> np.ndarray:
    """Map CORINE names to a multi-hot vector of the 19- or 43-class nomenclature."""
    if nomenclature not in (19, 43):
        raise ValueError(f"nomenclature must be 19 or 43, got {nomenclature}")
    k = len(CLASSES_19) if nomenclature == 19 else len(CLASSES_43)
    vec = np.zeros(k, dtype=np.float32)
    for name in labels:
        if name not in _TO_43:
            raise ValueError(f"unknown BigEarthNet label {name!r}{where}")
        idx = _TO_19.get(name) if nomenclature == 19 else _TO_43[name]
        if idx is not None:
            vec[idx] = 1.0
    return vec


def load_bigearthnet(
    root: str | Path,
    *,
    bands: Sequence[str] = BANDS,
    nomenclature: int = 19,
    size: int = 120,
    folders: Sequence[str | Path] | None = None,
) -> BigEarthNetData:
    """Load every patch under ``root`` (or the given ``folders``) into memory.

    Patches left without any label by the 19-class nomenclature are skipped (as in BigEarthNet-19)
    with a log line, not an error.
    """
    unknown = [b for b in bands if b not in BANDS]
    if unknown:
        raise ValueError(f"BigEarthNet has no band(s) {unknown}; available {list(BANDS)}")
    paths = [Path(p) for p in folders] if folders is not None else find_patches(root)
    images, targets, ids, centres = [], [], [], []
    for folder in paths:
        names, centre = patch_labels(folder)
        vec = multi_hot(names, nomenclature, f" in patch {folder.name}")
        if not vec.any():
            log.info(
                "BigEarthNet patch %s has no %d-class label; skipped", folder.name, nomenclature
            )
            continue
        images.append(read_patch(folder, bands, size))
        targets.append(vec)
        ids.append(folder.name)
        centres.append(centre)
    if not ids:
        raise ValueError(f"no usable BigEarthNet patch under {root}")
    return BigEarthNetData(
        images=np.stack(images),
        targets=np.stack(targets),
        class_names=list(CLASSES_19 if nomenclature == 19 else CLASSES_43),
        patch_ids=ids,
        lonlat=np.asarray(centres, dtype=np.float64),
        bands=list(bands),
    )
