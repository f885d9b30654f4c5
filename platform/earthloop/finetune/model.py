"""Initialisations of the task model's encoder, checked, and its discriminative learning rates.

The task model itself is :class:`earthloop.models.task.TaskModel` (used after fine-tuning too).
Every initialisation is checked on the driver before a trial is scheduled: a backbone trained on
other bands or as another architecture would otherwise fail (or worse, silently run with
shuffled band semantics) inside every trial of the sweep.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from earthloop.config import InitSpec, resolve_path
from earthloop.models import (
    UNet,
    build_backbone,
    load_backbone,
    load_external_state_dict,
    load_unet,
)
from earthloop.models.backbones import Backbone
from earthloop.models.task import TaskModel
from earthloop.store.delta import read_table, table_exists
from earthloop.store.fs import is_remote, read_bytes

log = logging.getLogger("earthloop.finetune")

__all__ = [
    "IncompatibleCheckpointError",
    "ResolvedInit",
    "build_encoder",
    "param_groups",
    "resolve_init",
]


class IncompatibleCheckpointError(ValueError):
    """An initialisation cannot serve the requested bands/architecture (or cannot be read)."""


@dataclass
class ResolvedInit:
    """An initialisation checked against the sweep's bands and architecture."""

    name: str
    kind: str  # random | earthloop | external
    path: str | None
    arch: str
    bands: list[str]
    mean: list[float] | None  # None: use train-split statistics
    std: list[float] | None
    method: str  # seco / dense / cscl / random / external
    allow_missing_keys: bool = False
    decoder: bool = False  # the file carries a pretrained U-Net decoder (dense, CSCL)


def _lookup_run(cfg: Any, run: str) -> str:
    uri = cfg.table_uri("pretrain_runs")
    if not table_exists(uri):
        raise IncompatibleCheckpointError(
            f"no pretraining runs table at {uri} (looking for {run!r})"
        )
    rows = [r for r in read_table(uri).to_pylist() if r["run_name"] == run]
    if not rows or not rows[-1].get("backbone_path"):
        raise IncompatibleCheckpointError(
            f"pretraining run {run!r} has no exported backbone in {uri}"
        )
    return str(rows[-1]["backbone_path"])


def _weights_source(path: str) -> Any:
    """What ``load_backbone``/``load_external_state_dict`` should read: a local path as is, a
    remote file (``s3://``, e.g. a ``pretrain_runs`` backbone on S3) as its loaded payload.

    The models package reads local files only; here the bytes come through
    :mod:`earthloop.store.fs` and load with ``weights_only=True`` (no pickled code from storage).
    """
    if not is_remote(path):
        return path
    try:
        data = read_bytes(path)
    except FileNotFoundError:
        raise IncompatibleCheckpointError(f"{path}: checkpoint file not found") from None
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise IncompatibleCheckpointError(
            f"{path}: cannot be read with weights_only=True ({type(exc).__name__}: {exc})"
        ) from None


def resolve_init(spec: InitSpec, arch: str, bands: Sequence[str], cfg: Any = None) -> ResolvedInit:
    """Check one initialisation against ``arch``/``bands``; errors name the init and the problem."""
    bands = list(bands)
    if spec.kind == "random":
        return ResolvedInit(spec.name, "random", None, arch, bands, spec.mean, spec.std, "random")
    if spec.run is not None:
        path = _lookup_run(cfg, spec.run)
    else:
        assert spec.path is not None
        path = resolve_path(spec.path)
    where = f"init {spec.name!r} ({path})"
    if not Path(path).exists() and "://" not in path:
        raise IncompatibleCheckpointError(f"{where}: checkpoint file not found")
    if spec.kind == "earthloop":
        try:
            _, meta = load_backbone(_weights_source(path), expected_bands=bands, arch=arch)
        except (ValueError, RuntimeError, KeyError) as exc:
            raise IncompatibleCheckpointError(f"{where}: {exc}") from None
        mean = spec.mean or meta.get("mean")
        std = spec.std or meta.get("std")
        return ResolvedInit(
            spec.name,
            "earthloop",
            path,
            arch,
            bands,
            list(mean) if mean else None,
            list(std) if std else None,
            str(meta.get("method", "earthloop")),
            decoder=meta.get("decoder_channels") is not None,
        )
    try:
        _, report = load_external_state_dict(_weights_source(path), arch, len(bands))
    except (ValueError, RuntimeError, KeyError) as exc:
        raise IncompatibleCheckpointError(f"{where}: {exc}") from None
    if report.missing_keys and not spec.allow_missing_keys:
        raise IncompatibleCheckpointError(
            f"{where}: the checkpoint leaves {len(report.missing_keys)} {arch} parameters "
            f"uninitialised (e.g. {report.missing_keys[:3]}); it is probably another "
            "architecture. Set allow_missing_keys: true on this init to accept it."
        )
    return ResolvedInit(
        spec.name,
        "external",
        path,
        arch,
        bands,
        spec.mean,
        spec.std,
        "external",
        spec.allow_missing_keys,
    )


def build_encoder(init: ResolvedInit) -> Backbone | UNet:
    """The pretrained network a trial starts from (loaded in the worker).

    A bare encoder, or, when the initialisation exported its U-Net decoder too (dense contrast,
    CSCL), encoder + pretrained decoder: :class:`TaskModel` then adds only a fresh output layer
    for segmentation (and takes the encoder alone for classification).
    """
    if init.kind == "random":
        return build_backbone(init.arch, len(init.bands))
    assert init.path is not None
    if init.kind == "earthloop":
        source = _weights_source(init.path)
        if init.decoder:
            unet, _ = load_unet(source, expected_bands=init.bands, arch=init.arch)
            return unet
        backbone, _ = load_backbone(source, expected_bands=init.bands, arch=init.arch)
        return backbone
    backbone, _ = load_external_state_dict(_weights_source(init.path), init.arch, len(init.bands))
    return backbone


def param_groups(
    model: TaskModel, lr: float, weight_decay: float, encoder_lr_mult: float
) -> list[dict[str, Any]]:
    """Discriminative learning rates: encoder at ``lr * encoder_lr_mult``, the rest at ``lr``.

    Biases and normalisation weights get no weight decay (decaying a BN scale towards 0 only
    fights the normalisation).
    """
    groups: list[dict[str, Any]] = []
    parts = [("head", list(model.head_parameters()), lr)]
    if not model.frozen:
        parts.insert(0, ("encoder", list(model.encoder_parameters()), lr * encoder_lr_mult))
    for name, params, group_lr in parts:
        params = [p for p in params if p.requires_grad]
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        if decay:
            groups.append(
                {"params": decay, "lr": group_lr, "weight_decay": weight_decay, "name": f"{name}"}
            )
        if no_decay:
            groups.append(
                {
                    "params": no_decay,
                    "lr": group_lr,
                    "weight_decay": 0.0,
                    "name": f"{name}_no_decay",
                }
            )
    return groups


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


def set_threads(cpus: float) -> None:
    """One torch thread per CPU the trial was given: oversubscribing 2 cores costs more than it buys."""
    torch.set_num_threads(max(1, int(cpus)))
