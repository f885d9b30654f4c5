"""Context-self contrastive loss (Tarasiou et al. 2023, "Context-self contrastive pretraining for
crop type semantic segmentation", IEEE TGRS).

CSCL is supervised: for each labelled pixel ``i`` and each position ``j`` of its ``k x k``
(dilated) window, the target is ``y_ij = [label_i == label_j]`` and the prediction is the cosine
similarity ``s_ij`` of ``i``'s query and ``j``'s key embeddings. The loss pulls same-class
neighbours together and pushes different-class ones apart, which sharpens embeddings exactly at
parcel boundaries, where segmentation errors concentrate::

    loss = mean_{i valid, j in window} ( -w * y_ij * s_ij + (1 - y_ij) * s_ij )

with ``w = pos_weight`` (default 0.125: most window positions inside a parcel are positives, so
positives are down-weighted to keep the boundary negatives from being drowned out).

Masking choices:

* query pixels with ``label == ignore_index`` are excluded (unknown class, unknown targets);
* window positions outside the image count as negatives (``y = 0``), as specified for this
  implementation: their keys are the zero-padded key plus a position embedding;
* in-image window positions whose label is ``ignore_index`` are excluded too: their target is
  unknown, and treating unlabelled parcels as "different class" would push them apart wrongly.
"""

from __future__ import annotations

import torch
from torch import Tensor

from earthloop.models.heads import unfold_window

__all__ = ["cscl_loss", "cscl_targets"]


def cscl_targets(
    labels: Tensor, kernel_size: int, dilation: int = 1, *, ignore_index: int = 0
) -> tuple[Tensor, Tensor]:
    """Targets and weights mask for CSCL.

    ``labels``: ``(B, H, W)`` long. Returns ``(y, mask)``, both ``(B, k*k, H, W)``: ``y`` is
    ``[label_i == label_j]`` (False outside the image), ``mask`` marks the (query, window slot)
    pairs that enter the mean.
    """
    if labels.ndim != 3:
        raise ValueError(f"labels must be (B, H, W), got {tuple(labels.shape)}")
    lab = labels.unsqueeze(1).to(torch.float32)  # exact for class ids below 2**24
    neigh = unfold_window(lab, kernel_size, dilation)[:, 0]  # (B, K, H, W)
    inside = unfold_window(torch.ones_like(lab), kernel_size, dilation)[:, 0] > 0.5
    neigh_ignored = inside & (neigh == float(ignore_index))
    y = inside & (neigh == lab)
    query_valid = (labels != ignore_index).unsqueeze(1)
    mask = query_valid & ~neigh_ignored
    return y, mask


def cscl_loss(
    similarity: Tensor,
    labels: Tensor,
    *,
    kernel_size: int,
    dilation: int = 1,
    pos_weight: float = 0.125,
    ignore_index: int = 0,
) -> Tensor:
    """CSCL loss from window similarities ``(B, k*k, H, W)`` (see the module docstring).

    Returns a scalar; 0 (still attached to ``similarity``) when no pixel is labelled.
    """
    if similarity.shape[1] != kernel_size * kernel_size:
        raise ValueError(
            f"similarity has {similarity.shape[1]} window slots, expected {kernel_size**2}"
        )
    y, mask = cscl_targets(labels, kernel_size, dilation, ignore_index=ignore_index)
    yf = y.to(similarity.dtype)
    per_pair = -pos_weight * yf * similarity + (1.0 - yf) * similarity
    m = mask.to(similarity.dtype)
    denom = m.sum()
    if denom == 0:
        return (similarity * 0.0).sum()
    return (per_pair * m).sum() / denom
