"""Shared fixtures: small synthetic archives built once per test session.

Building the ``tiny`` preset takes a couple of seconds, so every archive here is session-scoped
and tests only read from it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from earthloop.s2.radiometry import radiometry_for_asset, to_reflectance
from earthloop.synth import SceneRecord, SynthManifest, generate


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> SynthManifest:
    return generate(tmp_path_factory.mktemp("tiny_a"), preset="tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_again(tmp_path_factory: pytest.TempPathFactory) -> SynthManifest:
    """Same preset and seed, different directory: must be identical data."""
    return generate(tmp_path_factory.mktemp("tiny_b"), preset="tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_seed1(tmp_path_factory: pytest.TempPathFactory) -> SynthManifest:
    return generate(tmp_path_factory.mktemp("tiny_seed1"), preset="tiny", seed=1)


@pytest.fixture(scope="session")
def tiny_clear(tmp_path_factory: pytest.TempPathFactory) -> SynthManifest:
    """Nearly cloud-free variant: measures the class signal, not the cloud masking."""
    return generate(
        tmp_path_factory.mktemp("tiny_clear"), preset="tiny", seed=0, cloud_cover=(0.01,)
    )


def read(path: Path | str) -> np.ndarray:
    with rasterio.open(path) as ds:
        arr: np.ndarray = ds.read(1)
    return arr


class ArchiveReader:
    """Reflectance/SCL/labels of an archive, the way a downstream reader would compute them."""

    def __init__(self, manifest: SynthManifest) -> None:
        self.m = manifest
        self._cache: dict[tuple[str, ...], Any] = {}

    def _cached(self, key: tuple[str, ...], make: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def item(self, scene: SceneRecord) -> dict[str, Any]:
        return self._cached(
            ("item", scene.item_id), lambda: json.loads(scene.item_path.read_text())
        )

    def reflectance(self, scene: SceneRecord, key: str) -> np.ndarray:
        def make() -> np.ndarray:
            item = self.item(scene)
            rad = radiometry_for_asset(item["assets"][key], item["properties"])
            return to_reflectance(read(scene.assets[key]), rad)

        return self._cached(("refl", scene.item_id, key), make)

    def scl(self, scene: SceneRecord) -> np.ndarray:
        return self._cached(("scl", scene.item_id), lambda: read(scene.assets["scl"]))

    def scl10(self, scene: SceneRecord) -> np.ndarray:
        return np.repeat(np.repeat(self.scl(scene), 2, axis=0), 2, axis=1)

    def label(self, tile: str, name: str) -> np.ndarray:
        return self._cached(("label", tile, name), lambda: read(getattr(self.m.labels[tile], name)))

    def clear10(self, scene: SceneRecord) -> np.ndarray:
        """Pixels a careful reader would use: not nodata, cloud, shadow or dark area."""
        return ~np.isin(self.scl10(scene), [0, 1, 2, 3, 8, 9, 10])

    def interior(self, tile: str, cls: int) -> np.ndarray:
        """Land-cover ``cls`` pixels whose 4 neighbours share the class: no mixed pixels."""
        lc = self.label(tile, "landcover") == cls
        inner = lc.copy()
        inner[1:] &= lc[:-1]
        inner[:-1] &= lc[1:]
        inner[:, 1:] &= lc[:, :-1]
        inner[:, :-1] &= lc[:, 1:]
        return inner

    def scenes(self, tile: str | None = None) -> list[SceneRecord]:
        return [s for s in self.m.scenes if tile is None or s.tile == tile]

    def ndvi(self, scene: SceneRecord) -> np.ndarray:
        red, nir = self.reflectance(scene, "red"), self.reflectance(scene, "nir")
        out: np.ndarray = (nir - red) / (nir + red)
        return out


@pytest.fixture(scope="session")
def tiny_reader(tiny: SynthManifest) -> ArchiveReader:
    return ArchiveReader(tiny)


@pytest.fixture(scope="session")
def clear_reader(tiny_clear: SynthManifest) -> ArchiveReader:
    return ArchiveReader(tiny_clear)


@pytest.fixture(scope="session")
def reader_factory() -> Callable[[SynthManifest], ArchiveReader]:
    return ArchiveReader
