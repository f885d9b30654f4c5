"""SeCo: Seasonal Contrast (Mañas et al. 2021, ICCV), MoCo-v2 with three embedding subspaces.

Why: satellite time series give "free" positives — the same place on another date — but a single
invariant embedding would discard seasonal information some downstream tasks need. SeCo keeps
one shared backbone and three projection heads (subspaces) with different invariances, and
transfers the backbone.

Views per location (dates ``t0, t1, t2`` distinct, random by default or the first three)::

    q  = aug_q (x[t0])            query
    k0 = aug_0 (x[t1])            season + augmentation changed   -> positive of subspace 0
    k1 = aug_q (x[t2])            season only (query's augmentation replayed) -> subspace 1
    k2 = aug_2 (x[t0])            augmentation only               -> positive of subspace 2

This is the paper/reference-code numbering (key ``i`` is the positive of subspace ``i``). In the
naming of the earthloop design brief, brief-``k1`` (season + aug) is our ``k0``, brief-``k2``
(season only) is our ``k1`` and brief-``k0`` (augmentation only) is our ``k2``; the subspace
semantics are identical: 0 invariant to everything, 1 invariant to season but not augmentation,
2 invariant to augmentation but not season. See :mod:`earthloop.models.losses.seco`.

The query is projected by all three query heads; each key by the momentum key heads. Negatives are
a 16384-entry queue per subspace plus, for subspaces 1 and 2, the other keys of the batch (as in
the reference implementation). Keys are encoded with shuffle-BN and enqueued after an all-gather.

Defaults are the reference code's: temperature 0.07, queue 16384 per subspace, key-encoder
momentum 0.999, 128-d projections with a backbone-width hidden layer, SGD lr 0.03 / momentum 0.9
/ weight decay 1e-4 (``default_optimizer_params``; the trainer owns the optimiser).

Augmentation differences from the paper (RGB, ImageNet recipe): the integer random-resized crop
(zoom x1/x2) instead of bilinear RRC(scale 0.2-1), flips/rot90, and per-band brightness/contrast +
noise instead of colour jitter/grayscale/blur, because these are defined for any band count. The
crop is part of the replayed query augmentation (``independent_crops=False``) so the season-only
key really differs only by date; the reference code crops every view independently, available
with ``independent_crops=True``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import ClassVar, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from earthloop.models.backbones import Backbone
from earthloop.models.heads import ProjectionHead
from earthloop.models.losses.seco import NUM_SUBSPACES, seco_loss
from earthloop.models.methods._common import (
    check_time_series,
    crop_for,
    default_geometric,
    default_photometric,
    make_generator,
    select_dates,
)
from earthloop.models.moco import (
    MemoryBankQueue,
    batch_shuffle,
    batch_unshuffle,
    concat_all_gather,
    copy_frozen,
    momentum_update,
)
from earthloop.models.transforms import Compose, Transform, View

__all__ = ["SeCo", "default_seco_augment"]


def default_seco_augment() -> Transform:
    """Flips/rot90 + per-band brightness/contrast (p=0.8) + Gaussian noise (p=0.5)."""
    return Compose([default_geometric(), default_photometric()])


class SeCo(nn.Module):
    """SeCo pretraining module.

    ``forward(batch)`` with ``batch = {"images": (B, T>=3, C, H, W)}`` (float, band-standardised)
    returns::

        {"loss": sum of the three terms,
         "loss_subspace0" / "loss_subspace1" / "loss_subspace2": InfoNCE per subspace,
         "acc_subspace0..2": top-1 positive accuracy per subspace (detached),
         "embedding": (B, num_features) pooled query backbone features (detached),
         "projection": (B, feature_dim) L2-normalised subspace-0 query projection (detached)}

    ``seed`` seeds a private generator for dates, augmentations and the single-process shuffle
    (use ``seed + rank`` under DDP). In training mode each call first momentum-updates the key encoder and afterwards enqueues the
    positive keys; in eval mode neither happens, so validation does not disturb the state.
    """

    default_optimizer: ClassVar[str] = "sgd"
    default_optimizer_params: ClassVar[dict[str, float]] = {
        "lr": 0.03,
        "momentum": 0.9,
        "weight_decay": 1e-4,
    }

    def __init__(
        self,
        backbone: Backbone,
        *,
        feature_dim: int = 128,
        hidden_dim: int | None = None,
        queue_size: int = 16384,
        momentum: float = 0.999,
        temperature: float = 0.07,
        augment: Transform | None = None,
        crop_factors: Sequence[int] = (1, 2),
        independent_crops: bool = False,
        date_sampling: str = "random",
        shuffle_bn: bool = True,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleList(
            ProjectionHead(backbone.num_features, feature_dim, hidden_dim)
            for _ in range(NUM_SUBSPACES)
        )
        self.key_backbone = copy_frozen(backbone)
        self.key_heads = copy_frozen(self.heads)
        self.queues = nn.ModuleList(
            MemoryBankQueue(queue_size, feature_dim) for _ in range(NUM_SUBSPACES)
        )
        self.momentum = momentum
        self.temperature = temperature
        self.augment = default_seco_augment() if augment is None else augment
        self.crop_factors = tuple(crop_factors)
        self.independent_crops = independent_crops
        self.date_sampling = date_sampling
        self.shuffle_bn = shuffle_bn
        self.generator = make_generator(seed)

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """Query backbone and heads only; the key encoder follows by momentum."""
        return (p for p in self.parameters() if p.requires_grad)

    def subspace_queues(self) -> list[MemoryBankQueue]:
        """The negative queue of each subspace (typed view of ``self.queues``)."""
        return [cast(MemoryBankQueue, q) for q in self.queues]

    # -- views ---------------------------------------------------------------------------------

    def make_views(self, images: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Build the query and the three keys ``(B, C, S, S)`` from ``(B, T, C, H, W)``."""
        check_time_series(images, 3)
        b, t = images.shape[:2]
        size = min(int(images.shape[-2]), int(images.shape[-1]))
        crop = crop_for(size, self.crop_factors)
        dates = select_dates(b, t, 3, self.date_sampling, self.generator)
        g = self.generator
        qs: list[Tensor] = []
        ks: list[list[Tensor]] = [[], [], []]
        for i in range(b):
            t0, t1, t2 = (int(d) for d in dates[i])

            def fresh(image: Tensor) -> Tensor:
                return self.augment(crop(View.from_image(image), g), g).image

            q_view, crop_p = crop.sample_and_apply(View.from_image(images[i, t0]), g)
            q_view, aug_p = self.augment.sample_and_apply(q_view, g)
            qs.append(q_view.image)
            ks[0].append(fresh(images[i, t1]))
            season_view = View.from_image(images[i, t2])
            season_view = (
                crop(season_view, g) if self.independent_crops else crop.apply(season_view, crop_p)
            )
            ks[1].append(self.augment.apply(season_view, aug_p).image)
            ks[2].append(fresh(images[i, t0]))
        return torch.stack(qs), [torch.stack(k) for k in ks]

    # -- forward -------------------------------------------------------------------------------

    @torch.no_grad()
    def _encode_keys(self, key_images: Sequence[Tensor]) -> list[list[Tensor]]:
        """``z[i][j]``: key view ``j`` through the key backbone and key head ``i``, normalised."""
        feats: list[Tensor] = []
        for x in key_images:
            if self.shuffle_bn:
                xs, idx_unshuffle = batch_shuffle(x, self.generator)
                feats.append(batch_unshuffle(self.key_backbone(xs), idx_unshuffle))
            else:
                feats.append(self.key_backbone(x))
        return [[F.normalize(head(f), dim=1) for f in feats] for head in self.key_heads]

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        images = batch["images"]
        query, keys = self.make_views(images)
        if self.training:
            momentum_update(self.backbone, self.key_backbone, self.momentum)
            momentum_update(self.heads, self.key_heads, self.momentum)
        feats_q = self.backbone(query)
        z_q = [F.normalize(head(feats_q), dim=1) for head in self.heads]
        z_k = self._encode_keys(keys)
        queues = [q.negatives() for q in self.subspace_queues()]
        out = seco_loss(z_q, z_k, queues, temperature=self.temperature)
        if self.training:
            for i, queue in enumerate(self.subspace_queues()):
                queue.enqueue(concat_all_gather(z_k[i][i]))
        out["embedding"] = feats_q.detach()
        out["projection"] = z_q[0].detach()
        return out
