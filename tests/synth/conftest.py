"""Shared fixtures: small synthetic archives built once per test session.

Building the ``tiny`` preset takes a couple of seconds, so every archive here is session-scoped
and tests only read from it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
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
    return generate(tmp_path_factory.mktemp("tiny_clear"), preset="tiny", seed=0, cloud_cover=(0.01,))


def read(path: Path | str) -> np.ndarray:
    with rasterio.open(path) as ds:
        arr: np.ndarray = ds.read(1)
    return arr


class ArchiveReader:
    """Reflectance/SCL/labels of an archive, the way a downstream reader would compute them."""

    def __init__(self, manifest: SynthManifest) -> None:
        self.m = manifest
        self.item = cache(self._item)
        self.reflectance = cache(self._reflectance)
        self.scl10 = cache(self._scl10)
        self.label = cache(self._label)

    def _item(self, scene: SceneRecord) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(scene.item_path.read_text())
        return data

    def _reflectance(self, scene: SceneRecord, key: str) -> np.ndarray:
        item = self.item(scene)
        rad = radiometry_for_asset(item["assets"][key], item["properties"])
        return to_reflectance(read(scene.assets[key]), rad)

    def _scl10(self, scene: SceneRecord) -> np.ndarray:
        scl = read(scene.assets["scl"])
        return np.repeat(np.repeat(scl, 2, axis=0), 2, axis=1)

    def _label(self, tile: str, name: str) -> np.ndarray:
        return read(getattr(self.m.labels[tile], name))

    def clear10(self, scene: SceneRecord) -> np.ndarray:
        """Pixels a careful reader would use: not nodata, cloud, shadow or dark area."""
        return ~np.isin(self.scl10(scene), [0, 1, 2, 3, 8, 9, 10])

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
