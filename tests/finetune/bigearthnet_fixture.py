"""Writes a small BigEarthNet v2 (reBEN) download laid out as the Zenodo release extracts.

``<root>/metadata.parquet`` (the clean patches: ``patch_id``, ``labels`` as a list of 19-class
names, ``split`` train/validation/test, ``country``, ``s1_name``, ``s2v1_name`` and the two
quality flags), ``<root>/metadata_for_patches_with_snow_cloud_or_shadow.parquet`` (same columns,
the advised exclusions) and ``<root>/BigEarthNet-S2/<tile>/<patch_id>/<patch_id>_<band>.tif``
for every patch, excluded ones included (the archive ships their pixels too).

The columns, their types and order, the split values and the folder rule (``<tile>`` is the
patch id without its two grid numbers) are those of the real release: checked against its
``metadata.parquet`` (md5 55687065e77b6d0b0f1ff604a6e7b49c, 480,038 rows) and exclusion parquet
(md5 fe31856f4986d446c9468b59d6387c91, 69,450 rows: 60,773 snow, 8,677 cloud/shadow), as kept in
the reBEN pipeline repository (kai-tub/bigearthnet-pipeline, tracked-artifacts/).

Every band of a patch is one constant DN (``dn(patch, band)``), so a test can check that each
band file lands in its own channel, whatever the resampling. Patch ids, tiles, places and label
names are in the release's format; the pixels are generated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import rasterio
from affine import Affine

BANDS_10M = ("B02", "B03", "B04", "B08")
BANDS_20M = ("B05", "B06", "B07", "B8A", "B11", "B12")
BANDS_60M = ("B01", "B09")
ALL_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")

# tile product name (patch id without its grid numbers) -> (EPSG, tile corner x, y, country)
TILES: dict[str, tuple[int, float, float, str]] = {
    "S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP": (32633, 399960.0, 5400000.0, "Austria"),
    "S2A_MSIL2A_20170617T113321_N9999_R080_T29UPU": (32629, 600000.0, 5900040.0, "Ireland"),
    "S2B_MSIL2A_20170924T093020_N9999_R136_T35VPK": (32635, 600000.0, 7000020.0, "Finland"),
    "S2B_MSIL2A_20180204T094161_N9999_R036_T35VPK": (32635, 600000.0, 7000020.0, "Finland"),
}


@dataclass(frozen=True)
class V2Patch:
    tile: str
    row: int
    col: int
    labels: tuple[str, ...]
    split: str  # as in the release: train / validation / test
    snow: bool = False
    cloud: bool = False

    @property
    def id(self) -> str:
        return f"{self.tile}_{self.row}_{self.col}"

    @property
    def excluded(self) -> bool:
        return self.snow or self.cloud


TILE_AT, TILE_IE, TILE_FI, TILE_FI_WINTER = TILES

CLEAN: tuple[V2Patch, ...] = (
    V2Patch(TILE_AT, 26, 57, ("Urban fabric", "Arable land"), "train"),
    V2Patch(TILE_AT, 26, 58, ("Arable land", "Pastures"), "train"),
    V2Patch(TILE_AT, 27, 57, ("Industrial or commercial units", "Urban fabric"), "validation"),
    V2Patch(TILE_IE, 40, 12, ("Pastures", "Inland waters", "Inland wetlands"), "train"),
    V2Patch(TILE_IE, 40, 13, ("Pastures", "Complex cultivation patterns"), "test"),
    V2Patch(
        TILE_FI,
        8,
        3,
        ("Coniferous forest", "Mixed forest", "Transitional woodland, shrub"),
        "train",
    ),
    V2Patch(TILE_FI, 8, 4, ("Coniferous forest", "Inland waters", "Inland wetlands"), "validation"),
    V2Patch(TILE_FI, 9, 3, ("Mixed forest", "Marine waters", "Coastal wetlands"), "test"),
)
EXCLUDED: tuple[V2Patch, ...] = (
    V2Patch(TILE_FI_WINTER, 8, 5, ("Coniferous forest",), "train", snow=True),
    V2Patch(TILE_AT, 28, 57, ("Arable land",), "test", cloud=True),
)


@dataclass
class V2Download:
    root: Path
    clean: list[V2Patch] = field(default_factory=list)
    excluded: list[V2Patch] = field(default_factory=list)


def dn(patch_no: int, band: str) -> int:
    """The constant DN of ``band`` in the ``patch_no``-th patch written (all distinct)."""
    return 1000 + 100 * ALL_BANDS.index(band) + patch_no


def _write_patch(images: Path, patch: V2Patch, patch_no: int) -> None:
    epsg, x0, y0, _ = TILES[patch.tile]
    folder = images / patch.tile / patch.id
    folder.mkdir(parents=True)
    ulx, uly = x0 + 1200.0 * patch.col, y0 - 1200.0 * patch.row
    for bands, res in ((BANDS_10M, 10), (BANDS_20M, 20), (BANDS_60M, 60)):
        size = 1200 // res
        for band in bands:
            data = np.full((size, size), dn(patch_no, band), dtype=np.uint16)
            with rasterio.open(
                folder / f"{patch.id}_{band}.tif",
                "w",
                driver="GTiff",
                width=size,
                height=size,
                count=1,
                dtype="uint16",
                crs=f"EPSG:{epsg}",
                transform=Affine(res, 0.0, ulx, 0.0, -res, uly),
            ) as dst:
                dst.write(data, 1)


def metadata_table(patches: list[V2Patch]) -> pa.Table:
    """The release's metadata columns for ``patches``."""
    s1 = [f"S1A_IW_GRDH_1SDV_20170613T165043_{p.tile[-5:]}_{p.row}_{p.col}" for p in patches]
    s2v1 = ["_".join(p.tile.split("_")[:3]) + f"_{p.row}_{p.col}" for p in patches]
    return pa.table(
        {
            "patch_id": [p.id for p in patches],
            "labels": pa.array([list(p.labels) for p in patches], type=pa.list_(pa.string())),
            "split": [p.split for p in patches],
            "country": [TILES[p.tile][3] for p in patches],
            "s1_name": s1,
            "s2v1_name": s2v1,
            "contains_seasonal_snow": [p.snow for p in patches],
            "contains_cloud_or_shadow": [p.cloud for p in patches],
        }
    )


def write_v2(
    root: Path,
    clean: tuple[V2Patch, ...] | list[V2Patch] = CLEAN,
    excluded: tuple[V2Patch, ...] | list[V2Patch] = EXCLUDED,
    *,
    exclusion_file: bool = True,
) -> V2Download:
    """Write the download under ``root``; patches are numbered clean first, then excluded.

    ``exclusion_file=False`` leaves the exclusion parquet out and puts the flagged patches in
    ``metadata.parquet`` instead (a merged table some users build).
    """
    images = root / "BigEarthNet-S2"
    for i, p in enumerate([*clean, *excluded]):
        _write_patch(images, p, i)
    if exclusion_file:
        pq.write_table(metadata_table(list(clean)), root / "metadata.parquet")
        pq.write_table(
            metadata_table(list(excluded)),
            root / "metadata_for_patches_with_snow_cloud_or_shadow.parquet",
        )
    else:
        pq.write_table(metadata_table([*clean, *excluded]), root / "metadata.parquet")
    return V2Download(root, list(clean), list(excluded))
