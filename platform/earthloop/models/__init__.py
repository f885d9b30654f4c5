"""earthloop.models: backbones, heads, losses, augmentations and the three pretraining methods.

Plain torch only (no Ray, no storage code), so every block can be built and tested alone:

* :mod:`~earthloop.models.backbones` — ResNet-18/34/50 and a tiny ResNet for any band count;
* :mod:`~earthloop.models.unet` — U-Net decoder on that encoder, segmentation model;
* :mod:`~earthloop.models.heads` — MoCo-v2 MLP, 1x1 pixel heads, CSCL similarity, classifiers;
* :mod:`~earthloop.models.moco` — momentum update, negative queue, all-gather, shuffle-BN;
* :mod:`~earthloop.models.transforms` — replayable augmentations with tracked pixel coordinates;
* :mod:`~earthloop.models.losses` — InfoNCE, SeCo, dense pixel InfoNCE, CSCL;
* :mod:`~earthloop.models.methods` — :class:`SeCo`, :class:`DenseContrastive`, :class:`CSCL`;
* :mod:`~earthloop.models.metrics` — collapse and k-NN monitors;
* :mod:`~earthloop.models.weights` — backbone export/import with band metadata.
"""

from earthloop.models.backbones import Backbone, ResNet, build_backbone
from earthloop.models.methods import CSCL, DenseContrastive, SeCo
from earthloop.models.unet import SegmentationModel, UNet
from earthloop.models.weights import (
    load_backbone,
    load_external_state_dict,
    load_unet,
    save_backbone,
)

__all__ = [
    "CSCL",
    "Backbone",
    "DenseContrastive",
    "ResNet",
    "SeCo",
    "SegmentationModel",
    "UNet",
    "build_backbone",
    "load_backbone",
    "load_external_state_dict",
    "load_unet",
    "save_backbone",
]
