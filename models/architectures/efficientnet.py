"""EfficientNet B0-B7 (Tan and Le, ICML 2019), built as the thesis's code built it (its
`models/architectures/efficientnet.py`), from scratch.

What sets it apart from torchvision's EfficientNet:
- TensorFlow-style asymmetric padding: before each convolution a zero pad of ``kernel -
  stride`` pixels in all, the odd one on the right and bottom, so a 227x227 input ends in a
  7x7 feature map (torchvision pads ``(kernel - 1) // 2`` on every side: 8x8).
- Drop-connect (a residual branch dropped per image while training) at a constant rate of 0.2
  in every block, where torchvision raises the rate linearly from 0 towards 0.2 over the
  blocks.
- BatchNorm with PyTorch's defaults (eps 1e-5, momentum 0.1; torchvision: 1e-3, 0.01), and the
  original's initialization: Kaiming-normal (fan-out) convolutions with zero biases, unit
  BatchNorm, the classifier uniform in +-1/sqrt(classes).
Same layer shapes and parameter counts as torchvision's and the paper's.

Network: 3x3 stem conv (stride 2) -> MBConv blocks in seven stages -> 1x1 conv to 1280*width
channels -> global average pool -> dropout -> fully connected layer. Every convolution is
followed by BatchNorm and Swish (x * sigmoid(x), ``nn.SiLU``), except a block's last 1x1
projection (BatchNorm only).
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn

from models.architectures._common import check_positive

# Variant -> (width multiplier, depth multiplier, dropout before the classifier).
VARIANTS: dict[str, tuple[float, float, float]] = {
    "b0": (1.0, 1.0, 0.2),
    "b1": (1.0, 1.1, 0.2),
    "b2": (1.1, 1.2, 0.3),
    "b3": (1.2, 1.4, 0.3),
    "b4": (1.4, 1.8, 0.4),
    "b5": (1.6, 2.2, 0.4),
    "b6": (1.8, 2.6, 0.5),
    "b7": (2.0, 3.1, 0.5),
}
# The B0 stages: (expansion, output channels, blocks, stride of the first block, kernel).
STAGES = (
    (1, 16, 1, 1, 3),
    (6, 24, 2, 2, 3),
    (6, 40, 2, 2, 5),
    (6, 80, 3, 2, 3),
    (6, 112, 3, 1, 5),
    (6, 192, 4, 2, 5),
    (6, 320, 1, 1, 3),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
DROP_CONNECT = 0.2
SE_REDUCTION = 4


def same_padding(kernel: int, stride: int) -> nn.ZeroPad2d:
    """``kernel - stride`` zero pixels in all (none when negative), the odd one right and below."""
    total = max(kernel - stride, 0)
    before, after = total // 2, total - total // 2
    return nn.ZeroPad2d((before, after, before, after))


def _conv_bn_swish(
    inp: int, oup: int, kernel: int, stride: int = 1, groups: int = 1
) -> nn.Sequential:
    return nn.Sequential(
        same_padding(kernel, stride),
        nn.Conv2d(inp, oup, kernel, stride, padding=0, groups=groups, bias=False),
        nn.BatchNorm2d(oup),
        nn.SiLU(),
    )


def drop_connect(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """While training, zero each image's ``x`` with probability ``rate`` and scale the kept
    ones by 1 / (1 - rate); unchanged in evaluation."""
    if not training or rate == 0:
        return x
    keep = 1.0 - rate
    mask = torch.empty((x.shape[0], 1, 1, 1), dtype=x.dtype, device=x.device).bernoulli_(keep)
    return x / keep * mask


class SqueezeExcitation(nn.Module):
    """Channel weights from the pooled map: 1x1 conv down, Swish, 1x1 conv up, sigmoid."""

    def __init__(self, channels: int, reduced: int):
        super().__init__()
        self.se = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, reduced, 1),
            nn.SiLU(),
            nn.Conv2d(reduced, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.se(x)


class MBConvBlock(nn.Module):
    """1x1 expansion (when ``expand`` > 1) -> depthwise conv -> squeeze-excitation -> 1x1
    projection; with the same shape in and out, added to the input after drop-connect."""

    def __init__(self, inp: int, oup: int, expand: int, kernel: int, stride: int):
        super().__init__()
        hidden = inp * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn_swish(inp, hidden, 1))
        layers += [
            _conv_bn_swish(hidden, hidden, kernel, stride, groups=hidden),
            SqueezeExcitation(hidden, max(1, inp // SE_REDUCTION)),
            nn.Conv2d(hidden, oup, 1, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_residual = inp == oup and stride == 1
        self.drop_connect_rate = DROP_CONNECT

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.use_residual:
            return self.conv(x)
        return x + drop_connect(self.conv(x), self.drop_connect_rate, self.training)


def round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """``channels * width`` to the nearest multiple of ``divisor``, never more than 10% below."""
    if width == 1.0:
        return channels
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


def _init_weights(net: nn.Module) -> None:
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            bound = 1.0 / math.sqrt(module.out_features)
            nn.init.uniform_(module.weight, -bound, bound)
            nn.init.zeros_(module.bias)


class EfficientNet(nn.Module):
    """EfficientNet with the given width and depth multipliers and classifier dropout."""

    def __init__(
        self,
        num_classes: int = 1000,
        img_channels: int = 3,
        width: float = 1.0,
        depth: float = 1.0,
        dropout: float = 0.2,
    ):
        super().__init__()
        check_positive("num_classes", num_classes)
        check_positive("img_channels", img_channels)
        channels = round_filters(STEM_CHANNELS, width)
        features: list[nn.Module] = [_conv_bn_swish(img_channels, channels, 3, 2)]
        for expand, stage_channels, blocks, stride, kernel in STAGES:
            out = round_filters(stage_channels, width)
            for i in range(math.ceil(blocks * depth)):
                features.append(MBConvBlock(channels, out, expand, kernel, stride if i == 0 else 1))
                channels = out
        head = round_filters(HEAD_CHANNELS, width)
        features.append(_conv_bn_swish(channels, head, 1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(head, num_classes))
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean((2, 3)))


def efficientnet(variant: str, num_classes: int = 1000, img_channels: int = 3) -> EfficientNet:
    """EfficientNet-``variant`` ('b0' ... 'b7') with its width, depth and dropout."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown EfficientNet variant {variant!r}; use one of {tuple(VARIANTS)}")
    width, depth, dropout = VARIANTS[variant]
    return EfficientNet(num_classes, img_channels, width, depth, dropout)


# A variant binds its argument positionally, keeping it out of the signature that the
# architecture registry reads options from.
efficientnet_b0 = partial(efficientnet, "b0")
efficientnet_b1 = partial(efficientnet, "b1")
efficientnet_b2 = partial(efficientnet, "b2")
efficientnet_b3 = partial(efficientnet, "b3")
efficientnet_b4 = partial(efficientnet, "b4")
efficientnet_b5 = partial(efficientnet, "b5")
efficientnet_b6 = partial(efficientnet, "b6")
efficientnet_b7 = partial(efficientnet, "b7")
