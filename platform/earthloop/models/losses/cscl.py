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

* every label value ``>= 0`` is an ordinary class, **including 0** (background / "unknown" in
  crop-type maps). The reference code (michaeltrs/DeepSatModels) does the same: its "unknown"
  class is a class like any other in the CSCL targets. Background matters here: parcel-vs-
  background borders are most of the borders in a crop map (on the demo rasters 80 % of the
  different-label neighbour pairs), and they are what CSCL exists to sharpen;
* negative labels are "no label here": pixels under cloud, and every pixel of a chip whose labels
  the run may not use (:class:`earthloop.pretrain.methods.LabelledSubset`). Such query pixels
  are excluded, and so are in-image window positions with such a label (unknown target);
* ``ignore_index`` (default ``None``) additionally marks one class value as unlabelled, for label
  maps where a value really means "not annotated"; it must be set explicitly;
* window positions outside the image count as negatives (``y = 0``), as in the reference code
  (which pads the label map with a value no class has): their keys are the zero-padded key plus a
  position embedding.
"""

from __future__ import annotations

import torch
from torch import Tensor

from earthloop.models.heads import unfold_window

__all__ = ["cscl_loss", "cscl_targets", "labelled_pixels"]


def labelled_pixels(labels: Tensor, ignore_index: int | None = None) -> Tensor:
    """``(B, H, W)`` bool: pixels with a usable label (``>= 0`` and not ``ignore_index``)."""
    ok = labels >= 0
    if ignore_index is not None:
        ok &= labels != ignore_index
    return ok


def cscl_targets(
    labels: Tensor, kernel_size: int, dilation: int = 1, *, ignore_index: int | None = None
) -> tuple[Tensor, Tensor]:
    """Targets and weights mask for CSCL.

    Args:
        labels: ``(B, H, W)`` long class ids; negative values are unlabelled pixels.
        kernel_size: window side ``k`` (odd).
        dilation: window dilation.
        ignore_index: a class value to treat as unlabelled as well (``None``: every value
            ``>= 0``, background 0 included, is a class).

    Returns:
        ``(y, mask)``, both ``(B, k*k, H, W)`` bool: ``y`` is ``[label_i == label_j]`` (False
        outside the image), ``mask`` marks the (query, window slot) pairs that enter the mean.
    """
    if labels.ndim != 3:
        raise ValueError(f"labels must be (B, H, W), got {tuple(labels.shape)}")
    known = labelled_pixels(labels, ignore_index)
    lab = labels.unsqueeze(1).to(torch.float32)  # exact for class ids below 2**24
    neigh = unfold_window(lab, kernel_size, dilation)[:, 0]  # (B, K, H, W)
    inside = unfold_window(torch.ones_like(lab), kernel_size, dilation)[:, 0] > 0.5
    neigh_known = unfold_window(known.unsqueeze(1).float(), kernel_size, dilation)[:, 0] > 0.5
    neigh_unknown = inside & ~neigh_known
    y = inside & neigh_known & (neigh == lab)
    mask = known.unsqueeze(1) & ~neigh_unknown
    return y, mask


def cscl_loss(
    similarity: Tensor,
    labels: Tensor,
    *,
    kernel_size: int,
    dilation: int = 1,
    pos_weight: float = 0.125,
    ignore_index: int | None = None,
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
    # no branch on the count (reading it would wait for the device): with no labelled pair the
    # sum is 0, divided by 1
    return (per_pair * m).sum() / m.sum().clamp(min=1.0)
