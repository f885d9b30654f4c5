"""Random training crops (``finetune.train_crop``): cheaper steps, whole-chip evaluation.

Why it exists: fine-tuning on two CPU cores is compute-bound (docs/finetune.md#demo-crops), so a
step on a 32 px window of a 64 px chip costs about a quarter of a whole-chip step and the same
budget buys four times the optimiser steps.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from earthloop.config import FinetuneConfig
from earthloop.finetune.data import TrialArrays
from earthloop.finetune.train import EvalSpec, TrainParams, _random_crop, fit
from earthloop.models import build_backbone
from earthloop.models.task import TaskModel
from pydantic import ValidationError


def test_image_and_label_get_the_same_window() -> None:
    # pixel value = its own (row, col) index, so a crop's content names its window
    h = w = 12
    grid = torch.arange(h * w, dtype=torch.float32).reshape(1, h, w)
    x = torch.stack([grid.repeat(2, 1, 1) + 1000 * i for i in range(5)])  # (5, 2, 12, 12)
    y = torch.stack([grid[0].long() + 1000 * i for i in range(5)])  # (5, 12, 12)
    xc, yc = _random_crop(x, y, 5, torch.Generator().manual_seed(3))
    assert xc.shape == (5, 2, 5, 5) and yc.shape == (5, 5, 5)
    starts = set()
    for i in range(5):
        assert torch.equal(xc[i, 0].long(), yc[i]) and torch.equal(xc[i, 1], xc[i, 0])
        top_left = int(yc[i, 0, 0]) - 1000 * i
        r, c = divmod(top_left, w)
        assert 0 <= r <= h - 5 and 0 <= c <= w - 5
        # a contiguous window, not a resampling
        want = grid[0, r : r + 5, c : c + 5].long() + 1000 * i
        assert torch.equal(yc[i], want)
        starts.add((r, c))
    assert len(starts) > 1  # each sample draws its own window


def test_a_crop_larger_than_the_chip_is_refused() -> None:
    x, y = torch.zeros(1, 2, 8, 8), torch.zeros(1, 8, 8, dtype=torch.long)
    with pytest.raises(ValueError, match="train_crop=16 is larger than the 8x8 chips"):
        _random_crop(x, y, 16, torch.Generator())
    assert _random_crop(x, y, 8, torch.Generator())[0] is x  # whole chip: unchanged


def test_the_config_refuses_tiny_crops() -> None:
    assert FinetuneConfig.model_validate({"train_crop": 32}).train_crop == 32
    with pytest.raises(ValidationError):
        FinetuneConfig.model_validate({"train_crop": 4})


def _input_sizes(task: str, arrays: TrialArrays, spec: EvalSpec) -> dict[bool, set[int]]:
    """Train a few steps with ``train_crop=16``; the input widths the model saw, by train mode."""
    torch.manual_seed(0)
    model = TaskModel(task, build_backbone("resnet_tiny", 2), spec.num_outputs, frozen=False)
    seen: dict[bool, set[int]] = {True: set(), False: set()}
    model.register_forward_pre_hook(lambda m, a: seen[m.training].add(a[0].shape[-1]))
    p = TrainParams(
        lr=1e-3, weight_decay=0.0, encoder_lr_mult=1.0, mode="full", batch_size=4,
        max_steps=4, eval_every=2, seed=0, train_crop=16,
    )  # fmt: skip
    fit(model, arrays, arrays, None, p, spec)
    return seen


def test_training_sees_crops_and_evaluation_whole_chips() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(1, 3, size=(6, 32, 32)).astype(np.int64)
    x = (y[:, None].astype(np.float32) + rng.normal(0, 0.3, (6, 2, 32, 32))).astype(np.float32)
    arrays = TrialArrays(x, y, np.zeros_like(y, dtype=bool), [str(i) for i in range(6)])
    spec = EvalSpec("segmentation", 3, [1, 2], {0: "0", 1: "1", 2: "2"}, 0, 1, "miou")
    assert _input_sizes("segmentation", arrays, spec) == {True: {16}, False: {32}}


def test_a_classification_trial_trains_on_whole_chips_despite_a_crop() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (6, 2, 32, 32)).astype(np.float32)
    y = np.array([0, 1, 0, 1, 0, 1], dtype=np.int64)
    arrays = TrialArrays(x, y, np.zeros(6, dtype=bool), [str(i) for i in range(6)])
    spec = EvalSpec("classification", 2, [0, 1], {0: "0", 1: "1"}, None, 1, "accuracy")
    assert _input_sizes("classification", arrays, spec) == {True: {32}, False: {32}}


def test_the_report_says_the_budget_ran_on_crops() -> None:
    from earthloop.finetune.report import _setup_lines

    base = {"max_steps": 1200, "batch_size": 8, "class_weights": "balanced"}
    cropped = "\n".join(_setup_lines({**base, "train_crop": 32}, "miou", "segmentation"))
    assert "1200 optimiser steps per trial of batch 8 on random 32 px crops" in cropped
    whole = "\n".join(_setup_lines({**base, "train_crop": None}, "miou", "segmentation"))
    assert "1200 optimiser steps per trial of batch 8, class weights balanced" in whole
