"""The task model: a (pretrained) encoder with the head of a downstream task.

Fine-tuning trains it, and what uses a trained one afterwards (prediction maps, the labeling
loop's uncertainty sampling) loads it from here rather than from the fine-tuning package, so
none of them depends on how a sweep is run. Plain torch, like the rest of :mod:`earthloop.models`.

Tasks: ``segmentation`` (U-Net decoder + 1x1 head, a class per pixel), ``classification``
(pooled features + linear head, one class per chip) and ``multilabel`` (same head, one logit per
class).

The encoder may come with a pretrained U-Net decoder (a :class:`UNet`, from dense contrast or CSCL
pretraining, :func:`earthloop.models.weights.load_unet`): segmentation then keeps that decoder and
only its 1x1 output layer starts fresh, as the CSCL recipe restores everything but the output
layer; classification uses the UNet's encoder alone.

A frozen model is the linear probe: the encoder *including its BatchNorm statistics* stays in
eval mode even in training mode, since updating running means on the labelled subset would
already adapt the encoder. For segmentation the probe still trains the U-Net decoder and the
head, since a 1x1 head on stride-32 features cannot draw a field boundary.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

from earthloop.models.backbones import Backbone
from earthloop.models.heads import ClassifierHead
from earthloop.models.unet import SegmentationModel, UNet

__all__ = ["TASKS", "SceneClassifier", "TaskModel", "class_mask"]

TASKS = ("segmentation", "classification", "multilabel")


class SceneClassifier(nn.Module):
    """Pooled encoder features through a linear head: one prediction per chip."""

    def __init__(self, encoder: Backbone, num_outputs: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = ClassifierHead(encoder.num_features, num_outputs)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x))


class TaskModel(nn.Module):
    """Segmentation (U-Net + 1x1 head) or scene classifier (pooled features + linear head).

    ``frozen=True`` is the linear probe: the encoder gets no gradient and stays in eval mode
    even when the model is put in training mode.
    """

    def __init__(
        self, task: str, encoder: Backbone | UNet, num_outputs: int, *, frozen: bool
    ) -> None:
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; one of {TASKS}")
        self.task = task
        self.num_outputs = num_outputs
        self.frozen = frozen
        self.net: nn.Module
        if task == "segmentation":
            unet = encoder if isinstance(encoder, UNet) else UNet(encoder)
            self.net = SegmentationModel(unet, num_outputs)
        else:
            backbone = encoder.encoder if isinstance(encoder, UNet) else encoder
            self.net = SceneClassifier(backbone, num_outputs)
        if frozen:
            for p in self.encoder.parameters():
                p.requires_grad_(False)

    @property
    def encoder(self) -> Backbone:
        if isinstance(self.net, SegmentationModel):
            return self.net.unet.encoder
        enc = self.net.encoder
        assert isinstance(enc, nn.Module)
        return enc  # type: ignore[return-value]

    def train(self, mode: bool = True) -> TaskModel:
        super().train(mode)
        if self.frozen:
            self.encoder.eval()
        return self

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.net(x)
        return out

    def encoder_parameters(self) -> Iterator[nn.Parameter]:
        return self.encoder.parameters()

    def head_parameters(self) -> Iterator[nn.Parameter]:
        """Everything but the encoder (decoder and head): what a linear probe trains."""
        enc = {id(p) for p in self.encoder.parameters()}
        return (p for p in self.parameters() if id(p) not in enc)


def class_mask(task: str, num_outputs: int, class_ids: Sequence[int] | None = None) -> Tensor:
    """Logit channels that are real classes: the ignore class (a logit channel below
    ``num_outputs`` that is no scored class) must never be predicted. All channels for
    multi-label and when ``class_ids`` is None."""
    if task == "multilabel" or class_ids is None:
        return torch.ones(num_outputs, dtype=torch.bool)
    m = torch.zeros(num_outputs, dtype=torch.bool)
    m[list(class_ids)] = True
    return m
