"""Windowed reads from Cloud Optimized GeoTIFFs (and any GDAL raster), shared by ingest and stream."""

from earthloop.raster.read import ChipReadError, gdal_env, map_href, read_window

__all__ = ["ChipReadError", "gdal_env", "map_href", "read_window"]
