"""Build the model, optimiser and per-batch inputs of each pretraining method (plain torch)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from earthloop.models import CSCL, DenseContrastive, SeCo, UNet, build_backbone
from earthloop.models.normalise import normalise


def build_method(pc: dict[str, Any], in_channels: int) -> nn.Module:
    """The method module for a validated ``pretrain`` section (as a plain dict)."""
    backbone = build_backbone(pc["backbone"], in_channels)
    method = pc["method"]
    if method == "seco":
        return SeCo(
            backbone,
            feature_dim=pc["feature_dim"],
            queue_size=pc["queue_size"],
            momentum=pc["key_momentum"],
            temperature=pc["temperature"],
            seed=pc["seed"],
        )
    if method == "dense":
        return DenseContrastive(UNet(backbone), num_pixels=pc["pixels_per_image"], seed=pc["seed"])
    if method == "cscl":
        return CSCL(
            UNet(backbone),
            kernel_size=pc["cscl_window"],
            dilation=pc["cscl_dilation"],
            pos_weight=pc["cscl_pos_weight"],
        )
    raise ValueError(f"unknown method {method!r}")


def build_optimizer(model: nn.Module, pc: dict[str, Any]) -> torch.optim.Optimizer:
    """SGD for SeCo (the paper's MoCo-v2 recipe), AdamW for the dense methods."""
    params = [p for p in model.parameters() if p.requires_grad]
    defaults = dict(getattr(type(model), "default_optimizer_params", {}))
    lr = pc.get("lr") or defaults.get("lr", 1e-3)
    if getattr(type(model), "default_optimizer", "adamw") == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=pc["momentum"], weight_decay=pc["weight_decay"]
        )
    return torch.optim.AdamW(params, lr=lr, weight_decay=pc["weight_decay"])


def method_inputs(
    method: str, batch: dict[str, Tensor], mean: Tensor, std: Tensor
) -> dict[str, Tensor]:
    """Map a stream batch to what the method's ``forward`` expects."""
    if method in {"seco", "dense"}:
        valid = batch["valid"].bool()
        images = normalise(batch["images"].float(), mean, std, valid)
        out = {"images": images}
        if method == "dense":
            out["valid"] = valid
        return out
    valid = batch["valid"].bool()
    image = normalise(batch["image"].float(), mean, std, valid)
    label = batch["label"].long() * valid.long()  # clouds are unlabelled (0 = ignore)
    return {"image": image, "label": label}
