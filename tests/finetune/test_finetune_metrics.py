"""Metrics against values computed by hand on maps small enough to check on paper."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from earthloop.finetune.metrics import (
    average_precision,
    boundary_mask,
    classification_metrics,
    confusion_matrix,
    mean_average_precision,
    multilabel_metrics,
    segmentation_metrics,
)

# 3x3, ignore 0 at (2,0). Pairs (target, pred) of the 8 scored pixels:
# class 1: TP (0,0),(1,0); FN (0,1); FP (2,1)   -> IoU 2/4, F1 2*2/(3+3)
# class 2: TP (0,2),(1,1),(1,2),(2,2); FN (2,1); FP (0,1) -> IoU 4/6, F1 2*4/(5+5)
TARGET = np.array([[1, 1, 2], [1, 2, 2], [0, 2, 2]])
PRED = np.array([[1, 2, 2], [1, 2, 2], [1, 1, 2]])


def test_iou_accuracy_f1_by_hand() -> None:
    m = segmentation_metrics(PRED, TARGET, 3, ignore_index=0, boundary_px=1)
    assert m["iou"] == pytest.approx({1: 0.5, 2: 4 / 6})
    assert m["miou"] == pytest.approx((0.5 + 4 / 6) / 2)
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["macro_f1"] == pytest.approx((4 / 6 + 8 / 10) / 2)
    assert m["pixels"] == 8  # the ignored pixel is not counted although it was predicted


def test_confusion_matrix_ignores_and_accepts_torch() -> None:
    cm = confusion_matrix(torch.tensor(PRED), torch.tensor(TARGET), 3, ignore_index=0)
    assert cm.tolist() == [[0, 0, 0], [0, 2, 1], [0, 1, 4]]


def test_absent_class_is_nan_and_not_in_mean() -> None:
    m = segmentation_metrics(PRED, TARGET, 4, ignore_index=0, boundary_px=1)
    assert math.isnan(m["iou"][3])
    assert m["miou"] == pytest.approx((0.5 + 4 / 6) / 2)
    # predicted but absent: IoU 0, and it does enter the mean
    pred = PRED.copy()
    pred[0, 0] = 3
    m = segmentation_metrics(pred, TARGET, 4, ignore_index=0, boundary_px=1)
    assert m["iou"][3] == 0.0


def test_boundary_mask_width_ignore_and_instances() -> None:
    lab = np.array([[1, 1, 2, 2]] * 4)
    assert boundary_mask(lab, 1)[0].tolist() == [False, True, True, False]
    assert boundary_mask(lab, 2).all()
    # an unlabelled region next to a class is not a boundary, nor is the image border
    lab0 = np.array([[1, 1, 0, 0]] * 4)
    assert not boundary_mask(lab0, 1, ignore_index=0).any()
    # two touching parcels of the same crop do have a boundary between them
    same = np.ones((4, 4), dtype=int)
    parcels = np.array([[7, 7, 8, 8]] * 4)
    assert boundary_mask(same, 1, instances=parcels)[0].tolist() == [False, True, True, False]
    # diagonal neighbours count (Chebyshev distance)
    diag = np.array([[1, 1, 1], [1, 1, 1], [1, 1, 2]])
    assert boundary_mask(diag, 1)[1, 1]


def test_boundary_miou_by_hand() -> None:
    # 4x4: class 1 in columns 0-1, class 2 in columns 2-3; boundary (k=1) = columns 1 and 2
    target = np.array([[1, 1, 2, 2]] * 4)
    pred = target.copy()
    pred[0, 3] = 1  # interior error: hurts mIoU, not boundary mIoU
    m = segmentation_metrics(pred, target, 3, ignore_index=0, boundary_px=1)
    assert m["miou"] == pytest.approx((8 / 9 + 7 / 8) / 2)
    assert m["boundary_miou"] == pytest.approx(1.0)
    assert m["boundary_pixels"] == 8
    pred = target.copy()
    pred[0, 2] = 1  # an error on the boundary: class 1 TP 4 FP 1, class 2 TP 3 FN 1
    m = segmentation_metrics(pred, target, 3, ignore_index=0, boundary_px=1)
    assert m["boundary_miou"] == pytest.approx((4 / 5 + 3 / 4) / 2)


def test_average_precision_by_hand_with_ties() -> None:
    # ranks: pos, neg, pos, neg -> AP = 1/2 * 1 + 1/2 * 2/3
    assert average_precision([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]) == pytest.approx(5 / 6)
    # tied top scores form one threshold: P=1/2 at R=1/2, then P=2/3 at R=1
    assert average_precision([0.5, 0.5, 0.2], [1, 0, 1]) == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)
    assert average_precision([0.5, 0.5, 0.2], [0, 1, 1]) == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)
    assert math.isnan(average_precision([0.1, 0.2], [0, 0]))


def test_map_skips_classes_without_positives() -> None:
    scores = np.array([[0.9, 0.1, 0.3], [0.8, 0.4, 0.2], [0.7, 0.35, 0.1], [0.6, 0.8, 0.0]])
    targets = np.array([[1, 0, 0], [0, 0, 0], [1, 1, 0], [0, 1, 0]])
    m, per = mean_average_precision(scores, targets)
    assert per[0] == pytest.approx(5 / 6) and per[1] == pytest.approx(5 / 6)
    assert math.isnan(per[2])
    assert m == pytest.approx(5 / 6)
    ml = multilabel_metrics(np.log(scores + 1e-9) - np.log(0.5), targets)  # logit-like, 0 = 0.5
    assert ml["map"] == pytest.approx(5 / 6)
    # predicted positive (score > 0.5): (0,0),(1,0),(2,0),(3,0); (3,1) -> tp 2+1, fp 2, fn 1
    assert ml["micro_f1"] == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))


def test_classification_metrics() -> None:
    m = classification_metrics([1, 1, 2, 3], [1, 2, 2, 3], 4, classes=[1, 2, 3])
    assert m["accuracy"] == pytest.approx(3 / 4)
    # F1: class 1: 2*1/(1+2)=2/3; class 2: 2*1/(2+1)=2/3; class 3: 1
    assert m["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
