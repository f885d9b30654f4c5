"""Evaluation metrics for fine-tuning, in plain numpy (torch tensors are accepted and converted).

Why our own instead of torchmetrics/sklearn: neither is installed beside this torch build, and the
definitions matter for label-efficiency curves (which classes enter a mean, what an ignored pixel
is), so they are spelled out here and pinned by hand-computed tests.

Conventions, shared by every function:

* ``ignore_index`` marks unlabelled pixels (the synthetic labels use 0; clouds are set to it);
  they never enter any count, and the ignore class never enters a mean.
* Means over classes (mIoU, macro F1, mAP) skip classes that are absent from both target and
  prediction (their IoU is 0/0); a class that is predicted but absent counts as IoU 0. Per-class
  values of absent classes are NaN, so a report can tell "absent" from "all wrong".
* Boundary mIoU (the weak spot of per-pixel methods, what CSCL targets) is mIoU restricted to
  pixels within ``k`` pixels (Chebyshev distance) of a class boundary, or of a parcel boundary
  when parcel ids are given. A boundary needs two *labelled* pixels: the edge of an unlabelled
  region is unknown, not a boundary, and the image border is not one either.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "SegmentationMeter",
    "average_precision",
    "boundary_mask",
    "classification_metrics",
    "confusion_matrix",
    "mean_average_precision",
    "metrics_from_confusion",
    "multilabel_metrics",
    "segmentation_metrics",
]


def _np(x: Any) -> np.ndarray:
    """Accept numpy arrays, lists and torch tensors (without importing torch here)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def confusion_matrix(
    pred: Any,
    target: Any,
    num_classes: int,
    *,
    ignore_index: int | None = None,
    mask: Any | None = None,
) -> np.ndarray:
    """``(num_classes, num_classes)`` counts, rows = target, columns = prediction.

    Pixels whose target is ``ignore_index`` or outside ``[0, num_classes)``, and pixels where
    ``mask`` is False, are not counted.
    """
    p = _np(pred).astype(np.int64).ravel()
    t = _np(target).astype(np.int64).ravel()
    if p.shape != t.shape:
        raise ValueError(f"prediction has {p.size} values but target has {t.size}")
    keep = (t >= 0) & (t < num_classes) & (p >= 0) & (p < num_classes)
    if ignore_index is not None:
        keep &= t != ignore_index
    if mask is not None:
        m = _np(mask).astype(bool).ravel()
        if m.shape != t.shape:
            raise ValueError(f"mask has {m.size} values but target has {t.size}")
        keep &= m
    idx = t[keep] * num_classes + p[keep]
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _class_list(
    num_classes: int, ignore_index: int | None, classes: Sequence[int] | None
) -> list[int]:
    if classes is not None:
        return [int(c) for c in classes]
    return [c for c in range(num_classes) if c != ignore_index]


def metrics_from_confusion(
    cm: np.ndarray,
    *,
    ignore_index: int | None = None,
    classes: Sequence[int] | None = None,
    prefix: str = "",
) -> dict[str, Any]:
    """mIoU, per-class IoU, overall accuracy and macro F1 from a confusion matrix.

    ``classes`` restricts which classes are evaluated (default: all but ``ignore_index``).
    Returns ``{prefix+"miou", prefix+"accuracy", prefix+"macro_f1", prefix+"iou": {class: iou}}``.
    """
    cls = _class_list(cm.shape[0], ignore_index, classes)
    tp = np.diag(cm).astype(np.float64)
    gt = cm.sum(axis=1).astype(np.float64)
    pr = cm.sum(axis=0).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        union = gt + pr - tp
        iou = np.where(union > 0, tp / union, np.nan)
        f1 = np.where(gt + pr > 0, 2 * tp / (gt + pr), np.nan)
    sel = np.asarray(cls, dtype=np.int64)
    # Accuracy over evaluated classes only: a pixel of a class outside ``classes`` is not scored.
    sub = cm[np.ix_(sel, sel)] if len(sel) else np.zeros((0, 0))
    total = float(cm[sel].sum()) if len(sel) else 0.0
    acc = float(np.trace(sub) / total) if total > 0 else float("nan")
    iou_sel = iou[sel] if len(sel) else np.array([])
    f1_sel = f1[sel] if len(sel) else np.array([])
    return {
        f"{prefix}miou": _nanmean(iou_sel),
        f"{prefix}accuracy": acc,
        f"{prefix}macro_f1": _nanmean(f1_sel),
        f"{prefix}iou": {int(c): float(iou[c]) for c in cls},
    }


