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
the reference implementation). Keys are encoded with shuffle-BN (effective only across DDP ranks;
in one process the permutation stays inside the batch and changes nothing) and enqueued after an
all-gather.

Defaults are the reference code's: temperature 0.07, queue 16384 per subspace, key-encoder
momentum 0.999, 128-d projections with a backbone-width hidden layer, SGD lr 0.03 / momentum 0.9
/ weight decay 1e-4 (``default_optimizer_params``; the trainer owns the optimiser).

Augmentations are the reference code's (MoCo v2's): random resized crop (scale 0.2-1), colour
jitter (0.4, 0.4, 0.4, 0.1) with p 0.8, grayscale p 0.2, Gaussian blur p 0.5 and flips, carried
over to any band count and applied to the whole batch at once
(:class:`~earthloop.models.augment.SeCoAugment`, which says how saturation and hue are
generalised). The crop is part of the replayed query augmentation (``independent_crops=False``)
so the season-only key really differs only by date; the reference code crops every view
independently, available with ``independent_crops=True``. A per-view
:class:`~earthloop.models.transforms.Transform` (e.g. ``Identity``) can still be passed as
``augment``; it runs per sample with the integer crop of ``crop_factors``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import ClassVar, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from earthloop.models.augment import SeCoAugment
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
from earthloop.models.on_device import upload
from earthloop.models.transforms import Compose, Transform, View

__all__ = ["SeCo", "default_seco_augment", "legacy_seco_augment"]


def default_seco_augment() -> SeCoAugment:
    """The reference recipe: RRC(0.2-1), colour jitter p 0.8, grayscale p 0.2, blur p 0.5, flips."""
    return SeCoAugment()


def legacy_seco_augment() -> Transform:
    """The earlier per-view recipe: flips/rot90 + per-band brightness/contrast + noise.

    Kept to compare against (it leaves per-band statistics almost intact) and for tests.
    """
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
        augment: SeCoAugment | Transform | None = None,
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

    def make_views(
        self, images: Tensor, black_level: Tensor | None = None
    ) -> tuple[Tensor, list[Tensor]]:
        """Build the query and the three keys ``(B, C, S, S)`` from ``(B, T, C, H, W)``.

        ``black_level``: ``(C,)`` standardised zero reflectance (brightness jitter scales about it).
        """
        check_time_series(images, 3)
        b, t = images.shape[:2]
        dates = select_dates(b, t, 3, self.date_sampling, self.generator)
        if isinstance(self.augment, SeCoAugment):
            return self._batch_views(images, dates, self.augment, black_level)
        return self._per_sample_views(images, dates, self.augment)

    def _batch_views(
        self, images: Tensor, dates: Tensor, aug: SeCoAugment, black_level: Tensor | None
    ) -> tuple[Tensor, list[Tensor]]:
        b, _, c, h, w = images.shape
        g = self.generator
        rows = torch.arange(b, device=images.device)
        x0, x1, x2 = (images[rows, upload(dates[:, i], images.device)] for i in range(3))
        p_q = aug.sample(b, c, h, w, g)
        query = aug.apply(x0, p_q, black_level)
        k0 = aug.apply(x1, aug.sample(b, c, h, w, g), black_level)
        p_season = p_q.with_geometry(aug.sample(b, c, h, w, g)) if self.independent_crops else p_q
        k1 = aug.apply(x2, p_season, black_level)
        k2 = aug.apply(x0, aug.sample(b, c, h, w, g), black_level)
        return query, [k0, k1, k2]

    def _per_sample_views(
        self, images: Tensor, dates: Tensor, augment: Transform
    ) -> tuple[Tensor, list[Tensor]]:
        b = images.shape[0]
        size = min(int(images.shape[-2]), int(images.shape[-1]))
        crop = crop_for(size, self.crop_factors)
        g = self.generator
        qs: list[Tensor] = []
        ks: list[list[Tensor]] = [[], [], []]
        for i in range(b):
            t0, t1, t2 = (int(d) for d in dates[i])

            def fresh(image: Tensor) -> Tensor:
                return augment(crop(View.from_image(image), g), g).image

            q_view, crop_p = crop.sample_and_apply(View.from_image(images[i, t0]), g)
            q_view, aug_p = augment.sample_and_apply(q_view, g)
            qs.append(q_view.image)
            ks[0].append(fresh(images[i, t1]))
            season_view = View.from_image(images[i, t2])
            season_view = (
                crop(season_view, g) if self.independent_crops else crop.apply(season_view, crop_p)
            )
            ks[1].append(augment.apply(season_view, aug_p).image)
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
        query, keys = self.make_views(images, batch.get("black_level"))
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
