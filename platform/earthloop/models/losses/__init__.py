"""Contrastive losses: shared InfoNCE and the SeCo, dense-pixel and CSCL objectives."""

from earthloop.models.losses.cscl import cscl_loss, cscl_targets
from earthloop.models.losses.dense import dense_info_nce, gather_pixels, sample_pixel_pairs
from earthloop.models.losses.infonce import info_nce, info_nce_in_batch, info_nce_logits
from earthloop.models.losses.seco import seco_loss

__all__ = [
    "cscl_loss",
    "cscl_targets",
    "dense_info_nce",
    "gather_pixels",
    "info_nce",
    "info_nce_in_batch",
    "info_nce_logits",
    "sample_pixel_pairs",
    "seco_loss",
]
