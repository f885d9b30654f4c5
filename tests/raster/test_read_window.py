"""raster.read: windows read by bounds onto the chip grid, and typed errors for bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from earthloop.raster.read import ChipReadError, map_href, read_window
from rasterio.enums import Resampling

CRS = "EPSG:32633"
X0, Y0 = 500_000.0, 5_000_000.0  # upper-left corner shared by every band


def write_band(path: Path, data: np.ndarray, res: float, crs: str = CRS) -> Path:
    """A single-band GeoTIFF whose upper-left corner is (X0, Y0) at ``res`` metres per pixel."""
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=data.shape[0],
        width=data.shape[1],
        count=1,
        dtype=data.dtype,
        crs=crs,
        transform=Affine(res, 0.0, X0, 0.0, -res, Y0),
    ) as dst:
        dst.write(data, 1)
    return path


@pytest.fixture
def b10(tmp_path: Path) -> tuple[Path, np.ndarray]:
    data = np.arange(100 * 100, dtype=np.uint16).reshape(100, 100)
    return write_band(tmp_path / "B04.tif", data, 10.0), data


@pytest.fixture
def b20(tmp_path: Path) -> tuple[Path, np.ndarray]:
    data = np.arange(50 * 50, dtype=np.uint16).reshape(50, 50)
    return write_band(tmp_path / "B11.tif", data, 20.0), data


# a 100 m x 100 m chip: columns 10-19 and rows 10-19 of the 10 m grid
CHIP = (X0 + 100, Y0 - 200, X0 + 200, Y0 - 100)


def test_native_resolution_window_is_the_exact_pixels(b10: tuple[Path, np.ndarray]) -> None:
    path, data = b10
    out = read_window(str(path), CRS, CHIP, (10, 10))
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, data[10:20, 10:20])


def test_coarser_band_is_resampled_onto_the_chip_grid(b20: tuple[Path, np.ndarray]) -> None:
    path, data = b20
    out = read_window(str(path), CRS, CHIP, (10, 10), resampling=Resampling.nearest)
    expected = np.repeat(np.repeat(data[5:10, 5:10], 2, axis=0), 2, axis=1)
    np.testing.assert_array_equal(out, expected)


def test_finer_output_grid_downsamples(b10: tuple[Path, np.ndarray]) -> None:
    path, data = b10
    out = read_window(str(path), CRS, CHIP, (5, 5), resampling=Resampling.average)
    expected = data[10:20, 10:20].reshape(5, 2, 5, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(out, expected, atol=1)


def test_window_outside_the_file_is_out_of_bounds(b10: tuple[Path, np.ndarray]) -> None:
    path, _ = b10
    beyond = (X0 + 950, Y0 - 100, X0 + 1050, Y0)  # half past the right edge
    with pytest.raises(ChipReadError) as info:
        read_window(str(path), CRS, beyond, (10, 10))
    assert info.value.reason == "out_of_bounds"


def test_file_in_another_crs_is_a_crs_error(tmp_path: Path) -> None:
    path = write_band(tmp_path / "other.tif", np.zeros((10, 10), np.uint16), 10.0, "EPSG:32634")
    with pytest.raises(ChipReadError) as info:
        read_window(str(path), CRS, CHIP, (10, 10))
    assert info.value.reason == "crs"


def test_missing_file_is_a_read_error(tmp_path: Path) -> None:
    with pytest.raises(ChipReadError) as info:
        read_window(str(tmp_path / "absent.tif"), CRS, CHIP, (10, 10))
    assert info.value.reason == "read_error"
    assert "absent.tif" in str(info.value)


def test_corrupt_file_is_a_read_error(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.tif"
    path.write_bytes(b"II*\x00" + bytes(range(256)) * 4)  # a TIFF magic number, then garbage
    with pytest.raises(ChipReadError) as info:
        read_window(str(path), CRS, CHIP, (10, 10))
    assert info.value.reason == "read_error"


def test_truncated_file_is_a_read_error(tmp_path: Path, b10: tuple[Path, np.ndarray]) -> None:
    path, _ = b10
    cut = tmp_path / "cut.tif"
    cut.write_bytes(path.read_bytes()[:600])  # header survives, pixel data does not
    with pytest.raises(ChipReadError) as info:
        read_window(str(cut), CRS, CHIP, (10, 10))
    assert info.value.reason == "read_error"


def test_map_href_rewrites_by_prefix_only() -> None:
    mirror = {"s3://sentinel-cogs/": "/data/mirror/"}
    assert map_href("s3://sentinel-cogs/a/B04.tif", mirror) == "/data/mirror/a/B04.tif"
    assert map_href("s3://other/a/B04.tif", mirror) == "s3://other/a/B04.tif"
    assert map_href("s3://sentinel-cogs/a/B04.tif", None) == "s3://sentinel-cogs/a/B04.tif"
