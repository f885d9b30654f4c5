"""STAC metadata in the shape Earth Search v1 publishes for ``sentinel-2-l2a``.

Downstream code is written against Earth Search; if the synthetic items differ (asset keys,
``raster:bands`` radiometry, ``proj:epsg``, ``mgrs:*``), the demo would pass and production would
fail. Items are therefore built as plain dicts mirroring Earth Search, then round-tripped through
pystac and checked against the STAC core schema that pystac bundles (extension schemas would
need the network, so their fields are checked here by hand).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pystac
import pystac.validation
from affine import Affine
from rasterio.warp import transform_geom

from earthloop.s2.bands import Band
from earthloop.synth.cog import COG_MEDIA_TYPE
from earthloop.synth.tiles import TileGrid

COLLECTION_ID = "sentinel-2-l2a"
ITEM_EXTENSIONS = [
    "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
    "https://stac-extensions.github.io/mgrs/v1.0.0/schema.json",
    "https://stac-extensions.github.io/grid/v1.0.0/schema.json",
    "https://stac-extensions.github.io/view/v1.0.0/schema.json",
]
_EO_COMMON_NAME = {"rededge1": "rededge", "rededge2": "rededge", "rededge3": "rededge"}
_DESCRIPTION = {
    "B01": "Coastal aerosol (band 1)",
    "B02": "Blue (band 2)",
    "B03": "Green (band 3)",
    "B04": "Red (band 4)",
    "B05": "Red edge 1 (band 5)",
    "B06": "Red edge 2 (band 6)",
    "B07": "Red edge 3 (band 7)",
    "B08": "NIR 1 (band 8)",
    "B8A": "NIR 2 (band 8A)",
    "B09": "NIR 3 (band 9)",
    "B11": "SWIR 1 (band 11)",
    "B12": "SWIR 2 (band 12)",
    "SCL": "Scene classification map (SCL)",
}


def iso(dt: datetime) -> str:
    """UTC timestamp with millisecond precision and a ``Z``, as Earth Search writes them."""
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _transform_list(t: Affine) -> list[float]:
    return [t.a, t.b, t.c, t.d, t.e, t.f]


def eo_band(band: Band) -> dict[str, Any]:
    assert band.wavelength_nm is not None
    out: dict[str, Any] = {
        "name": band.common_name,
        "common_name": _EO_COMMON_NAME.get(band.common_name, band.common_name),
        "description": _DESCRIPTION[band.name],
        "center_wavelength": round(band.wavelength_nm / 1000.0, 4),
    }
    if band.bandwidth_nm:
        out["full_width_half_max"] = round(band.bandwidth_nm / 1000.0, 4)
    return out


def band_asset(
    band: Band, href: str, grid: TileGrid, offset: float, scale: float = 1e-4
) -> dict[str, Any]:
    """A reflectance asset; ``offset`` is -0.1 for baseline >= 04.00 and 0 before."""
    res = band.resolution_m
    return {
        "href": href,
        "type": COG_MEDIA_TYPE,
        "title": f"{_DESCRIPTION[band.name]} - {res}m",
        "roles": ["data", "reflectance"],
        "gsd": res,
        "eo:bands": [eo_band(band)],
        "raster:bands": [
            {
                "nodata": 0,
                "data_type": "uint16",
                "bits_per_sample": 15,
                "spatial_resolution": res,
                "scale": scale,
                "offset": offset,
            }
        ],
        "proj:shape": list(grid.shape(res)),
        "proj:transform": _transform_list(grid.transform(res)),
    }


def scl_asset(href: str, grid: TileGrid) -> dict[str, Any]:
    return {
        "href": href,
        "type": COG_MEDIA_TYPE,
        "title": f"{_DESCRIPTION['SCL']} - 20m",
        "roles": ["data"],
        "gsd": 20,
        "raster:bands": [{"nodata": 0, "data_type": "uint8", "spatial_resolution": 20}],
        "proj:shape": list(grid.shape(20)),
        "proj:transform": _transform_list(grid.transform(20)),
    }


def footprint(
    grid: TileGrid, ring_utm: Sequence[tuple[float, float]]
) -> tuple[dict[str, Any], list[float]]:
    """WGS84 polygon and bbox of the valid-data ring (UTM metres), as Earth Search gives them."""
    ring = [list(p) for p in ring_utm]
    if ring[0] != ring[-1]:
        ring.append(list(ring[0]))
    geom = transform_geom(grid.crs, "EPSG:4326", {"type": "Polygon", "coordinates": [ring]})
    coords = [[round(float(x), 7), round(float(y), 7)] for x, y in geom["coordinates"][0]]
    xs = [c[0] for c in coords]
    ys = [c[1] for c in coords]
    return {"type": "Polygon", "coordinates": [coords]}, [min(xs), min(ys), max(xs), max(ys)]


def scene_item(
    *,
    item_id: str,
    grid: TileGrid,
    acquired: datetime,
    platform: str,
    baseline: str,
    relative_orbit: int,
    geometry: dict[str, Any],
    bbox: list[float],
    scl_stats: Mapping[str, float],
    sun_zenith: float,
    sun_azimuth: float,
    assets: Mapping[str, dict[str, Any]],
    collection_href: str,
    extra_properties: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One Earth-Search-like L2A item as a dict.

    Its only link points at the standalone ``collection.json`` (STAC requires one when the
    ``collection`` field is set); the static catalog rewrites links for its own copy.
    """
    processed = acquired + timedelta(hours=2, minutes=41, seconds=17)
    product_uri = (
        f"{platform.upper().replace('SENTINEL-', 'S')}_MSIL2A_{acquired:%Y%m%dT%H%M%S}"
        f"_N{baseline.replace('.', '')}_R{relative_orbit:03d}_T{grid.id}_{processed:%Y%m%dT%H%M%S}.SAFE"
    )
    props: dict[str, Any] = {
        "datetime": iso(acquired),
        "created": iso(processed),
        "updated": iso(processed),
        "platform": platform,
        "constellation": "sentinel-2",
        "instruments": ["msi"],
        "gsd": 10,
        "eo:cloud_cover": scl_stats["eo:cloud_cover"],
        "proj:epsg": grid.epsg,
        "proj:code": f"EPSG:{grid.epsg}",
        "mgrs:utm_zone": grid.mgrs.zone,
        "mgrs:latitude_band": grid.mgrs.band,
        "mgrs:grid_square": grid.mgrs.square,
        "grid:code": f"MGRS-{grid.id}",
        "view:sun_azimuth": round(sun_azimuth, 4),
        "view:sun_elevation": round(90.0 - sun_zenith, 4),
        "s2:product_type": "S2MSI2A",
        "s2:processing_baseline": baseline,
        "s2:product_uri": product_uri,
        "s2:mean_solar_zenith": round(sun_zenith, 4),
        "s2:mean_solar_azimuth": round(sun_azimuth, 4),
        "s2:mgrs_tile": grid.id,
        **{k: v for k, v in scl_stats.items() if k != "eo:cloud_cover"},
    }
    if extra_properties:
        props.update(extra_properties)
    return {
        "type": "Feature",
        "stac_version": pystac.get_stac_version(),
        "stac_extensions": list(ITEM_EXTENSIONS),
        "id": item_id,
        "geometry": geometry,
        "bbox": bbox,
        "properties": props,
        "links": [{"rel": "collection", "href": collection_href, "type": "application/json"}],
        "assets": dict(assets),
        "collection": COLLECTION_ID,
    }


