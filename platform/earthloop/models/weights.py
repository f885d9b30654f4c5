"""One-file export/import of pretrained backbones, and loading of external checkpoints.

A backbone is only reusable together with how its input was prepared: which bands in which order
and the per-band normalisation. A state_dict alone silently "works" with the wrong band order (the
first conv just sees different data), so the exported file carries that metadata and
:func:`load_backbone` checks it::

    {"format": "earthloop.backbone", "format_version": 1, "arch": "resnet18", "in_channels": 4,
     "bands": ["B02", ...], "mean": [...], "std": [...], "method": "seco", "extra": {...},
     "state_dict": {...}}

Methods whose loss acts on a U-Net decoder's output (dense contrast, CSCL) export that decoder
too (format version 2): ``"decoder_channels": [...]`` and ``"decoder_state_dict": {...}`` beside
the encoder. :func:`load_unet` rebuilds encoder + decoder for fine-tuning, which then only adds
a fresh output layer; :func:`load_backbone` reads the encoder of either version. A file without
a decoder is still written as version 1, so older readers keep loading encoder-only exports.

The file is a plain ``torch.save`` of that dict, loadable with ``weights_only=True`` (no pickled
code), and written atomically so a crashed export never leaves a truncated file.

:func:`load_external_state_dict` adapts third-party checkpoints (e.g. the SeCo ResNet-18 weights a
user downloaded via TorchGeo, a MoCo/Lightning checkpoint or the SeCo reference checkpoint whose
encoder is an ``nn.Sequential``) to our parameter names and reports what did not map.
"""

from __future__ import annotations

import importlib
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from earthloop.models.backbones import Backbone, build_backbone
from earthloop.models.unet import UNet, UNetDecoder

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "ExternalLoadReport",
    "load_backbone",
    "load_external_state_dict",
    "load_unet",
    "save_backbone",
]

FORMAT = "earthloop.backbone"
FORMAT_VERSION = 2  # 2: may carry the U-Net decoder; 1: encoder only (still written without one)

PathLike = str | os.PathLike[str]

# Wrappers that training code puts in front of the encoder's parameter names.
_PREFIXES = ("module.", "model.", "encoder_q.", "backbone.", "encoder.")
# torchvision ResNet children order, used by ``nn.Sequential(*list(resnet.children())[:-1])``
# encoders such as SeCo's reference code: 0 conv1, 1 bn1, 2 relu, 3 maxpool, 4-7 layer1-4.
_SEQUENTIAL_NAMES = {
    "0": "conv1",
    "1": "bn1",
    "4": "layer1",
    "5": "layer2",
    "6": "layer3",
    "7": "layer4",
}


def _canonical_band(name: str) -> str:
    try:
        from earthloop.s2.bands import resolve_band

        return resolve_band(name).name
    except (ImportError, KeyError):
        return name.strip().upper()


def _check_plain(value: Any, where: str) -> None:
    """Metadata must survive ``torch.load(weights_only=True)``: primitives and containers only."""
    if value is None or isinstance(value, str | int | float | bool):
        return
    if isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where} keys must be str, got {k!r}")
            _check_plain(v, f"{where}[{k!r}]")
        return
    raise TypeError(
        f"{where} holds a {type(value).__name__}; only str/int/float/bool/None/list/dict are stored"
    )


