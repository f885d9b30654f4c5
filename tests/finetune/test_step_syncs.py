"""A fine-tuning step never makes the host wait for the device, and gives the same trial.

Fine-tuning trials on a GPU were launch-bound (docs/benchmarks.md#gpu): per-sample flips,
rotations and crops were a few kernels per sample, and every step read its loss and an
"any labelled pixel?" test back from the device. The step now transforms the batch in at most 8
groups and one gather, decides the labelled test on the host labels, and leaves the loss on the
device. Checked on PyTorch's ``meta`` device (any read of a device value raises there), and
against the per-sample reference (same seed, same tensors).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from earthloop.finetune.train import (
    EvalSpec,
    TrainParams,
    _augment,
    _Loop,
    _loss,
    _random_crop,
)
from earthloop.models import build_backbone
from earthloop.models.task import TaskModel
from sync_helpers import BlockingUploads

SPEC = EvalSpec("segmentation", 3, [1, 2], {0: "0", 1: "1", 2: "2"}, 0, 1, "miou")


def _reference_augment(
    x: torch.Tensor, y: torch.Tensor | None, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The per-sample loop the batched version replaced (the draws in the same order)."""
    xs, ys = [], []
    for i in range(x.shape[0]):
        k = int(torch.randint(0, 4, (1,), generator=gen))
        flip = bool(torch.randint(0, 2, (1,), generator=gen))
        xi = torch.rot90(x[i], k, dims=(-2, -1))
        yi = torch.rot90(y[i], k, dims=(-2, -1)) if y is not None else None
        if flip:
            xi = torch.flip(xi, dims=(-1,))
            yi = torch.flip(yi, dims=(-1,)) if yi is not None else None
        xs.append(xi)
        if yi is not None:
            ys.append(yi)
    return torch.stack(xs), (torch.stack(ys) if y is not None else None)


def _reference_crop(
    x: torch.Tensor, y: torch.Tensor, size: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    h, w = x.shape[-2:]
    xs, ys = [], []
    for i in range(x.shape[0]):
        r = int(torch.randint(0, h - size + 1, (1,), generator=gen))
        c = int(torch.randint(0, w - size + 1, (1,), generator=gen))
        xs.append(x[i, ..., r : r + size, c : c + size])
        ys.append(y[i, ..., r : r + size, c : c + size])
    return torch.stack(xs), torch.stack(ys)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batched_augment_and_crop_equal_the_per_sample_reference(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(13, 4, 16, 16, generator=g)
    y = torch.randint(0, 5, (13, 16, 16), generator=g)
    got = _augment(x, y, torch.Generator().manual_seed(seed))
    want = _reference_augment(x, y, torch.Generator().manual_seed(seed))
    assert torch.equal(got[0], want[0]) and got[1] is not None and want[1] is not None
    assert torch.equal(got[1], want[1])
    assert torch.equal(
        _augment(x, None, torch.Generator().manual_seed(seed))[0],
        _reference_augment(x, None, torch.Generator().manual_seed(seed))[0],
    )
    got_c = _random_crop(x, y, 7, torch.Generator().manual_seed(seed))
    want_c = _reference_crop(x, y, 7, torch.Generator().manual_seed(seed))
    assert torch.equal(got_c[0], want_c[0]) and torch.equal(got_c[1], want_c[1])
    assert got_c[0].is_contiguous()


def test_a_step_on_the_meta_device_reads_nothing_back() -> None:
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 3, size=(10, 32, 32)).astype(np.int64)
    images = rng.normal(0, 1, (10, 2, 32, 32)).astype(np.float32)
    meta = torch.device("meta")
    torch.manual_seed(0)
    model = TaskModel("segmentation", build_backbone("resnet_tiny", 2), 3, frozen=False).to(meta)
    p = TrainParams(
        lr=1e-3, weight_decay=0.0, encoder_lr_mult=1.0, mode="full", batch_size=4,
        max_steps=10, eval_every=5, seed=0, train_crop=16, class_weights="none",
    )  # fmt: skip
    loop = _Loop.start(model, len(images), p)
    x_all = torch.from_numpy(images).to(meta)
    y_all = torch.from_numpy(targets).to(meta)
    mask = SPEC.class_mask().to(meta)
    with BlockingUploads() as uploads:
        for _ in range(2):
            loss, n = loop.train_step(x_all, y_all, p, SPEC, mask, None, targets)
    assert uploads.found == [], "blocking uploads:\n" + "\n".join(uploads.found)
    assert n == 4 and loss.device == meta and loop.step == 2


def test_the_host_labelled_test_matches_the_device_one() -> None:
    """An all-background crop is skipped (zero loss) whether decided on host or device."""
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    unlabelled = torch.zeros(2, 4, 4, dtype=torch.long)  # 0 is SPEC's ignore index
    mask = SPEC.class_mask()
    for labelled in (None, False):
        out = _loss(logits, unlabelled, SPEC, mask, None, labelled)
        assert out.item() == 0.0 and out.requires_grad
    y = unlabelled.clone()
    y[0, 1, 1] = 2
    assert _loss(logits, y, SPEC, mask, None, True).item() == _loss(logits, y, SPEC, mask).item()
    assert _loss(logits, y, SPEC, mask).item() > 0


def test_the_labelled_test_looks_only_inside_each_crop_window() -> None:
    from earthloop.finetune.train import _any_labelled

    targets = np.zeros((3, 8, 8), dtype=np.int64)
    targets[1, 6, 6] = 2  # chip 1 has one labelled pixel, bottom right
    idx = np.array([0, 1])
    assert _any_labelled(targets, idx, None, 0)
    assert not _any_labelled(targets, idx, ([0, 0], [0, 0], 4), 0)  # top-left windows miss it
    assert _any_labelled(targets, idx, ([0, 4], [0, 4], 4), 0)  # chip 1's window holds it
    assert not _any_labelled(targets, np.array([0, 2]), None, 0)
