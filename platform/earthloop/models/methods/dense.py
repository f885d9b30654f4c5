"""Dense (pixel-level) temporal contrastive pretraining, after Embedding Earth
(Tarasiou & Zafeiriou 2022, "Embedding Earth: Self-supervised contrastive pre-training for dense
land cover classification").

Why: segmentation needs features that are discriminative *per pixel*, and instance-level contrast
(SeCo) only shapes the pooled vector. Here a U-Net produces per-pixel embeddings (1x1 projection,
L2-normalised) and two acquisitions of the same location on different dates are the two views:
a pixel should match the same ground pixel on the other date (seasonal invariance, as in SeCo's
subspace 0) and differ from the pixels of *other* locations. Negatives come from the other images
of the batch only (DenseCL-style): pixels of the same chip are a few pixels apart and mostly in
the same field, so contrasting them would push one field's pixels apart
(:func:`~earthloop.models.losses.dense.dense_info_nce`, ``negatives``).

Each view gets its own random geometry — integer random-resized crop (zoom x1/x2), flips and
90-degree rotations — whose parameters are tracked so every output pixel knows its ground pixel
(:mod:`earthloop.models.transforms`); correspondences are therefore exact. Photometric jitter is
applied per view on top. ``num_pixels`` corresponding, valid pixels are sampled per image (64 by
default) and contrasted with a symmetric InfoNCE (:mod:`earthloop.models.losses.dense`). Pixels
flagged invalid in ``batch["valid"]`` (clouds, no-data) are never sampled. The default recipe runs for the
whole batch at once (:mod:`earthloop.models.pixel_views`: a per-image loop kept a GPU a quarter
busy); transforms passed in run per sample through the replayable pipeline.

Both views go through the same online network in one concatenated batch (SimCLR-style, no
momentum encoder). The temperature default 0.1 and the AdamW-style optimiser defaults are our
choices, not taken from the paper.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from earthloop.models.backbones import Backbone
from earthloop.models.heads import PixelProjectionHead
from earthloop.models.losses.dense import (
    PaddedPairs,
    PixelPairs,
    dense_info_nce,
    sample_pixel_pairs,
)
from earthloop.models.methods._common import (
    check_time_series,
    crop_for,
    default_geometric,
    default_photometric,
    make_generator,
    select_dates,
)
from earthloop.models.on_device import upload
from earthloop.models.pixel_views import PixelViewAugment, sample_pixel_pairs_batched
from earthloop.models.transforms import Compose, Transform, View
from earthloop.models.unet import UNet

__all__ = ["DenseContrastive"]


class DenseContrastive(nn.Module):
    """Pixel-level contrast between two dates of a location.

    ``forward(batch)`` with ``batch = {"images": (B, T>=2, C, H, W) float,
    "valid": optional (B, T, H, W) bool}`` returns::

        {"loss", "loss_dense": the symmetric pixel InfoNCE (the same tensor),
         "embedding": (B, num_features) pooled encoder features of view A (detached),
         "pixel_embedding": (N, proj_dim) sampled view-A pixel embeddings (detached),
         "num_pairs": scalar float, number of sampled positive pairs N}

    Images should be square (rot90 must keep the shape); a non-square tile is cropped to its
    smaller side.
    """

    default_optimizer: ClassVar[str] = "adamw"
    default_optimizer_params: ClassVar[dict[str, float]] = {"lr": 1e-3, "weight_decay": 1e-4}

    def __init__(
        self,
        unet: UNet | Backbone,
        *,
        proj_dim: int = 64,
        hidden_dim: int | None = None,
        temperature: float = 0.1,
        num_pixels: int = 64,
        crop_factors: Sequence[int] = (1, 2),
        geometric: Transform | None = None,
        photometric: Transform | None = None,
        date_sampling: str = "random",
        negatives: str = "other_images",
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if num_pixels < 1:
            raise ValueError(f"num_pixels must be >= 1, got {num_pixels}")
        # A bare backbone gets the default decoder, so trainers can build methods by arch name.
        self.unet = unet if isinstance(unet, UNet) else UNet(unet)
        hidden = self.unet.out_channels if hidden_dim is None else hidden_dim
        self.head = PixelProjectionHead(self.unet.out_channels, proj_dim, hidden, normalize=True)
        self.temperature = temperature
        self.num_pixels = num_pixels
        self.crop_factors = tuple(crop_factors)
        # the default recipe runs batched (earthloop.models.pixel_views); a transform passed in
        # runs per sample through the replayable pipeline
        self.batched = geometric is None and photometric is None
        self.geometric = default_geometric() if geometric is None else geometric
        self.photometric = default_photometric() if photometric is None else photometric
        self.date_sampling = date_sampling
        self.negatives = negatives
        self.generator = make_generator(seed)

    @property
    def backbone(self) -> Backbone:
        """The encoder to export after pretraining."""
        return self.unet.encoder

    @property
    def decoder(self) -> nn.Module:
        """The U-Net decoder: exported too, since the pixel loss acts on its output."""
        return self.unet.decoder

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        return (p for p in self.parameters() if p.requires_grad)

    def make_views(
        self, images: Tensor, valid: Tensor | None
    ) -> tuple[Tensor, Tensor, list[PixelPairs] | PaddedPairs]:
        """Two augmented dates per location and their sampled pixel correspondences."""
        check_time_series(images, 2)
        b, t, _, h, w = images.shape
        if valid is not None and tuple(valid.shape) != (b, t, h, w):
            raise ValueError(
                f"batch['valid'] must be (B, T, H, W) = {(b, t, h, w)}, got {tuple(valid.shape)}"
            )
        size = min(h, w)
        if self.batched:
            return self._batch_views(images, valid, size)
        pipeline = Compose([crop_for(size, self.crop_factors), self.geometric, self.photometric])
        dates = select_dates(b, t, 2, self.date_sampling, self.generator)
        g = self.generator
        views_a: list[Tensor] = []
        views_b: list[Tensor] = []
        pairs: list[PixelPairs] = []
        for i in range(b):
            ta, tb = int(dates[i, 0]), int(dates[i, 1])
            va = pipeline(
                View.from_image(images[i, ta], None if valid is None else valid[i, ta].bool()), g
            )
            vb = pipeline(
                View.from_image(images[i, tb], None if valid is None else valid[i, tb].bool()), g
            )
            views_a.append(va.image)
            views_b.append(vb.image)
            pairs.append(
                sample_pixel_pairs(
                    va.coords,
                    vb.coords,
                    (h, w),
                    self.num_pixels,
                    valid_a=va.valid,
                    valid_b=vb.valid,
                    generator=g,
                )
            )
        return torch.stack(views_a), torch.stack(views_b), pairs

    def _batch_views(
        self, images: Tensor, valid: Tensor | None, size: int
    ) -> tuple[Tensor, Tensor, PaddedPairs]:
        """The default recipe for the whole batch: a fixed number of tensor operations."""
        b, _, _, h, w = images.shape
        g = self.generator
        dates = upload(select_dates(b, images.shape[1], 2, self.date_sampling, g), images.device)
        rows = torch.arange(b, device=images.device)
        augment = PixelViewAugment(size, self.crop_factors)
        views = [
            augment(
                images[rows, dates[:, j]],
                None if valid is None else valid[rows, dates[:, j]],
                g,
            )
            for j in range(2)
        ]
        pairs = sample_pixel_pairs_batched(views[0], views[1], (h, w), self.num_pixels, g)
        return views[0].image, views[1].image, pairs

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        xa, xb, pairs = self.make_views(batch["images"], batch.get("valid"))
        b = xa.shape[0]
        dense, feats = self.unet.forward_with_features(torch.cat([xa, xb], dim=0))
        emb = self.head(dense)
        loss, z_a, _ = dense_info_nce(
            emb[:b], emb[b:], pairs, temperature=self.temperature, negatives=self.negatives
        )
        pooled = self.unet.encoder.pool(feats[-1][:b])
        # padded pairs (the batched path): the embeddings of every slot and which are real;
        # counted on the device (a count read on the host would wait for the step)
        if isinstance(pairs, PaddedPairs):
            pixel_valid = pairs.valid.reshape(-1)
        else:
            pixel_valid = torch.ones(z_a.shape[0], dtype=torch.bool, device=z_a.device)
        return {
            "loss": loss,
            "loss_dense": loss,
            "embedding": pooled.detach(),
            "pixel_embedding": z_a.detach(),
            "pixel_valid": pixel_valid,
            "num_pairs": pixel_valid.sum().to(loss.dtype),
        }