def save_backbone(
    path: PathLike,
    backbone: Backbone,
    *,
    arch: str,
    bands: Sequence[str],
    mean: Sequence[float],
    std: Sequence[float],
    method: str,
    extra: dict[str, Any] | None = None,
    decoder: UNetDecoder | None = None,
) -> Path:
    """Write ``backbone`` with its input contract to ``path`` (parents created); returns the path.

    ``decoder``: the U-Net decoder pretrained on top of ``backbone`` (dense contrast, CSCL), stored
    with its widths so fine-tuning can restore it (:func:`load_unet`).
    """
    if getattr(backbone, "arch", arch) != arch:
        raise ValueError(f"arch={arch!r} but the backbone was built as {backbone.arch!r}")
    n = backbone.in_channels
    if not (len(bands) == len(mean) == len(std) == n):
        raise ValueError(
            f"backbone takes {n} bands but got {len(bands)} band names, {len(mean)} means, {len(std)} stds"
        )
    if any(float(s) <= 0 for s in std):
        raise ValueError("every std must be > 0")
    extra = dict(extra or {})
    _check_plain(extra, "extra")
    payload: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": arch,
        "in_channels": n,
        "bands": [str(b) for b in bands],
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
        "method": method,
        "extra": extra,
        "state_dict": _cpu(backbone.state_dict()),
    }
    if decoder is not None:
        payload["format_version"] = 2
        payload["decoder_channels"] = list(decoder.channels)
        payload["decoder_state_dict"] = _cpu(decoder.state_dict())
    else:
        payload["format_version"] = 1
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=out.name + ".", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


# Classes a third-party training checkpoint pickles next to its tensors (Lightning hparams,
# numpy scalars in metrics) that rebuild without running code of the file's choosing.
_TRUSTABLE_GLOBALS = frozenset(
    {
        "argparse.Namespace",
        "collections.OrderedDict",
        "collections.defaultdict",
        "builtins.set",
        "pathlib.PosixPath",
        "pathlib.PurePosixPath",
        "numpy.dtype",
        "numpy.core.multiarray.scalar",
        "numpy._core.multiarray.scalar",
        "numpy.core.multiarray._reconstruct",
        "numpy._core.multiarray._reconstruct",
        "numpy.ndarray",
    }
)


