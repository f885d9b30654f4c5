"""Pretraining methods: backbone + heads + loss as one ``nn.Module``.

Every method maps ``forward(batch: dict[str, Tensor]) -> dict[str, Tensor]`` with a scalar
``"loss"`` to backpropagate, ``"loss_<term>"`` parts and detached monitoring tensors (``"embedding"``
is always the pooled backbone features, ``(B, num_features)``). ``method.backbone`` is the ResNet to
export with :func:`earthloop.models.weights.save_backbone`; ``default_optimizer`` /
``default_optimizer_params`` give the published (SeCo) or our default optimiser settings.
"""

from earthloop.models.methods.cscl import CSCL
from earthloop.models.methods.dense import DenseContrastive
from earthloop.models.methods.seco import SeCo, default_seco_augment, legacy_seco_augment

__all__ = ["CSCL", "DenseContrastive", "SeCo", "default_seco_augment", "legacy_seco_augment"]
