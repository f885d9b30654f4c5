"""Predictions of a trained task model: what prediction maps and the labeling loop call.

Kept out of :mod:`earthloop.finetune` so that using a model never imports how it was trained
(Ray Tune, the sweep's tables), and out of the training loop so that evaluation during
fine-tuning and prediction afterwards are the same code: a score in the sweep's report is a
score of exactly these predictions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from earthloop.models.normalise import normalise
from earthloop.models.task import TaskModel, class_mask

__all__ = ["predict", "predict_raw"]


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
    mask = class_mask(model.task, model.num_outputs, class_ids)
    outs = []
    for i in range(0, len(images), batch):
        logits = model(torch.from_numpy(images[i : i + batch]))
        if model.task == "multilabel":
            outs.append(logits.float().numpy())
            continue
        shape = [1, -1] + [1] * (logits.ndim - 2)
        logits = logits.masked_fill(~mask.view(shape), -1e4)
        outs.append(logits.argmax(dim=1).numpy())
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
