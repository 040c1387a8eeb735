"""HarDNet (Chao et al., ICCV 2019, "HarDNet: A Low Memory Traffic Network"): 39, 68 and 85
layers, each with standard convolutions or depthwise-separable ("DS") ones.

Harmonic dense block: layer k takes the outputs of layers k - 2^n for every n with 2^n dividing
k (layer 0 is the block input); its width is growth * multiplier^n for the largest such n,
rounded to an even number. The block outputs the concatenation of the odd layers and the last
one. Each block is followed by a 1x1 "transition" conv, and by downsampling where the table
says so.

The DS variant (paper section 4, HarDNet39DS and 68DS) replaces each 3x3 conv in the blocks by
a 1x1 conv followed by a 3x3 depthwise conv, makes the stem's second conv 1x1, downsamples
with stride-2 depthwise convs instead of max pooling and uses less dropout. The paper lists
HarDNet39 only in its DS form and 85 only in its standard form; the other two combinations
(``hard_39``, ``hard_85dw``) follow the same rules.

Convolutions are bias-free and followed by BatchNorm and ReLU6; depthwise convs get BatchNorm
only.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from models.architectures._common import check_positive, init_conv_bn_

__all__ = ["HARDNET_CONFIGS", "HarDBlock", "HarDNet", "HarDNetConfig"]


@dataclass(frozen=True)
class HarDNetConfig:
    stem: tuple[int, int]  # channels of the two stem convs
    transitions: tuple[int, ...]  # 1x1 transition conv width after each block
    growth: tuple[int, ...]  # growth rate k of each block
    layers: tuple[int, ...]  # layers per block
    downsample: tuple[bool, ...]  # downsample after the block's transition
    multiplier: float  # growth multiplier m
    dropout: float  # dropout before the classifier (standard convs)
    dropout_before_last_transition: float = 0.0  # HarDNet85 only


HARDNET_CONFIGS: dict[int, HarDNetConfig] = {
    39: HarDNetConfig(
        stem=(24, 48),
        transitions=(96, 320, 640, 1024),
        growth=(16, 20, 64, 160),
        layers=(4, 16, 8, 4),
        downsample=(True, True, True, False),
        multiplier=1.6,
        dropout=0.1,
    ),
    68: HarDNetConfig(
        stem=(32, 64),
        transitions=(128, 256, 320, 640, 1024),
        growth=(14, 16, 20, 40, 160),
        layers=(8, 16, 16, 16, 4),
        downsample=(True, False, True, True, False),
        multiplier=1.7,
        dropout=0.1,
    ),
    85: HarDNetConfig(
        stem=(48, 96),
        transitions=(192, 256, 320, 480, 720, 1280),
        growth=(24, 24, 28, 36, 48, 256),
        layers=(8, 16, 16, 16, 16, 4),
        downsample=(True, False, True, False, True, False),
        multiplier=1.7,
        dropout=0.2,
        dropout_before_last_transition=0.1,
    ),
}
DEPTHWISE_DROPOUT = 0.05


def _conv_bn_relu6(inp: int, oup: int, kernel_size: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inp, oup, kernel_size, stride, kernel_size // 2, bias=False),
        nn.BatchNorm2d(oup),
        nn.ReLU6(inplace=True),
    )


def _depthwise_bn(channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, stride, 1, groups=channels, bias=False),
        nn.BatchNorm2d(channels),
    )


def harmonic_links(layer: int) -> list[int]:
    """Indices of the earlier layers that layer ``layer`` (1-based; 0 = input) reads."""
    links = []
    step = 1
    while step <= layer:
        if layer % step == 0:
            links.append(layer - step)
        step *= 2
    return links


class HarDBlock(nn.Module):
    """A harmonic densely connected block."""

    def __init__(self, inp: int, growth: int, multiplier: float, n_layers: int, depthwise: bool):
        super().__init__()
        widths = [inp]  # widths[k]: channels produced by layer k (0 = block input)
        self.links: list[list[int]] = []
        layers = []
        for k in range(1, n_layers + 1):
            links = harmonic_links(k)
            width = growth * multiplier ** (len(links) - 1)
            width = int(int(width + 1) / 2) * 2  # round to an even channel count
            in_width = sum(widths[i] for i in links)
            if depthwise:
                layers.append(
                    nn.Sequential(_conv_bn_relu6(in_width, width, 1), _depthwise_bn(width))
                )
            else:
                layers.append(_conv_bn_relu6(in_width, width, 3))
            self.links.append(links)
            widths.append(width)
        self.layers = nn.ModuleList(layers)
        self.outputs = [k for k in range(1, n_layers + 1) if k % 2 == 1 or k == n_layers]
        self.out_channels = sum(widths[k] for k in self.outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for links, layer in zip(self.links, self.layers):
            inputs = [features[i] for i in links]
            features.append(layer(inputs[0] if len(inputs) == 1 else torch.cat(inputs, 1)))
        return torch.cat([features[k] for k in self.outputs], 1)


class HarDNet(nn.Module):
    """HarDNet-``depth`` (39, 68 or 85); ``depthwise=True`` gives the DS variant."""

    def __init__(
        self,
        num_classes: int = 1000,
        img_channels: int = 3,
        depth: int = 68,
        depthwise: bool = False,
    ):
        super().__init__()
        check_positive("num_classes", num_classes)
        check_positive("img_channels", img_channels)
        if depth not in HARDNET_CONFIGS:
            raise ValueError(f"HarDNet depth must be one of {tuple(HARDNET_CONFIGS)}, got {depth}")
        cfg = HARDNET_CONFIGS[depth]

        first, second = cfg.stem
        layers: list[nn.Module] = [
            _conv_bn_relu6(img_channels, first, 3, 2),
            _conv_bn_relu6(first, second, 1 if depthwise else 3),
            _depthwise_bn(second, 2) if depthwise else nn.MaxPool2d(3, 2, 1),
        ]
        channels = second
        last = len(cfg.layers) - 1
        for i, (growth, n_layers) in enumerate(zip(cfg.growth, cfg.layers)):
            block = HarDBlock(channels, growth, cfg.multiplier, n_layers, depthwise)
            layers.append(block)
            if i == last and cfg.dropout_before_last_transition:
                layers.append(nn.Dropout(cfg.dropout_before_last_transition))
            channels = cfg.transitions[i]
            layers.append(_conv_bn_relu6(block.out_channels, channels, 1))
            if cfg.downsample[i]:
                layers.append(_depthwise_bn(channels, 2) if depthwise else nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(DEPTHWISE_DROPOUT if depthwise else cfg.dropout)
        self.fc = nn.Linear(channels, num_classes)
        init_conv_bn_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))
        return self.fc(self.dropout(torch.flatten(x, 1)))


def hardnet(depth: int, depthwise: bool, num_classes: int = 1000, img_channels: int = 3) -> HarDNet:
    """HarDNet-``depth``, the DS variant when ``depthwise``."""
    return HarDNet(num_classes, img_channels, depth, depthwise)


# A variant binds its argument positionally, keeping it out of the signature that the
# architecture registry reads options from.
hardnet39 = partial(hardnet, 39, False)
hardnet39ds = partial(hardnet, 39, True)
hardnet68 = partial(hardnet, 68, False)
hardnet68ds = partial(hardnet, 68, True)
hardnet85 = partial(hardnet, 85, False)
hardnet85ds = partial(hardnet, 85, True)
