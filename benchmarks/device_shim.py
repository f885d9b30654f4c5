"""Placeholders for the storage stack on a machine that only computes (a lent GPU box).

A GPU machine lent for a few minutes has torch but not rasterio, deltalake or Ray, and cannot
reach the chips anyway: ``label_efficiency.py --bundle`` brings the pixels with it. earthloop's
modules still import those packages at module level, so this installs an import hook that
answers each *missing* one with a placeholder module. Any use of a placeholder (a call, an
instance) raises an error naming the package, so a code path that really needs storage fails
loudly instead of computing something else. Packages that are installed are never shadowed.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import types
from collections.abc import Sequence
from typing import Any

STORAGE_STACK = (
    "deltalake",
    "rasterio",
    "ray",
    "pystac",
    "pystac_client",
    "rio_cogeo",
    "faiss",
    "label_studio_sdk",
    "shapely",
    "affine",
    "pyproj",
)


class _MissingMeta(type):
    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _missing(f"{cls.__qualname__}.{name}")

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        raise ModuleNotFoundError(
            f"{cls.__qualname__}: its package is not installed on this machine (device_shim "
            "placeholder); this code path needs the storage stack"
        )


def _missing(qualname: str) -> type:
    # an Exception subclass, so ``except (CommitFailedError, ...)`` clauses still compile and
    # never match anything real; subclassable, so ``class X(Callback)`` imports
    cls = _MissingMeta(qualname.rsplit(".", 1)[-1], (Exception,), {"__module__": "device_shim"})
    cls.__qualname__ = qualname
    return cls


class _Placeholder(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _missing(f"{self.__name__}.{name}")


class _Loader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        mod = _Placeholder(spec.name)
        mod.__path__ = []  # a package: its submodules are placeholders too
        return mod

    def exec_module(self, module: types.ModuleType) -> None:
        return None


class _Finder(importlib.abc.MetaPathFinder):
    def __init__(self, roots: set[str]) -> None:
        self.roots = roots

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if name.split(".")[0] not in self.roots:
            return None
        return importlib.machinery.ModuleSpec(name, _Loader(), is_package=True)


def install(packages: Sequence[str] = STORAGE_STACK) -> list[str]:
    """Placeholders for each of ``packages`` that cannot be imported here; returns their names.

    ``EARTHLOOP_SHIM_FORCE=1`` placeholders them even where installed: how the bundle path is
    tested on a machine that has the whole stack.
    """
    force = os.environ.get("EARTHLOOP_SHIM_FORCE") == "1"
    roots = {p for p in packages if force or importlib.util.find_spec(p) is None}
    if roots:
        sys.meta_path.insert(0, _Finder(roots))
    return sorted(roots)
