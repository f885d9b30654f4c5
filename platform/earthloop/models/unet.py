"""U-Net decoder on a ResNet encoder, for per-pixel embeddings and segmentation.

Dense contrast (Embedding Earth) and CSCL both need one feature vector per input pixel, while the
thing we want to reuse downstream is the encoder. So the encoder here *is* a
:class:`~earthloop.models.backbones.ResNet` (``UNet.encoder``), whose state_dict is exactly a
backbone's: weights pretrained with SeCo load into it, and weights pretrained densely export as a
plain backbone. The decoder follows the usual ResNet-U-Net layout (as in
segmentation_models_pytorch): upsample x2, concatenate the skip of the same stride, two
3x3 conv-BN-ReLU; five such steps bring stride 32 back to stride 1.

Inputs with sides that are multiples of 32 give exact x2 steps; other sizes still work because
each step upsamples to the skip's actual size and the last one to the input size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from earthloop.models.backbones import Backbone
from earthloop.models.heads import SegmentationHead

__all__ = ["DecoderBlock", "SegmentationModel", "UNet", "UNetDecoder", "default_decoder_channels"]


def default_decoder_channels(encoder: Backbone) -> tuple[int, ...]:
    """Half the deepest encoder width (capped at 256, the smp default), halving each step, >= 8.

    ResNet-18/50 get (256, 128, 64, 32, 16); ``resnet_tiny`` gets (64, 32, 16, 8, 8).
    """
    base = min(256, encoder.feature_channels[-1] // 2)
    return tuple(max(8, base >> i) for i in range(5))


class DecoderBlock(nn.Module):
    """Upsample to the skip's size, concatenate it, then two 3x3 conv-BN-ReLU."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(in_channels + skip_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: Tensor, skip: Tensor | None, size: tuple[int, int]) -> Tensor:
        # Nearest upsampling keeps each coarse feature pinned to the pixels it came from; the
        # convolutions that follow do the smoothing.
        x = F.interpolate(x, size=size, mode="nearest")
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.block(x)


class UNetDecoder(nn.Module):
    """Five decoder blocks: layer4 (s32) + layer3 -> + layer2 -> + layer1 -> + stem -> full res."""

    def __init__(self, encoder_channels: Sequence[int], decoder_channels: Sequence[int]) -> None:
        super().__init__()
        if len(encoder_channels) != 5 or len(decoder_channels) != 5:
            raise ValueError("expected 5 encoder stages and 5 decoder widths")
        skips = [
            encoder_channels[3],
            encoder_channels[2],
            encoder_channels[1],
            encoder_channels[0],
            0,
        ]
        ins = [encoder_channels[4], *decoder_channels[:-1]]
        self.blocks = nn.ModuleList(
            DecoderBlock(i, s, o) for i, s, o in zip(ins, skips, decoder_channels, strict=True)
        )
        self.channels = tuple(int(c) for c in decoder_channels)  # exported with its weights
        self.out_channels = int(decoder_channels[-1])

    def forward(self, features: Sequence[Tensor], size: tuple[int, int]) -> Tensor:
        """``features`` as returned by ``ResNet.forward_features``; ``size`` the input (H, W)."""
        stem, f1, f2, f3, f4 = features
        x = f4
        for block, skip in zip(self.blocks, (f3, f2, f1, stem, None), strict=True):
            target = size if skip is None else (int(skip.shape[-2]), int(skip.shape[-1]))
            x = block(x, skip, target)
        return x


class UNet(nn.Module):
    """ResNet encoder + U-Net decoder producing ``(B, out_channels, H, W)`` per-pixel features.

    ``encoder`` and ``decoder`` are separate attributes so fine-tuning can freeze, reload or
    export either; ``encoder.state_dict()`` is a plain backbone state_dict.
    """

    def __init__(self, encoder: Backbone, decoder_channels: Sequence[int] | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        channels = (
            tuple(decoder_channels)
            if decoder_channels is not None
            else default_decoder_channels(encoder)
        )
        self.decoder = UNetDecoder(encoder.feature_channels, channels)
        self.out_channels = self.decoder.out_channels
        self.in_channels = encoder.in_channels

    def forward_with_features(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Per-pixel features and the encoder stage maps (the last one pools to an embedding)."""
        feats = self.encoder.forward_features(x)
        return self.decoder(feats, (int(x.shape[-2]), int(x.shape[-1]))), feats

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_features(x)[0]


class SegmentationModel(nn.Module):
    """U-Net + 1x1 classifier: the fine-tuning model after SeCo/dense/CSCL pretraining.

    CSCL's recipe drops the similarity head after pretraining and trains this with cross-entropy;
    build it from the pretrained ``UNet`` (``method.unet``) to keep both encoder and decoder.
    """

    def __init__(self, unet: UNet, num_classes: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        self.unet = unet
        self.head = SegmentationHead(unet.out_channels, num_classes, dropout=dropout)
        self.num_classes = num_classes

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.unet(x))