def _load_file(path: PathLike, *, trust_pickle: bool = False) -> Any:
    """Load a weight file without ever executing code from it.

    ``weights_only=True`` first. A foreign checkpoint that pickles extra objects is refused
    unless the caller passes ``trust_pickle=True``; even then only the globals in
    :data:`_TRUSTABLE_GLOBALS` are allowed (still ``weights_only``), and any other one is named
    in the error instead of being imported.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:
        if not trust_pickle:
            raise ValueError(
                f"{path} cannot be read with weights_only=True ({type(exc).__name__}: {exc}); it "
                "contains pickled objects. Pass trust_pickle=True only if you trust its source."
            ) from exc
    found = set(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    unknown = sorted(found - _TRUSTABLE_GLOBALS)
    if unknown:
        raise ValueError(
            f"{path} pickles {unknown}, which earthloop does not rebuild (they could run code); "
            "save the state_dict alone and load that"
        )
    allowed = [_import_global(name) for name in sorted(found)]
    with torch.serialization.safe_globals(allowed):
        return torch.load(path, map_location="cpu", weights_only=True)


def _import_global(name: str) -> Any:
    module, _, attr = name.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def _cpu(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().cpu().clone() for k, v in state.items()}


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, Tensor) for v in obj.values())
    )


def load_backbone(
    path_or_state_dict: PathLike | Mapping[str, Any],
    *,
    expected_bands: Sequence[str] | None = None,
    arch: str | None = None,
) -> tuple[Backbone, dict[str, Any]]:
    """Rebuild a backbone exported by :func:`save_backbone`; returns ``(backbone, meta)``.

    Also accepts the loaded payload dict, or a bare backbone state_dict (then ``arch`` is required
    and ``meta`` only has ``arch``/``in_channels``). ``expected_bands`` (any Sentinel-2 alias,
    e.g. ``"red"`` or ``"B04"``) and ``arch`` are checked against the file with clear errors.
    ``meta`` holds everything but the weights.
    """
    obj: Any = path_or_state_dict
    if isinstance(obj, str | os.PathLike):
        obj = _load_file(obj)
    return _backbone_from(obj, expected_bands, arch)


def _backbone_from(
    obj: Any, expected_bands: Sequence[str] | None, arch: str | None
) -> tuple[Backbone, dict[str, Any]]:
    if not isinstance(obj, Mapping):
        raise ValueError(f"expected a dict payload or state_dict, got {type(obj).__name__}")
    if obj.get("format") == FORMAT:
        version = int(obj.get("format_version", 0))
        if version > FORMAT_VERSION:
            raise ValueError(
                f"backbone file format v{version} is newer than this code (v{FORMAT_VERSION})"
            )
        meta = {k: v for k, v in obj.items() if k not in ("state_dict", "decoder_state_dict")}
        state = obj["state_dict"]
    elif _is_state_dict(obj):
        if arch is None:
            raise ValueError("a bare state_dict has no metadata: pass arch=")
        if "conv1.weight" not in obj:
            raise ValueError(
                "state_dict has no conv1.weight; use load_external_state_dict for foreign checkpoints"
            )
        meta = {"arch": arch, "in_channels": int(obj["conv1.weight"].shape[1])}
        state = obj
    else:
        raise ValueError("not an earthloop backbone file (missing format marker) nor a state_dict")

    if arch is not None and meta["arch"] != arch:
        raise ValueError(f"architecture mismatch: file holds {meta['arch']!r}, expected {arch!r}")
    in_channels = int(meta["in_channels"])
    if expected_bands is not None:
        expected = [_canonical_band(b) for b in expected_bands]
        if len(expected) != in_channels:
            raise ValueError(
                f"band-count mismatch: weights were trained on {in_channels} bands "
                f"{meta.get('bands')}, but {len(expected)} bands were expected {list(expected_bands)}"
            )
        stored = meta.get("bands")
        if stored is not None:
            got = [_canonical_band(b) for b in stored]
            if got != expected:
                raise ValueError(
                    f"band mismatch: weights were trained on bands {got} (in that order), expected {expected}"
                )
    backbone = build_backbone(str(meta["arch"]), in_channels)
    backbone.load_state_dict(state, strict=True)
    return backbone, meta


def load_unet(
    path_or_payload: PathLike | Mapping[str, Any],
    *,
    expected_bands: Sequence[str] | None = None,
    arch: str | None = None,
) -> tuple[UNet, dict[str, Any]]:
    """Rebuild encoder *and* pretrained decoder of an export; returns ``(unet, meta)``.

    The encoder is checked as in :func:`load_backbone`; the decoder is built with the stored
    widths and loaded strictly. ``meta["decoder_loaded"]`` says whether the file had a decoder
    (an encoder-only export gives a U-Net with a fresh decoder).

    Raises:
        ValueError: band/architecture mismatch, or a decoder that does not fit its widths.
    """
    obj: Any = path_or_payload
    if isinstance(obj, str | os.PathLike):
        obj = _load_file(obj)
    backbone, meta = _backbone_from(obj, expected_bands, arch)
    dec_state = obj.get("decoder_state_dict") if isinstance(obj, Mapping) else None
    channels = meta.get("decoder_channels")
    unet = UNet(backbone, channels if dec_state is not None else None)
    if dec_state is not None:
        try:
            unet.decoder.load_state_dict(dec_state, strict=True)
        except RuntimeError as exc:
            raise ValueError(
                f"the exported decoder does not fit its widths {channels}: {exc}"
            ) from None
    meta["decoder_loaded"] = dec_state is not None
    return unet, meta


@dataclass
class ExternalLoadReport:
    """What :func:`load_external_state_dict` did with a foreign checkpoint."""

    missing_keys: list[str] = field(default_factory=list)
    """Backbone parameters/buffers not found in the checkpoint (left at their initial values)."""
    unexpected_keys: list[str] = field(default_factory=list)
    """Checkpoint entries (after renaming) that are not backbone parameters."""
    dropped_keys: list[str] = field(default_factory=list)
    """Entries removed on purpose: ``fc.*`` classifiers and other sub-models (key encoder, heads)."""
    stripped_prefixes: list[str] = field(default_factory=list)

    @property
    def loaded_all(self) -> bool:
        return not self.missing_keys


def _unwrap(obj: Any) -> Mapping[str, Any]:
    for key in ("state_dict", "model_state_dict", "model", "net"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            inner = obj[key]
            if any(isinstance(v, Tensor) for v in inner.values()):
                return _unwrap(inner)
    if not isinstance(obj, Mapping):
        raise ValueError(f"checkpoint is a {type(obj).__name__}, not a state_dict")
    return obj


def _normalise_keys(raw: Mapping[str, Any], report: ExternalLoadReport) -> dict[str, Tensor]:
    """Rename checkpoint entries to backbone names; dropped entries are reported by original name."""
    report.dropped_keys.extend(k for k, v in raw.items() if not isinstance(v, Tensor))
    # current name -> (original name, tensor)
    sd = {k: (k, v) for k, v in raw.items() if isinstance(v, Tensor)}
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if any(k.startswith(prefix) for k in sd):
                report.stripped_prefixes.append(prefix)
                report.dropped_keys.extend(
                    orig for k, (orig, _) in sd.items() if not k.startswith(prefix)
                )
                sd = {k[len(prefix) :]: e for k, e in sd.items() if k.startswith(prefix)}
                changed = True
                break
    if "conv1.weight" not in sd and "0.weight" in sd:
        renamed: dict[str, tuple[str, Tensor]] = {}
        for k, e in sd.items():
            head, _, rest = k.partition(".")
            if head in _SEQUENTIAL_NAMES:
                renamed[f"{_SEQUENTIAL_NAMES[head]}.{rest}"] = e
            else:
                report.dropped_keys.append(e[0])
        sd = renamed
    report.dropped_keys.extend(orig for k, (orig, _) in sd.items() if k.startswith("fc."))
    return {k: v for k, (_, v) in sd.items() if not k.startswith("fc.")}


def load_external_state_dict(
    path: PathLike | Mapping[str, Any],
    arch: str,
    in_channels: int,
    *,
    trust_pickle: bool = False,
) -> tuple[Backbone, ExternalLoadReport]:
    """Build ``arch`` for ``in_channels`` bands and load a foreign checkpoint into it.

    Handles checkpoints nested under ``state_dict``/``model``, parameter names prefixed with
    ``module.``, ``model.``, ``encoder_q.``, ``backbone.`` or ``encoder.`` (MoCo/Lightning/DDP
    wrappers; when a prefix is present, entries without it — key encoder, heads, queues — are
    dropped), torchvision-``Sequential`` numbering, and strips ``fc.*``. Raises ``ValueError``
    when the first conv expects a different number of bands (naming both counts), when other
    shapes disagree (wrong ``arch``), or when nothing matched. Missing/unexpected keys are
    reported, not fatal.
    """
    raw = (
        _load_file(path, trust_pickle=trust_pickle) if isinstance(path, str | os.PathLike) else path
    )
    report = ExternalLoadReport()
    sd = _normalise_keys(_unwrap(raw), report)
    backbone = build_backbone(arch, in_channels)
    own = backbone.state_dict()
    conv = sd.get("conv1.weight")
    if conv is not None and conv.ndim == 4 and conv.shape[1] != in_channels:
        raise ValueError(
            f"first conv mismatch: the checkpoint's conv1 takes {conv.shape[1]} input bands, "
            f"but in_channels={in_channels} was requested"
        )
    bad = [
        f"{k}: checkpoint {tuple(v.shape)} vs {arch} {tuple(own[k].shape)}"
        for k, v in sd.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    if bad:
        raise ValueError(
            f"checkpoint does not fit {arch!r} ({len(bad)} shape mismatches), e.g. "
            + "; ".join(bad[:3])
        )
    matched = [k for k in sd if k in own]
    if not matched:
        raise ValueError(
            f"no checkpoint entry matches a {arch!r} parameter name (first keys: {list(sd)[:5]})"
        )
    result = backbone.load_state_dict(sd, strict=False)
    report.missing_keys = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    report.unexpected_keys = list(result.unexpected_keys)
    return backbone, report
