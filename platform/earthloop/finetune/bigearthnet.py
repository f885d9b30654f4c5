"""BigEarthNet (Sentinel-2) patches, v1 or v2 (reBEN), for multi-label scene classification.

A patch is a folder with twelve single-band GeoTIFFs (``<patch>_B01.tif`` … ``_B12.tif``, no
B10) at their native 10/20/60 m resolution — 120x120, 60x60 and 20x20 pixels for the same
1.2 km square. Where the folders, labels, official splits and advised exclusions are depends on
the release; :mod:`earthloop.finetune.bigearthnet_layout` recognises both. Models need one grid,
so every band is resampled to 120x120 (bilinear for reflectance), the usual BigEarthNet recipe.
Values become reflectance (DN / 10000; v1 is sen2cor L2A of 2017-2018, before the +1000 DN
offset of processing baseline 04.00, and v2 is read the same way).

Labels: v1 carries the 43 original CORINE level-3 classes; the 19-class nomenclature of Sumbul
et al. (2020) merges classes that cannot be told apart at 10 m from a single date and drops
those (roads, ports, airports, mines, dumps, construction sites, green urban areas, sport
facilities, bare rock, burnt areas, intertidal flats). v2 carries the 19 names only, so the
43-class nomenclature exists only for v1 data. A name in neither vocabulary is an error naming it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.warp import transform as warp_transform

from earthloop.finetune.bigearthnet_layout import (
    detect_layout,
    patch_record,
    record_labels,
    scan,
)

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
_IDX_19: dict[str, int] = {name: i for i, name in enumerate(CLASSES_19)}


@dataclass
class BigEarthNetData:
    """Patches in memory: reflectance images, multi-hot targets and where each patch is."""

    images: np.ndarray  # (N, C, 120, 120) float32 reflectance
    targets: np.ndarray  # (N, K) float32 multi-hot
    class_names: list[str]
    patch_ids: list[str]
    lonlat: np.ndarray  # (N, 2) patch centres, for spatial splits
    bands: list[str]
    splits: list[str] | None = None  # official train/val/test (v2); None: v1 has none
    version: int = 1  # layout of the download (1 or 2)
    excluded: int = 0  # patches left out as advised (seasonal snow, cloud/shadow)


def find_patches(root: str | Path) -> list[Path]:
    """Folders of the usable patches of a v1 or v2 download, sorted by patch id.

    Patches on the release's snow/cloud/shadow lists are left out (and counted in the log).
    """
    return [r.folder for r in scan(root).patches]


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


def _centre(folder: Path) -> tuple[float, float]:
    """The patch centre (lon, lat) from its B02 georeference (both layouts carry a CRS)."""
    with rasterio.open(_band_file(folder, "B02")) as src:
        b = src.bounds
        crs = src.crs
    cx, cy = (b.left + b.right) / 2, (b.bottom + b.top) / 2
    lon, lat = warp_transform(crs, "EPSG:4326", [cx], [cy])
    return float(lon[0]), float(lat[0])


def patch_labels(folder: str | Path) -> tuple[list[str], tuple[float, float]]:
    """Label names and the patch centre (lon, lat) of one patch folder of either layout.

    v1 names are CORINE level-3 (43 classes) from the patch's JSON; v2 names are the 19 classes,
    looked up in the ``metadata.parquet`` of the download the folder belongs to.
    """
    f = Path(folder)
    return list(record_labels(patch_record(f))), _centre(f)


def _name_list(names: Sequence[str]) -> str:
    return ", ".join(repr(n) for n in names)


def multi_hot(labels: Sequence[str], nomenclature: int, where: str = "") -> np.ndarray:
    """Map label names to a multi-hot vector of the 19- or 43-class nomenclature.

    Accepts both vocabularies: v1's 43 CORINE level-3 names (mapped to 19 by the merge of
    Sumbul et al.; the dropped classes give nothing) and v2's 19 names (which are the 19 classes
    already). Names shared by both (e.g. "Pastures") mean the same class in both.

    Raises:
        ValueError: a name in neither vocabulary (all such names listed), or v2 (19-class) names
            asked for in the 43-class nomenclature, which they cannot be split back into.
    """
    if nomenclature not in (19, 43):
        raise ValueError(f"nomenclature must be 19 or 43, got {nomenclature}")
    unknown = [n for n in labels if n not in _TO_43 and n not in _IDX_19]
    if unknown:
        plural = "s" if len(unknown) > 1 else ""
        raise ValueError(
            f"unknown BigEarthNet label{plural} {_name_list(unknown)}{where}: neither a "
            "43-class (v1, CORINE level-3) nor a 19-class (v2) name"
        )
    k = len(CLASSES_19) if nomenclature == 19 else len(CLASSES_43)
    vec = np.zeros(k, dtype=np.float32)
    if nomenclature == 43:
        only_19 = [n for n in labels if n not in _TO_43]
        if only_19:
            raise ValueError(
                f"BigEarthNet label(s) {_name_list(only_19)}{where} are 19-class (v2) names: "
                "the 43-class nomenclature needs the CORINE level-3 labels of BigEarthNet v1; "
                "use the 19-class nomenclature"
            )
        for name in labels:
            vec[_TO_43[name]] = 1.0
        return vec
    for name in labels:
        idx = _IDX_19[name] if name in _IDX_19 else _TO_19.get(name)
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
    """Load every usable patch of the v1 or v2 download at ``root`` (or just ``folders``).

    The layout is recognised from the folder (see :mod:`earthloop.finetune.bigearthnet_layout`).
    v2 brings its labels and official split from ``metadata.parquet`` and leaves out the
    patches its snow/cloud/shadow list names; v1 reads each patch's JSON (no official split).
    Patches left without any label by the 19-class nomenclature are skipped (as in
    BigEarthNet-19) with a log line, not an error.

    Raises:
        FileNotFoundError: neither layout at ``root`` (the message names what is missing).
        ValueError: unknown bands or label names, or the 43-class nomenclature on v2 data.
    """
    unknown = [b for b in bands if b not in BANDS]
    if unknown:
        raise ValueError(f"BigEarthNet has no band(s) {unknown}; available {list(BANDS)}")
    if nomenclature not in (19, 43):
        raise ValueError(f"nomenclature must be 19 or 43, got {nomenclature}")
    layout = detect_layout(root)
    if nomenclature == 43 and layout.version == 2:
        raise ValueError(
            f"BigEarthNet v2 at {layout.root} carries 19-class labels only; the 43-class "
            "nomenclature needs BigEarthNet v1 (CORINE level-3 names in *_labels_metadata.json)"
            ": use nomenclature 19"
        )
    if folders is None:
        cat = scan(root)
        records, excluded = cat.patches, cat.excluded
    else:
        records, excluded = [patch_record(f) for f in folders], 0
    images, targets, ids, centres, splits = [], [], [], [], []
    unlabelled = 0
    for rec in records:
        vec = multi_hot(record_labels(rec), nomenclature, f" in patch {rec.id}")
        if not vec.any():
            unlabelled += 1
            continue
        images.append(read_patch(rec.folder, bands, size))
        targets.append(vec)
        ids.append(rec.id)
        centres.append(_centre(rec.folder))
        splits.append(rec.split or "")
    if unlabelled:
        log.info("%d BigEarthNet patches have no %d-class label; skipped", unlabelled, nomenclature)
    if not ids:
        raise ValueError(f"no usable BigEarthNet patch under {root}")
    return BigEarthNetData(
        images=np.stack(images),
        targets=np.stack(targets),
        class_names=list(CLASSES_19 if nomenclature == 19 else CLASSES_43),
        patch_ids=ids,
        lonlat=np.asarray(centres, dtype=np.float64),
        bands=list(bands),
        splits=splits if layout.version == 2 else None,
        version=layout.version,
        excluded=excluded,
    )
