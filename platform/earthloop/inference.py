"""Predictions of a trained task model: what prediction maps and the labeling loop call.

Kept out of :mod:`earthloop.finetune` so that using a model never imports how it was trained
(Ray Tune, the sweep's tables), and out of the training loop so that evaluation during
fine-tuning and prediction afterwards are the same code: a score in the sweep's report is a
score of exactly these predictions.

A *task model file* (written by :mod:`earthloop.finetune.export`) is one ``torch.save`` of plain
values and tensors, loadable with ``weights_only=True``: no pickled code ever runs when a model is
loaded from shared storage. Its bytes are read here, through :mod:`earthloop.store.fs` (local or
``s3://``), because :mod:`earthloop.models` stays free of storage::

    {"format": "earthloop.task_model", "format_version": 1, "model_version": ..., "task": ...,
     "arch": ..., "in_channels": C, "num_outputs": K, "classes": [...], "class_ids": [...],
     "bands": [...], "mean": [...], "std": [...], "source": {...}, "state_dict": {...}}
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from earthloop.models.backbones import build_backbone
from earthloop.models.normalise import normalise
from earthloop.models.task import TaskModel, class_mask
from earthloop.models.unet import SegmentationModel
from earthloop.store.fs import read_bytes

__all__ = [
    "TASK_MODEL_FORMAT",
    "TASK_MODEL_FORMAT_VERSION",
    "ModelOutputs",
    "forward_outputs",
    "load_task_model",
    "predict",
    "predict_raw",
    "task_model_from_payload",
]

TASK_MODEL_FORMAT = "earthloop.task_model"
TASK_MODEL_FORMAT_VERSION = 1


@torch.no_grad()
def predict(
    model: TaskModel,
    images: np.ndarray,
    class_ids: Sequence[int] | None = None,
    *,
    batch: int = 64,
) -> np.ndarray:
    """Class maps (segmentation), class ids (classification) or logits (multi-label).

    ``images`` are normalised ``(N, C, H, W)`` float32. Only ``class_ids`` can be predicted
    (default: every logit channel), so the ignore class never wins a pixel. The model's
    training mode is restored afterwards: evaluation in the middle of a training loop must not
    leave it in eval mode.
    """
    was = model.training
    model.eval()
    # the model's own device: a GPU trial evaluates on the GPU, and the result comes back as numpy
    device = next(model.parameters()).device
    mask = class_mask(model.task, model.num_outputs, class_ids).to(device)
    outs = []
    for i in range(0, len(images), batch):
        logits = model(torch.from_numpy(images[i : i + batch]).to(device))
        if model.task == "multilabel":
            outs.append(logits.float().cpu().numpy())
            continue
        shape = [1, -1] + [1] * (logits.ndim - 2)
        logits = logits.masked_fill(~mask.view(shape), -1e4)
        outs.append(logits.argmax(dim=1).cpu().numpy())
    model.train(was)
    return np.concatenate(outs) if outs else np.zeros((0,))


def predict_raw(
    model: TaskModel,
    images: np.ndarray,
    valid: np.ndarray | None,
    mean: Sequence[float],
    std: Sequence[float],
    class_ids: Sequence[int] | None = None,
    *,
    batch: int = 64,
) -> np.ndarray:
    """:func:`predict` on raw reflectances, normalised with the statistics the model was
    trained with (its initialisation's, or the sweep's train-split statistics)."""
    x = normalise(
        torch.from_numpy(np.asarray(images, dtype=np.float32)),
        mean,
        std,
        None if valid is None else torch.from_numpy(np.asarray(valid)),
    )
    return predict(model, x.numpy(), class_ids, batch=batch)


def task_model_from_payload(payload: Mapping[str, Any]) -> tuple[TaskModel, dict[str, Any]]:
    """Rebuild the :class:`TaskModel` of an exported payload; ``meta`` is all but the weights.

    The architecture is rebuilt from the file's own description (arch, bands, outputs) and the
    weights loaded strictly: a file that does not match what it says it is fails here, not
    with silently half-initialised layers.
    """
    if payload.get("format") != TASK_MODEL_FORMAT:
        raise ValueError(f"not an earthloop task model (format {payload.get('format')!r})")
    version = int(payload.get("format_version", 0))
    if version > TASK_MODEL_FORMAT_VERSION:
        raise ValueError(
            f"task model format v{version} is newer than this code (v{TASK_MODEL_FORMAT_VERSION})"
        )
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    encoder = build_backbone(str(meta["arch"]), int(meta["in_channels"]))
    model = TaskModel(str(meta["task"]), encoder, int(meta["num_outputs"]), frozen=False)
    model.load_state_dict(payload["state_dict"], strict=True)
    model.eval()
    return model, meta


def load_task_model(uri: str) -> tuple[TaskModel, dict[str, Any]]:
    """Load an exported task model from a local path or ``s3://`` URI: ``(model, meta)``.

    ``meta`` carries what the model needs to be used correctly (bands in order, mean/std,
    scored ``class_ids`` and their ``classes`` names) and where it came from (sweep, trial,
    chip-index and label versions). The model is returned in eval mode.
    """
    data = read_bytes(uri)
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(
            f"{uri}: not loadable with weights_only=True ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(payload, Mapping):
        raise ValueError(f"{uri}: expected a task model dict, got {type(payload).__name__}")
    return task_model_from_payload(payload)


@dataclass
class ModelOutputs:
    """What the labeling loop keeps of one forward pass (numpy, on the CPU).

    ``probs`` are probabilities over the *scored* classes only, in ``class_ids`` order:
    ``(B, K, H, W)`` for segmentation, ``(B, K)`` for a scene label, independent per-class
    sigmoids ``(B, K)`` for multi-label.
    """

    embedding: np.ndarray  # (B, F) pooled encoder features
    grid: np.ndarray  # (B, D, g, g) coarse per-pixel features
    probs: np.ndarray


def _scored_probs(model: TaskModel, logits: Tensor, class_ids: Sequence[int] | None) -> Tensor:
    """Probabilities over the scored channels: the ignore class takes no probability mass,
    as it never wins a pixel in :func:`predict`."""
    if model.task == "multilabel":
        return torch.sigmoid(logits)
    keep = class_mask(model.task, model.num_outputs, class_ids)
    idx = torch.nonzero(keep).flatten().to(logits.device)
    return torch.softmax(logits.index_select(1, idx).float(), dim=1)


@torch.no_grad()
def forward_outputs(
    model: TaskModel, x: Tensor, class_ids: Sequence[int] | None = None, *, grid_size: int = 8
) -> ModelOutputs:
    """One pass giving the pooled embedding, a coarse feature grid and class probabilities.

    Segmentation: the grid is the U-Net decoder's per-pixel features average-pooled to
    ``grid_size`` squared cells (what a pixel is "seen as" just before the head); scene tasks:
    the encoder's last stage map, pooled the same way. The embedding is always the pooled
    last encoder stage, so it compares across tasks that share an encoder. ``x`` is normalised.
    """
    was = model.training
    model.eval()
    net = model.net
    feats = model.encoder.forward_features(x)
    embedding = model.encoder.pool(feats[-1])
    if isinstance(net, SegmentationModel):
        pixel = net.unet.decoder(feats, (int(x.shape[-2]), int(x.shape[-1])))
        logits = net.head(pixel)
        grid = F.adaptive_avg_pool2d(pixel, grid_size)
    else:
        logits = model(x)
        grid = F.adaptive_avg_pool2d(feats[-1], grid_size)
    probs = _scored_probs(model, logits, class_ids)
    model.train(was)
    return ModelOutputs(
        embedding.float().cpu().numpy(), grid.float().cpu().numpy(), probs.float().cpu().numpy()
    )
