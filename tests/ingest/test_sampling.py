"""ingest.sampling: where chips are cut (deterministic, inside the AOI) and the train/val blocks."""

from __future__ import annotations

import numpy as np
import pytest
from earthloop.ingest.sampling import Location, aoi_from, sample_locations, spatial_split
from shapely.geometry import Point, Polygon, box

# An L-shaped AOI: its bounding box holds points that are outside it.
L_SHAPE = Polygon(
    [(10.0, 45.0), (10.2, 45.0), (10.2, 45.1), (10.1, 45.1), (10.1, 45.2), (10.0, 45.2)]
)


def _inside(aoi: Polygon, locs: list[Location]) -> bool:
    return all(aoi.contains(Point(loc.lon, loc.lat)) for loc in locs)


@pytest.mark.parametrize("method", ["uniform", "gaussian", "grid"])
def test_same_seed_same_locations_all_inside(method: str) -> None:
    kw = {"method": method, "centers": [(10.05, 45.05)], "sigma_m": 3000.0}
    a = sample_locations(L_SHAPE, 50, seed=7, **kw)
    b = sample_locations(L_SHAPE, 50, seed=7, **kw)
    assert a == b
    assert 0 < len(a) <= 50 and _inside(L_SHAPE, a)
    assert len({loc.location_id for loc in a}) == len(a)  # ids are unique


@pytest.mark.parametrize("method", ["uniform", "gaussian"])
def test_random_methods_fill_n_and_depend_on_the_seed(method: str) -> None:
    kw = {"method": method, "centers": [(10.05, 45.05)]}
    a = sample_locations(L_SHAPE, 40, seed=0, **kw)
    b = sample_locations(L_SHAPE, 40, seed=1, **kw)
    assert len(a) == len(b) == 40
    assert {(p.lon, p.lat) for p in a}.isdisjoint({(p.lon, p.lat) for p in b})


def test_uniform_covers_the_aoi_evenly() -> None:
    aoi = box(10.0, 45.0, 10.2, 45.2)
    locs = sample_locations(aoi, 2000, seed=3)
    west = sum(1 for p in locs if p.lon < 10.1) / len(locs)
    assert abs(west - 0.5) < 0.05


def test_gaussian_clusters_around_the_centres() -> None:
    aoi = box(9.0, 44.0, 11.0, 46.0)
    locs = sample_locations(aoi, 500, method="gaussian", centers=[(10.0, 45.0)], sigma_m=2000.0)
    dist_m = np.hypot(
        [(p.lon - 10.0) * 111_320 * np.cos(np.radians(45.0)) for p in locs],
        [(p.lat - 45.0) * 111_320 for p in locs],
    )
    assert np.median(dist_m) < 2 * 2000.0  # the median of a 2-D normal radius is ~1.18 sigma
    assert dist_m.max() < 8 * 2000.0


def test_grid_is_regular_and_skips_the_missing_corner() -> None:
    square = box(0.0, 0.0, 1.0, 1.0)
    locs = sample_locations(square, 9, method="grid")
    assert sorted({round(p.lon, 6) for p in locs}) == [0.25, 0.5, 0.75]
    assert sorted({round(p.lat, 6) for p in locs}) == [0.25, 0.5, 0.75]
    l_locs = sample_locations(L_SHAPE, 30, method="grid")
    assert _inside(L_SHAPE, l_locs) and len(l_locs) <= 30


def test_unreachable_aoi_returns_fewer_after_max_tries() -> None:
    far = box(0.0, 0.0, 0.001, 0.001)
    locs = sample_locations(far, 5, method="gaussian", centers=[(50.0, 50.0)], max_tries=200)
    assert locs == []


def test_aoi_precedence_geojson_then_bbox_then_footprints() -> None:
    feature = {"type": "Feature", "geometry": box(1, 1, 2, 2).__geo_interface__}
    collection = {"type": "FeatureCollection", "features": [feature]}
    footprint = box(5, 5, 6, 6).__geo_interface__
    assert aoi_from((0, 0, 3, 3), feature, [footprint]).equals(box(1, 1, 2, 2))
    assert aoi_from(None, collection, []).equals(box(1, 1, 2, 2))
    assert aoi_from((0, 0, 3, 3), None, [footprint]).equals(box(0, 0, 3, 3))
    assert aoi_from(None, None, [footprint]).equals(box(5, 5, 6, 6))
    with pytest.raises(ValueError, match="no AOI"):
        aoi_from(None, None, [])


def test_spatial_split_is_stable_per_block_and_near_the_fraction() -> None:
    rng = np.random.default_rng(0)
    points = rng.uniform([-10.0, 30.0], [10.0, 50.0], size=(20_000, 2))
    first = [spatial_split(lon, lat, 0.2) for lon, lat in points]
    assert first == [spatial_split(lon, lat, 0.2) for lon, lat in points]  # stable across calls
    assert abs(first.count("val") / len(first) - 0.2) < 0.03
    # two points of one 0.05° block always land on the same side
    assert spatial_split(3.001, 40.001, 0.2) == spatial_split(3.049, 40.049, 0.2)


def test_spatial_split_extremes() -> None:
    assert spatial_split(1.0, 2.0, 0.0) == "train"
    assert spatial_split(1.0, 2.0, 1.0) == "val"


def test_uniform_over_scattered_parts_fills_n_and_weighs_parts_by_area() -> None:
    # two tiles ~1000 km apart, the second with 3x the area: drawing in the union's bounding box
    # would land inside with probability ~1e-4 and return almost nothing within max_tries
    small, large = box(0.0, 0.0, 0.05, 0.05), box(10.0, 10.0, 10.05, 10.15)
    aoi = small.union(large)
    locs = sample_locations(aoi, 400, method="uniform", seed=3, max_tries=2000)
    assert len(locs) == 400 and _inside(aoi, locs)
    in_large = sum(large.contains(Point(p.lon, p.lat)) for p in locs)
    assert 0.68 < in_large / len(locs) < 0.82  # 3/4 of the area, binomial sd ~0.02
    assert sample_locations(aoi, 400, method="uniform", seed=3, max_tries=2000) == locs
