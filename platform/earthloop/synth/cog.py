"""Writing Cloud-Optimized GeoTIFFs the way Earth Search publishes them.

GDAL's COG driver (a copy-only driver) lays out the header, overviews and tiles in the order that
makes HTTP range reads cheap; we build the image in memory and copy it through that driver so
every file gets the same layout whatever its size. The overview count is set explicitly because
``OVERVIEWS=AUTO`` writes none for rasters that fit in one block (all of the test tiles), and
readers should meet overviews in tests exactly as they do in production.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.io import MemoryFile
from rasterio.shutil import copy as rio_copy

COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"


def overview_count(width: int, height: int, blocksize: int) -> int:
    """Halvings until the image fits one block, but at least one level."""
    longest = max(width, height)
    return max(1, math.ceil(math.log2(longest / blocksize))) if longest > blocksize else 1


def write_cog(
    path: str | os.PathLike[str],
    data: np.ndarray,
    *,
    crs: CRS,
    transform: Affine,
    nodata: float | None = 0,
    blocksize: int = 256,
    resampling: str = "average",
    description: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> Path:
    """Write a single-band array as a DEFLATE-compressed, internally tiled COG with overviews."""
    if data.ndim != 2:
        raise ValueError(f"write_cog expects a 2-D array, got shape {data.shape}")
    height, width = data.shape
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": 1,
        "dtype": data.dtype.name,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
    }
    predictor = "2" if np.issubdtype(data.dtype, np.integer) else "3"
    tmp = out.with_name(out.name + ".part")
    with MemoryFile() as mem, mem.open(**profile) as ds:
        ds.write(data, 1)
        if description:
            ds.set_band_description(1, description)
        if tags:
            ds.update_tags(**tags)
        rio_copy(
            ds,
            str(tmp),
            driver="COG",
            BLOCKSIZE=str(blocksize),
            COMPRESS="DEFLATE",
            PREDICTOR=predictor,
            OVERVIEW_COUNT=str(overview_count(width, height, blocksize)),
            OVERVIEW_RESAMPLING=resampling.upper(),
            NUM_THREADS="1",
        )
    os.replace(tmp, out)  # a crash never leaves a truncated file under the final name
    return out


def read_band(path: str | os.PathLike[str]) -> np.ndarray:
    """Read band 1 (a convenience for tests and the manifest checks)."""
    with rasterio.open(path) as ds:
        arr: np.ndarray = ds.read(1)
    return arr