def _nanmean(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else float("nan")


def boundary_mask(
    label: Any,
    k: int,
    *,
    ignore_index: int | None = None,
    instances: Any | None = None,
) -> np.ndarray:
    """Pixels within ``k`` px (Chebyshev) of a class boundary, or of an instance boundary.

    ``label`` is ``(H, W)`` or ``(N, H, W)``. ``instances`` (same shape, e.g. parcel ids, where
    ``0`` means "no instance") adds instance edges, so two touching fields of the same crop still
    have a boundary between them. Both pixels of a pair must be labelled for it to count.
    """
    lab = _np(label)
    if lab.ndim == 2:
        lab = lab[None]
        inst = None if instances is None else _np(instances)[None]
        return _boundary(lab, k, ignore_index, inst)[0]
    inst = None if instances is None else _np(instances)
    return _boundary(lab, k, ignore_index, inst)


def _boundary(lab: np.ndarray, k: int, ignore: int | None, inst: np.ndarray | None) -> np.ndarray:
    if k < 0:
        raise ValueError(f"boundary width k must be >= 0, got {k}")
    if inst is not None and inst.shape != lab.shape:
        raise ValueError(f"instances shape {inst.shape} differs from labels {lab.shape}")
    n, h, w = lab.shape
    labelled = np.ones_like(lab, dtype=bool) if ignore is None else lab != ignore
    # 1) pixels that touch (8-neighbourhood) a differently labelled pixel: the edge itself
    edge = np.zeros((n, h, w), dtype=bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy == 0 and dx == 0:
                continue
            ys, yd = _shift(dy, h)
            xs, xd = _shift(dx, w)
            a, b = lab[:, yd, xd], lab[:, ys, xs]
            ok = labelled[:, yd, xd] & labelled[:, ys, xs]
            diff = a != b
            if inst is not None:
                ia, ib = inst[:, yd, xd], inst[:, ys, xs]
                diff |= (ia != ib) & (ia != 0) & (ib != 0)
            edge[:, yd, xd] |= diff & ok
    if k <= 1:
        out = edge if k == 1 else np.zeros_like(edge)
        return out & labelled
    # 2) grow the edge by k-1 more pixels (square dilation = Chebyshev distance)
    grown = edge.copy()
    r = k - 1
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if dy == 0 and dx == 0:
                continue
            ys, yd = _shift(dy, h)
            xs, xd = _shift(dx, w)
            grown[:, yd, xd] |= edge[:, ys, xs]
    return grown & labelled


def _shift(d: int, n: int) -> tuple[slice, slice]:
    """Slices (source, destination) so that ``dst[i] = src[i + d]`` inside the array."""
    if d >= 0:
        return slice(d, n), slice(0, n - d)
    return slice(0, n + d), slice(-d, n)


class SegmentationMeter:
    """Accumulates the full-image and the boundary confusion matrices over batches."""

    def __init__(
        self,
        num_classes: int,
        *,
        ignore_index: int | None = 0,
        boundary_px: int = 2,
        classes: Sequence[int] | None = None,
    ) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.boundary_px = boundary_px
        self.classes = list(classes) if classes is not None else None
        self.cm = np.zeros((num_classes, num_classes), dtype=np.int64)
        self.cm_boundary = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(
        self, pred: Any, target: Any, *, boundary: Any | None = None, instances: Any | None = None
    ) -> None:
        """Add a batch. ``boundary`` is a precomputed mask; else it is derived from ``target``."""
        t = _np(target)
        self.cm += confusion_matrix(pred, t, self.num_classes, ignore_index=self.ignore_index)
        if boundary is None:
            boundary = boundary_mask(
                t, self.boundary_px, ignore_index=self.ignore_index, instances=instances
            )
        self.cm_boundary += confusion_matrix(
            pred, t, self.num_classes, ignore_index=self.ignore_index, mask=boundary
        )

    def compute(self) -> dict[str, Any]:
        out = metrics_from_confusion(self.cm, ignore_index=self.ignore_index, classes=self.classes)
        b = metrics_from_confusion(
            self.cm_boundary,
            ignore_index=self.ignore_index,
            classes=self.classes,
            prefix="boundary_",
        )
        out["boundary_miou"] = b["boundary_miou"]
        out["boundary_iou"] = b["boundary_iou"]
        out["boundary_pixels"] = int(self.cm_boundary.sum())
        out["pixels"] = int(self.cm.sum())
        return out


def segmentation_metrics(
    pred: Any,
    target: Any,
    num_classes: int,
    *,
    ignore_index: int | None = 0,
    boundary_px: int = 2,
    instances: Any | None = None,
    classes: Sequence[int] | None = None,
) -> dict[str, Any]:
    """All segmentation metrics of one prediction/target pair (``(H, W)`` or ``(N, H, W)``)."""
    meter = SegmentationMeter(
        num_classes, ignore_index=ignore_index, boundary_px=boundary_px, classes=classes
    )
    meter.update(pred, target, instances=instances)
    return meter.compute()


def classification_metrics(
    pred: Any,
    target: Any,
    num_classes: int,
    *,
    classes: Sequence[int] | None = None,
    ignore_index: int | None = None,
) -> dict[str, Any]:
    """Single-label scene classification: accuracy, macro F1, per-class IoU (= Jaccard)."""
    cm = confusion_matrix(pred, target, num_classes, ignore_index=ignore_index)
    return metrics_from_confusion(cm, ignore_index=ignore_index, classes=classes)


def average_precision(scores: Any, positives: Any) -> float:
    """Non-interpolated AP of one class: ``sum_n (R_n - R_{n-1}) P_n`` over distinct thresholds.

    Tied scores form one threshold (as in scikit-learn), so the order of ties cannot change the
    value. NaN when there is no positive.
    """
    s = _np(scores).astype(np.float64).ravel()
    y = _np(positives).astype(bool).ravel()
    n_pos = int(y.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    # indices of the last element of each block of equal scores
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
    tp = np.cumsum(y)[last].astype(np.float64)
    fp = (last + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / n_pos
    prev = np.r_[0.0, recall[:-1]]
    return float(np.sum((recall - prev) * precision))


def mean_average_precision(scores: Any, targets: Any) -> tuple[float, list[float]]:
    """Macro mAP over classes with at least one positive; also returns per-class AP (NaN = none).

    ``scores`` and ``targets`` are ``(N, K)``: scores any monotone confidence (logits are fine),
    targets multi-hot.
    """
    s = _np(scores)
    t = _np(targets)
    if s.shape != t.shape or s.ndim != 2:
        raise ValueError(f"scores {s.shape} and targets {t.shape} must both be (N, K)")
    per = [average_precision(s[:, k], t[:, k]) for k in range(s.shape[1])]
    return _nanmean(np.asarray(per, dtype=np.float64)), per


def multilabel_metrics(scores: Any, targets: Any, *, threshold: float = 0.0) -> dict[str, Any]:
    """mAP (macro), per-class AP, and micro/macro F1 at ``threshold`` on the scores.

    The default threshold 0.0 suits logits (probability 0.5).
    """
    s = _np(scores).astype(np.float64)
    t = _np(targets).astype(bool)
    m, per = mean_average_precision(s, t)
    p = s > threshold
    tp = (p & t).sum(axis=0).astype(np.float64)
    fp = (p & ~t).sum(axis=0).astype(np.float64)
    fn = (~p & t).sum(axis=0).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
    denom = 2 * tp.sum() + fp.sum() + fn.sum()
    return {
        "map": m,
        "ap": {i: float(v) for i, v in enumerate(per)},
        "macro_f1": _nanmean(f1),
        "micro_f1": float(2 * tp.sum() / denom) if denom > 0 else float("nan"),
    }