class StacCheckError(ValueError):
    """A generated STAC object breaks a rule that readers rely on."""


def _comparable(value: Any) -> Any:
    """Undo what pystac legitimately changes on read: it migrates ``proj:epsg`` to ``proj:code``
    (projection v2) and writes timestamps with microseconds."""
    if isinstance(value, dict):
        out = {k: _comparable(v) for k, v in value.items() if k != "proj:epsg"}
        for key in ("datetime", "created", "updated"):
            if isinstance(value.get(key), str):
                out[key] = pystac.utils.str_to_datetime(value[key])
        return out
    return value


def check_item(item: dict[str, Any]) -> pystac.Item:
    """Round-trip through pystac, validate the core schema offline and check extension fields."""
    try:
        pystac.validation.validate_dict(item, extensions=[])
    except pystac.STACValidationError as exc:
        raise StacCheckError(f"item {item.get('id')}: core schema: {exc}") from exc
    parsed = pystac.Item.from_dict(item, preserve_dict=True)
    back = parsed.to_dict(include_self_link=False)
    for part in ("properties", "assets", "geometry", "bbox"):
        if _comparable(back[part]) != _comparable(item[part]):
            raise StacCheckError(f"item {item['id']} does not survive a pystac round trip ({part})")
    props = item["properties"]
    for key in ("eo:cloud_cover", "proj:epsg", "s2:processing_baseline", "mgrs:utm_zone"):
        if key not in props:
            raise StacCheckError(f"item {item['id']} lacks {key}")
    if not 0.0 <= props["eo:cloud_cover"] <= 100.0:
        raise StacCheckError(
            f"item {item['id']}: eo:cloud_cover {props['eo:cloud_cover']} out of range"
        )
    for key, asset in item["assets"].items():
        href = asset["href"]
        if not os.path.isabs(href) or not os.path.exists(href):
            raise StacCheckError(
                f"item {item['id']} asset {key}: href {href} is not an existing absolute path"
            )
        rb = asset.get("raster:bands") or []
        if len(rb) != 1 or rb[0].get("nodata") != 0 or "data_type" not in rb[0]:
            raise StacCheckError(
                f"item {item['id']} asset {key}: raster:bands must state nodata 0 and data_type"
            )
        if len(asset.get("proj:shape", [])) != 2 or len(asset.get("proj:transform", [])) != 6:
            raise StacCheckError(
                f"item {item['id']} asset {key}: needs proj:shape and proj:transform"
            )
    return parsed


