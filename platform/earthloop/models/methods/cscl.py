"""CSCL: context-self contrastive pretraining (Tarasiou et al. 2023, "Context-self contrastive
pretraining for crop type semantic segmentation", IEEE TGRS).

Why: crop-type segmentation errors concentrate at parcel borders, where a pixel's receptive field
mixes classes. CSCL pretrains the segmentation network with labels, but instead of a per-pixel
class it asks each pixel's embedding to be similar to same-class neighbours and dissimilar to
other-class neighbours inside a ``k x k`` (dilated) window — an objective that is all about the
borders. After pretraining the similarity head is dropped and the U-Net (encoder + decoder) is
fine-tuned with cross-entropy (:class:`earthloop.models.unet.SegmentationModel`).

Pieces: U-Net features -> :class:`~earthloop.models.heads.ContextSimilarityHead` (1x1 query and key
projections, ``k*k`` learned relative-position vectors added to the window keys, cosine
similarity) -> :func:`~earthloop.models.losses.cscl.cscl_loss` with ``pos_weight`` 0.125.
Kernel size 5 / dilation 1 / 128-d embeddings are configurable defaults of ours.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

import torch
from torch import Tensor, nn

from earthloop.models.backbones import Backbone
from earthloop.models.heads import ContextSimilarityHead
from earthloop.models.losses.cscl import cscl_loss, cscl_targets
from earthloop.models.unet import SegmentationModel, UNet

__all__ = ["CSCL"]


class CSCL(nn.Module):
    """Supervised context-self contrastive pretraining of a U-Net.

    ``forward(batch)`` with ``batch = {"image": (B, C, H, W) float, "label": (B, H, W) long}``
    (negative labels are unlabelled pixels; 0 is an ordinary class, e.g. background, unless
    ``ignore_index`` names it) returns::

        {"loss", "loss_cscl": the CSCL loss (the same tensor),
         "embedding": (B, num_features) pooled encoder features (detached),
         "sim_pos" / "sim_neg": mean similarity of counted positive / negative window pairs
                                 (detached; their gap should grow)}
    """

    default_optimizer: ClassVar[str] = "adamw"
    default_optimizer_params: ClassVar[dict[str, float]] = {"lr": 1e-3, "weight_decay": 1e-4}

    def __init__(
        self,
        unet: UNet | Backbone,
        *,
        dim: int = 128,
        kernel_size: int = 5,
        dilation: int = 1,
        pos_weight: float = 0.125,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__()
        # A bare backbone gets the default decoder, so trainers can build methods by arch name.
        self.unet = unet if isinstance(unet, UNet) else UNet(unet)
        self.similarity = ContextSimilarityHead(self.unet.out_channels, dim, kernel_size, dilation)
        self.kernel_size, self.dilation = kernel_size, dilation
        self.pos_weight = pos_weight
        self.ignore_index = ignore_index

    @property
    def encoder(self) -> Backbone:
        return self.unet.encoder

    @property
    def decoder(self) -> nn.Module:
        return self.unet.decoder

    @property
    def backbone(self) -> Backbone:
        """The encoder to export after pretraining."""
        return self.unet.encoder

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        return (p for p in self.parameters() if p.requires_grad)

    def segmentation_model(self, num_classes: int, *, dropout: float = 0.0) -> SegmentationModel:
        """The fine-tuning model: this U-Net (shared, not copied) + a fresh 1x1 classifier."""
        return SegmentationModel(self.unet, num_classes, dropout=dropout)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        image, label = batch["image"], batch["label"]
        if image.ndim != 4 or label.shape != (image.shape[0], *image.shape[-2:]):
            raise ValueError(
                f"expected image (B, C, H, W) and label (B, H, W), got {tuple(image.shape)}, {tuple(label.shape)}"
            )
        dense, feats = self.unet.forward_with_features(image)
        sim, _ = self.similarity(dense)
        label = label.long()
        loss = cscl_loss(
            sim,
            label,
            kernel_size=self.kernel_size,
            dilation=self.dilation,
            pos_weight=self.pos_weight,
            ignore_index=self.ignore_index,
        )
        with torch.no_grad():
            y, mask = cscl_targets(
                label, self.kernel_size, self.dilation, ignore_index=self.ignore_index
            )
            pos, neg = (mask & y).to(sim.dtype), (mask & ~y).to(sim.dtype)
            # masked means (0 with no such pair) without reading a count back from the device
            sim_pos = (sim * pos).sum() / pos.sum().clamp(min=1.0)
            sim_neg = (sim * neg).sum() / neg.sum().clamp(min=1.0)
        return {
            "loss": loss,
            "loss_cscl": loss,
            "embedding": self.unet.encoder.pool(feats[-1]).detach(),
            "sim_pos": sim_pos.detach(),
            "sim_neg": sim_neg.detach(),
        }
