"""GhostNet (Han et al., CVPR 2020) as the thesis trained it.

This is the early iamhankai/ghostnet.pytorch variant of the network (clamped squeeze-and-excite,
a BatchNorm1d classifier head), extended as described in thesis section 4.2.4 with
``img_channels`` (stem input channels), ``dropout`` and ``out_channels`` (width of the
classifier's hidden layer).

Parameter counts, 196 classes, RGB input: out_channels 320 -> 3,041,412; 640 -> 3,411,972;
960 -> 3,782,532; 1280 -> 4,153,092; 1600 -> 4,523,652. With 1000 classes and 1280 channels:
5,183,016 parameters and about 0.141 G multiply-adds at 224x224.

The classifier contains a BatchNorm1d, so in training mode a batch must hold at least two
images (PyTorch raises "Expected more than 1 value per channel when training" otherwise); in
eval mode a batch of one is fine.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from models.architectures._common import init_conv_bn_

__all__ = ["GHOSTNET_CONFIG", "GhostBottleneck", "GhostModule", "GhostNet", "SqueezeExcite"]

# The 16 G-bnecks of GhostNet 1.0x (thesis section 2.2, paper table 1).
# Columns: depthwise kernel size, expansion (hidden) channels, output channels,
# squeeze-and-excite (1 = yes), stride.
GHOSTNET_CONFIG: tuple[tuple[int, int, int, int, int], ...] = (
    # k, exp, out, SE, s
    (3, 16, 16, 0, 1),
    (3, 48, 24, 0, 2),
    (3, 72, 24, 0, 1),
    (5, 72, 40, 1, 2),
    (5, 120, 40, 1, 1),
    (3, 240, 80, 0, 2),
    (3, 200, 80, 0, 1),
    (3, 184, 80, 0, 1),
    (3, 184, 80, 0, 1),
    (3, 480, 112, 1, 1),
    (3, 672, 112, 1, 1),
    (5, 672, 160, 1, 2),
    (5, 960, 160, 0, 1),
    (5, 960, 160, 1, 1),
    (5, 960, 160, 0, 1),
    (5, 960, 160, 1, 1),
)

STEM_CHANNELS = 16
HEAD_CHANNELS = 960


def _make_divisible(value: float, divisor: int, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never dropping more than 10%."""
    if min_value is None:
        min_value = divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def _depthwise_bn(channels: int, kernel_size: int, stride: int, relu: bool) -> nn.Sequential:
    """Depthwise kxk convolution (padding k//2, no bias) + BatchNorm, optionally + ReLU."""
    layers: list[nn.Module] = [
        nn.Conv2d(
            channels,
            channels,
            kernel_size,
            stride,
            kernel_size // 2,
            groups=channels,
            bias=False,
        ),
        nn.BatchNorm2d(channels),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excite: average pool, Linear(c, c/4), ReLU, Linear(c/4, c), clamp to [0, 1]."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Linear(channels, channels // reduction),
            nn.ReLU(inplace=True),
            nn.Linear(channels // reduction, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels = x.shape[:2]
        scale = self.fc(self.avg_pool(x).view(batch, channels))
        scale = torch.clamp(scale, 0.0, 1.0).view(batch, channels, 1, 1)
        return x * scale


class GhostModule(nn.Module):
    """A convolution split in two: a primary 1x1 conv makes ``ceil(oup / ratio)`` intrinsic maps,
    a cheap depthwise conv derives the "ghost" maps from them; the first ``oup`` maps of the
    concatenation are kept."""

    def __init__(
        self,
        inp: int,
        oup: int,
        kernel_size: int = 1,
        ratio: int = 2,
        dw_size: int = 3,
        stride: int = 1,
        relu: bool = True,
    ):
        super().__init__()
        self.oup = oup
        init_channels = math.ceil(oup / ratio)
        new_channels = init_channels * (ratio - 1)

        primary: list[nn.Module] = [
            nn.Conv2d(inp, init_channels, kernel_size, stride, kernel_size // 2, bias=False),
            nn.BatchNorm2d(init_channels),
        ]
        cheap: list[nn.Module] = [
            nn.Conv2d(
                init_channels,
                new_channels,
                dw_size,
                1,
                dw_size // 2,
                groups=init_channels,
                bias=False,
            ),
            nn.BatchNorm2d(new_channels),
        ]
        if relu:
            primary.append(nn.ReLU(inplace=True))
            cheap.append(nn.ReLU(inplace=True))
        self.primary_conv = nn.Sequential(*primary)
        self.cheap_operation = nn.Sequential(*cheap)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        intrinsic = self.primary_conv(x)
        ghosts = self.cheap_operation(intrinsic)
        return torch.cat([intrinsic, ghosts], dim=1)[:, : self.oup]


class GhostBottleneck(nn.Module):
    """G-bneck: expand (GhostModule + ReLU) -> [strided depthwise conv + BN, stride 2 only] ->
    [squeeze-and-excite] -> project (GhostModule, linear), plus a shortcut."""

    def __init__(
        self, inp: int, hidden: int, oup: int, kernel_size: int, stride: int, use_se: bool
    ):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"G-bneck stride must be 1 or 2, got {stride}")
        layers: list[nn.Module] = [GhostModule(inp, hidden, kernel_size=1, relu=True)]
        if stride == 2:
            layers.append(_depthwise_bn(hidden, kernel_size, stride, relu=False))
        if use_se:
            layers.append(SqueezeExcite(hidden))
        layers.append(GhostModule(hidden, oup, kernel_size=1, relu=False))
        self.conv = nn.Sequential(*layers)

        if stride == 1 and inp == oup:
            self.shortcut = nn.Sequential()
        else:
            self.shortcut = nn.Sequential(
                _depthwise_bn(inp, kernel_size, stride, relu=False),
                nn.Conv2d(inp, oup, 1, 1, 0, bias=False),
                nn.BatchNorm2d(oup),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.shortcut(x)


class GhostNet(nn.Module):
    """GhostNet 1.0x with the thesis's extensions.

    Args:
        num_classes: size of the output layer.
        img_channels: input channels (3 for RGB, 1 for grayscale).
        dropout: dropout rate before the last Linear layer.
        out_channels: width of the classifier's hidden layer (1280 in the paper).
        width_mult: channel multiplier for the stem, the G-bnecks and the 1x1 head conv.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        img_channels: int = 3,
        dropout: float = 0.2,
        out_channels: int = 1280,
        width_mult: float = 1.0,
    ):
        super().__init__()
        for name, value in (
            ("num_classes", num_classes),
            ("img_channels", img_channels),
            ("out_channels", out_channels),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"GhostNet {name} must be a positive integer, got {value!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"GhostNet dropout must be in [0, 1), got {dropout!r}")
        if not float(width_mult) > 0.0:
            raise ValueError(f"GhostNet width_mult must be positive, got {width_mult!r}")
        self.num_classes = num_classes
        self.img_channels = img_channels
        self.dropout = dropout
        self.out_channels = out_channels
        self.width_mult = width_mult

        # Stem: 3x3 conv, stride 2.
        channels = _make_divisible(STEM_CHANNELS * width_mult, 4)
        layers: list[nn.Module] = [
            nn.Sequential(
                nn.Conv2d(img_channels, channels, 3, 2, 1, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
            )
        ]
        # The 16 G-bnecks.
        for kernel, expansion, out, use_se, stride in GHOSTNET_CONFIG:
            block_out = _make_divisible(out * width_mult, 4)
            hidden = _make_divisible(expansion * width_mult, 4)
            layers.append(
                GhostBottleneck(channels, hidden, block_out, kernel, stride, bool(use_se))
            )
            channels = block_out
        self.features = nn.Sequential(*layers)

        # Head: 1x1 conv to 960 channels, global average pool.
        head_channels = _make_divisible(HEAD_CHANNELS * width_mult, 4)
        self.squeeze = nn.Sequential(
            nn.Conv2d(channels, head_channels, 1, 1, 0, bias=False),
            nn.BatchNorm2d(head_channels),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d((1, 1)),
        )
        self.classifier = nn.Sequential(
            nn.Linear(head_channels, out_channels, bias=False),
            nn.BatchNorm1d(out_channels),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(out_channels, num_classes),
        )
        init_conv_bn_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.squeeze(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def ghostnet(
    num_classes: int = 1000,
    img_channels: int = 3,
    dropout: float = 0.2,
    out_channels: int = 1280,
    width_mult: float = 1.0,
) -> GhostNet:
    """Build GhostNet; the constructor registered as ``ghost`` in ``models.arch_dict``."""
    return GhostNet(
        num_classes=num_classes,
        img_channels=img_channels,
        dropout=dropout,
        out_channels=out_channels,
        width_mult=width_mult,
    )