def collection_dict(items: Sequence[Mapping[str, Any]], *, description: str) -> dict[str, Any]:
    """A collection whose extent covers every item, with Earth-Search-like summaries."""
    if not items:
        raise ValueError("cannot describe an empty collection")
    west = min(i["bbox"][0] for i in items)
    south = min(i["bbox"][1] for i in items)
    east = max(i["bbox"][2] for i in items)
    north = max(i["bbox"][3] for i in items)
    times = sorted(i["properties"]["datetime"] for i in items)
    item_assets: dict[str, Any] = {}
    for item in items:
        for key, asset in item["assets"].items():
            if key not in item_assets:
                template = {
                    k: v
                    for k, v in asset.items()
                    if k not in {"href", "proj:shape", "proj:transform"}
                }
                template["raster:bands"] = [
                    {k: v for k, v in asset["raster:bands"][0].items() if k not in {"offset"}}
                ]
                item_assets[key] = template
    eo_bands = [a["eo:bands"][0] for a in item_assets.values() if "eo:bands" in a]
    clouds = [i["properties"]["eo:cloud_cover"] for i in items]
    return {
        "type": "Collection",
        "stac_version": pystac.get_stac_version(),
        "stac_extensions": [
            "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
            "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
        ],
        "id": COLLECTION_ID,
        "title": "Sentinel-2 Level-2A (synthetic)",
        "description": description,
        "keywords": ["sentinel", "earth observation", "esa", "synthetic"],
        "license": "other",
        "providers": [
            {"name": "earthloop sample-data", "roles": ["producer", "processor", "host"]}
        ],
        "extent": {
            "spatial": {"bbox": [[west, south, east, north]]},
            "temporal": {"interval": [[times[0], times[-1]]]},
        },
        "summaries": {
            "platform": sorted({i["properties"]["platform"] for i in items}),
            "constellation": ["sentinel-2"],
            "instruments": ["msi"],
            "gsd": sorted({a["gsd"] for a in item_assets.values()}),
            "eo:cloud_cover": {"minimum": min(clouds), "maximum": max(clouds)},
            "eo:bands": eo_bands,
            "s2:processing_baseline": sorted(
                {i["properties"]["s2:processing_baseline"] for i in items}
            ),
        },
        "item_assets": item_assets,
        "links": [],
    }


def write_ndjson(items: Iterable[Mapping[str, Any]], path: Path) -> Path:
    """One compact item per line: the input format of ``rustac serve`` and bulk loaders."""
    tmp = path.with_name(path.name + ".part")
    with tmp.open("w") as f:
        for item in items:
            f.write(json.dumps(item, separators=(",", ":")) + "\n")
    os.replace(tmp, path)
    return path


def write_json(obj: Mapping[str, Any], path: Path) -> Path:
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def write_static_catalog(
    collection: Mapping[str, Any], items: Sequence[Mapping[str, Any]], catalog_dir: Path
) -> tuple[Path, list[Path]]:
    """``catalog.json`` → collection → items, self-contained (relative links) so it can move.

    Written by hand rather than with ``Catalog.save`` because pystac migrates the items on the
    way (``proj:epsg`` → ``proj:code``), and the catalog copy must match ``items.ndjson`` and
    Earth Search field for field. pystac then walks the result to prove it is readable.
    Returns the catalog path and the item file paths, in the order of ``items``.
    """
    coll_id = collection["id"]
    coll_dir = catalog_dir / coll_id
    item_paths = [coll_dir / i["id"] / f"{i['id']}.json" for i in items]
    catalog = {
        "type": "Catalog",
        "id": "earthloop-synthetic",
        "stac_version": pystac.get_stac_version(),
        "title": "earthloop synthetic archive",
        "description": "Synthetic Sentinel-2 L2A scenes written by `earthloop sample-data`.",
        "links": [
            {"rel": "root", "href": "./catalog.json", "type": "application/json"},
            {"rel": "child", "href": f"./{coll_id}/collection.json", "type": "application/json"},
        ],
    }
    coll = dict(collection)
    coll["links"] = [
        {"rel": "root", "href": "../catalog.json", "type": "application/json"},
        {"rel": "parent", "href": "../catalog.json", "type": "application/json"},
        *(
            {"rel": "item", "href": f"./{i['id']}/{i['id']}.json", "type": "application/geo+json"}
            for i in items
        ),
    ]
    for item, path in zip(items, item_paths, strict=True):
        copy = dict(item)
        copy["links"] = [
            {"rel": "root", "href": "../../catalog.json", "type": "application/json"},
            {"rel": "parent", "href": "../collection.json", "type": "application/json"},
            {"rel": "collection", "href": "../collection.json", "type": "application/json"},
        ]
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(copy, path)
    write_json(coll, coll_dir / "collection.json")
    catalog_path = write_json(catalog, catalog_dir / "catalog.json")
    walked = sum(1 for _ in pystac.Catalog.from_file(str(catalog_path)).get_items(recursive=True))
    if walked != len(items):
        raise StacCheckError(
            f"static catalog at {catalog_path} yields {walked} items, expected {len(items)}"
        )
    return catalog_path, item_paths
