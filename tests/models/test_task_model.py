"""The task model, the one normalisation and prediction (what the labeling loop will import)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from earthloop.inference import predict, predict_raw
from earthloop.models import build_backbone
from earthloop.models.normalise import normalise, pixel_statistics
from earthloop.models.task import TaskModel, class_mask
from earthloop.models.unet import SegmentationModel


def test_frozen_task_model_keeps_encoder_in_eval_and_trains_only_the_head() -> None:
    torch.manual_seed(0)
    model = TaskModel("segmentation", build_backbone("resnet_tiny", 3), 4, frozen=True)
    model.train()
    assert model.training and not model.encoder.training
    assert all(not p.requires_grad for p in model.encoder_parameters())
    head = list(model.head_parameters())
    assert head and all(p.requires_grad for p in head)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 4, 32, 32)


def test_scene_task_model_outputs_one_row_per_chip() -> None:
    model = TaskModel("classification", build_backbone("resnet_tiny", 3), 5, frozen=False)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 5)
    with pytest.raises(ValueError, match="unknown task"):
        TaskModel("detection", build_backbone("resnet_tiny", 3), 5, frozen=False)


def test_class_mask() -> None:
    assert class_mask("segmentation", 4, [1, 3]).tolist() == [False, True, False, True]
    assert class_mask("multilabel", 3, [0]).all()
    assert class_mask("classification", 3).all()


def test_normalise_standardises_per_band_and_zeroes_invalid_pixels() -> None:
    x = torch.arange(2 * 2 * 2 * 2, dtype=torch.float32).reshape(2, 2, 2, 2)
    valid = torch.ones(2, 2, 2, dtype=torch.bool)
    valid[0, 0, 0] = False
    out = normalise(x, [1.0, 2.0], [2.0, 4.0], valid)
    expect = (x - torch.tensor([1.0, 2.0]).view(1, 2, 1, 1)) / torch.tensor([2.0, 4.0]).view(
        1, 2, 1, 1
    )
    expect[0, :, 0, 0] = 0.0
    assert torch.equal(out, expect)
    # a date axis in front of the bands (SeCo's (B, T, C, H, W)) is handled the same way
    seq = normalise(x[None], [1.0, 2.0], [2.0, 4.0], valid[None])
    assert torch.equal(seq[0], expect)
    with pytest.raises(ValueError, match="normalisation has 3"):
        normalise(x, [0.0] * 3, [1.0] * 3)


def test_pixel_statistics_match_numpy_over_valid_pixels_and_floor_the_std() -> None:
    rng = np.random.default_rng(0)
    chips = [
        (rng.normal(5, 2, (3, 8, 8)).astype(np.float32), rng.random((8, 8)) > 0.3) for _ in range(4)
    ]
    chips[0][0][2] = 7.0  # a constant band in one chip does not make the band constant
    mean, std = pixel_statistics(chips, 3)
    px = np.concatenate([img[:, v] for img, v in chips], axis=1).astype(np.float64)
    assert np.allclose(mean, px.mean(axis=1)) and np.allclose(std, px.std(axis=1))
    const = [(np.full((1, 4, 4), 3.0, np.float32), np.ones((4, 4), bool))]
    assert pixel_statistics(const, 1) == ([3.0], [1e-4])
    with pytest.raises(ValueError, match="no valid pixel"):
        pixel_statistics([(np.ones((1, 2, 2), np.float32), np.zeros((2, 2), bool))], 1)


def test_predict_never_picks_the_ignore_class_and_restores_training_mode() -> None:
    torch.manual_seed(0)
    model = TaskModel("segmentation", build_backbone("resnet_tiny", 3), 3, frozen=False)
    assert isinstance(model.net, SegmentationModel)
    bias = model.net.head.conv.bias
    assert bias is not None
    with torch.no_grad():
        bias[0] = 1e3  # class 0 (the ignore class) would win every pixel
    model.train()
    x = np.random.default_rng(0).normal(size=(3, 3, 32, 32)).astype(np.float32)
    pred = predict(model, x, [1, 2], batch=2)
    assert pred.shape == (3, 32, 32) and set(np.unique(pred)) <= {1, 2}
    assert model.training
    assert (predict(model, x) == 0).all()  # without class ids every channel may win


def test_predict_raw_is_predict_on_normalised_pixels() -> None:
    torch.manual_seed(0)
    model = TaskModel("multilabel", build_backbone("resnet_tiny", 2), 4, frozen=False)
    raw = np.random.default_rng(1).uniform(0, 0.3, (2, 2, 16, 16)).astype(np.float32)
    valid = np.ones((2, 16, 16), bool)
    mean, std = [0.1, 0.2], [0.05, 0.1]
    x = (raw - np.asarray(mean, np.float32).reshape(1, 2, 1, 1)) / np.asarray(
        std, np.float32
    ).reshape(1, 2, 1, 1)
    got = predict_raw(model, raw, valid, mean, std)
    assert got.shape == (2, 4)
    np.testing.assert_allclose(got, predict(model, x.astype(np.float32)), rtol=1e-5, atol=1e-6)
