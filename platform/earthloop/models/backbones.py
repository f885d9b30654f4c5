"""ResNet encoders for multispectral input, written in plain torch.

Why not torchvision: it is not installed beside this torch build, and the only thing we need from
it is the *parameter naming*, so checkpoints published for torchvision/timm ResNets (e.g. the SeCo
ResNet-18 weights TorchGeo redistributes) load by name. The modules here therefore use exactly the
torchvision/timm attribute names: ``conv1``, ``bn1``, ``layer1``..``layer4``, blocks with
``conv1``/``bn1``/``conv2``/``bn2``(/``conv3``/``bn3``) and ``downsample.0``/``downsample.1``.
There is no ``fc`` parameter (``fc`` is an :class:`~torch.nn.Identity`): pretraining methods attach
their own heads, and an ``fc.*`` key in an external checkpoint is a classifier we drop.

Only ``conv1`` depends on the number of input bands, so the same architecture serves RGB (3),
the ten 10/20 m bands, or all 12/13 Sentinel-2 bands.

Architectures (``build_backbone`` names):

=============== ========== ================ =============== ============
name            block      blocks per stage stage widths    num_features
=============== ========== ================ =============== ============
``resnet18``    BasicBlock 2, 2, 2, 2       64,128,256,512  512
``resnet34``    BasicBlock 3, 4, 6, 3       64,128,256,512  512
``resnet50``    Bottleneck 3, 4, 6, 3       64,128,256,512  2048 (x4)
``resnet_tiny`` BasicBlock 1, 1, 1, 1       16,32,64,128    128
=============== ========== ================ =============== ============

``resnet_tiny`` has a 16-channel stem and 0.31 M parameters (stage maps of a 64x64 input:
16x32x32, 16x16x16, 32x8x8, 64x4x4, 128x2x2); it exists so CPU tests and demos run
in seconds. It is *not* timm's ``resnet10t`` (which has a deep tiered stem with different parameter
names), so no external checkpoint maps onto it.

All variants keep the standard stride-2 7x7 stem + max-pool, so the stage outputs have strides
2 (stem), 4, 8, 16 and 32; inputs whose sides are multiples of 32 give integer feature maps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = [
    "ARCHITECTURES",
    "Backbone",
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "ResNetSpec",
    "build_backbone",
]


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or 1x1-projected) shortcut (He et al. 2016)."""

    expansion = 1

    def __init__(self, in_ch: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_ch = width * self.expansion
        self.conv1 = _conv3x3(in_ch, width, stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(width, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            # Sequential so the keys are downsample.0 (conv) / downsample.1 (bn) as in torchvision.
            self.downsample = nn.Sequential(_conv1x1(in_ch, out_ch, stride), nn.BatchNorm2d(out_ch))

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4); stride on the 3x3 ("ResNet v1.5", as torchvision/timm)."""

    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_ch = width * self.expansion
        self.conv1 = _conv1x1(in_ch, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = _conv1x1(width, out_ch)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(_conv1x1(in_ch, out_ch, stride), nn.BatchNorm2d(out_ch))

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


BlockType = type[BasicBlock] | type[Bottleneck]


@dataclass(frozen=True)
class ResNetSpec:
    """Shape of one ResNet variant (see the module table)."""

    block: BlockType
    layers: tuple[int, int, int, int]
    widths: tuple[int, int, int, int] = (64, 128, 256, 512)
    stem_width: int = 64


ARCHITECTURES: dict[str, ResNetSpec] = {
    "resnet18": ResNetSpec(BasicBlock, (2, 2, 2, 2)),
    "resnet34": ResNetSpec(BasicBlock, (3, 4, 6, 3)),
    "resnet50": ResNetSpec(Bottleneck, (3, 4, 6, 3)),
    "resnet_tiny": ResNetSpec(BasicBlock, (1, 1, 1, 1), widths=(16, 32, 64, 128), stem_width=16),
}


class ResNet(nn.Module):
    """A ResNet trunk without classifier, for any number of input bands.

    ``forward`` returns the global-average-pooled ``(B, num_features)`` vector (what instance-level
    contrast such as SeCo/MoCo projects); ``forward_features`` returns the five stage maps that a
    U-Net decoder needs as skips.

    Attributes:
        arch: registry name (recorded in exported weights so loaders can check it).
        in_channels: number of input bands ``conv1`` accepts.
        num_features: width of the pooled vector (512 for resnet18/34, 2048 for resnet50).
        feature_channels: channels of the five ``forward_features`` maps.
        feature_strides: their downsampling factors (2, 4, 8, 16, 32).
    """

    def __init__(self, spec: ResNetSpec, in_channels: int, *, arch: str = "custom") -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        self.arch = arch
        self.in_channels = in_channels
        self.conv1 = nn.Conv2d(
            in_channels, spec.stem_width, kernel_size=7, stride=2, padding=3, bias=False
        )
        self.bn1 = nn.BatchNorm2d(spec.stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        ch = spec.stem_width
        stages: list[nn.Sequential] = []
        for i, (n_blocks, width) in enumerate(zip(spec.layers, spec.widths, strict=True)):
            stride = 1 if i == 0 else 2
            blocks: list[nn.Module] = []
            for b in range(n_blocks):
                blocks.append(spec.block(ch, width, stride if b == 0 else 1))
                ch = width * spec.block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        # Kept as Identity so code written for torchvision (``model.fc``) still works and so a
        # state_dict never carries classifier weights.
        self.fc = nn.Identity()
        self.num_features = ch
        self.feature_channels: list[int] = [spec.stem_width] + [
            w * spec.block.expansion for w in spec.widths
        ]
        self.feature_strides: list[int] = [2, 4, 8, 16, 32]
        self._init_weights()

    def _init_weights(self) -> None:
        # He init (fan_out) for convolutions and unit/zero BN, the torchvision defaults, so a
        # randomly initialised backbone behaves like the one the published recipes started from.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """Stage outputs ``[stem, layer1, layer2, layer3, layer4]`` at strides 2, 4, 8, 16, 32."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{self.arch} expects (B, {self.in_channels}, H, W) input, got {tuple(x.shape)}"
            )
        stem = self.relu(self.bn1(self.conv1(x)))
        f1 = self.layer1(self.maxpool(stem))
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        f4 = self.layer4(f3)
        return [stem, f1, f2, f3, f4]

    def pool(self, last_stage: Tensor) -> Tensor:
        """Global average pool of a ``layer4`` map to ``(B, num_features)``."""
        return torch.flatten(self.avgpool(last_stage), 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.forward_features(x)[-1]))


Backbone = ResNet
"""The backbone type every model in this package builds on."""


def _builder(name: str, spec: ResNetSpec) -> Callable[[int], ResNet]:
    def build(in_channels: int) -> ResNet:
        return ResNet(spec, in_channels, arch=name)

    return build


_BUILDERS: dict[str, Callable[[int], ResNet]] = {
    name: _builder(name, spec) for name, spec in ARCHITECTURES.items()
}


def build_backbone(name: str, in_channels: int) -> Backbone:
    """Build a randomly initialised backbone by registry name (see the module table).

    ``in_channels`` is the number of bands the model will see (1..13 for Sentinel-2; more works,
    e.g. with added indices).
    """
    key = name.strip().lower()
    if key not in _BUILDERS:
        raise KeyError(f"unknown backbone {name!r}; available: {', '.join(sorted(_BUILDERS))}")
    return _BUILDERS[key](in_channels)
