"""SqueezeNext-23 (Gholami et al., CVPR-W 2018, "SqueezeNext: Hardware-Aware Neural Network
Design"), 1.0x and 2.0x wide, in the paper's v1 and v5 block arrangements, built as the thesis's
code built it (its `models/architectures/squeezenext.py`).

Layout:
  7x7 conv (stride 2, no padding) + BN + ReLU -> 2x2 max pool
  -> four stages of SqueezeNext blocks with 32*w, 64*w, 128*w, 256*w output channels
     (the first block of stages 2-4 downsamples with stride 2 in its first 1x1 conv)
  -> 1x1 conv to 128*w channels + BN + ReLU -> 4x4 average pool -> fully connected layer.
23 layers = 1 (stem) + 21 blocks + 1 (final 1x1 conv).
  v1: [6, 6, 8, 1] blocks per stage;  v5: [2, 4, 14, 1].

Block: a two-stage 1x1 bottleneck, a 1x3 then a 3x1 convolution, a 1x1 expansion, each with BN
and ReLU; the ReLU'd shortcut (a 1x1 projection + BN when the shape changes) is added and the
sum goes through a ReLU. Every convolution carries a bias, and every layer keeps PyTorch's
default initialization, as in the thesis's code.

The fixed 4x4 average pool leaves the 1x1 map the classifier needs only when the last feature
map is 4 to 7 pixels high and wide: inputs from 105 to 232 pixels a side (227x227, the thesis's
size, gives 7x7). Other sizes raise a ValueError naming that range.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn
from torch.nn import functional as F

from models.architectures._common import check_positive

__all__ = [
    "INPUT_RANGE",
    "SQUEEZENEXT_BLOCKS",
    "SqueezeNext",
    "SqueezeNextBlock",
    "squeezenext23",
    "squeezenext23_10",
    "squeezenext23_10_v5",
    "squeezenext23_20",
    "squeezenext23_20_v5",
]

STEM_CHANNELS = 64
STAGE_CHANNELS = (32, 64, 128, 256)
FINAL_CHANNELS = 128
FINAL_POOL = 4
SQUEEZENEXT_BLOCKS = {"v1": (6, 6, 8, 1), "v5": (2, 4, 14, 1)}
# Smallest and largest input side whose last feature map the 4x4 pool turns into 1x1.
INPUT_RANGE = (105, 232)


def _conv_bn_relu(
    inp: int,
    oup: int,
    kernel_size: int | tuple[int, int],
    stride: int = 1,
    padding: int | tuple[int, int] = 0,
) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inp, oup, kernel_size, stride, padding, bias=True),
        nn.BatchNorm2d(oup),
        nn.ReLU(inplace=True),
    )


class SqueezeNextBlock(nn.Module):
    """1x1 squeeze -> 1x1 squeeze -> 1x3 -> 3x1 -> 1x1 expand, plus the ReLU'd shortcut."""

    def __init__(self, inp: int, oup: int, stride: int):
        super().__init__()
        if stride == 2:
            reduced = inp  # a downsampling block keeps the width through its first conv
        elif inp > oup:
            reduced = inp // 4
        else:
            reduced = inp // 2
        self.body = nn.Sequential(
            _conv_bn_relu(inp, reduced, 1, stride),
            _conv_bn_relu(reduced, reduced // 2, 1),
            _conv_bn_relu(reduced // 2, reduced, (1, 3), padding=(0, 1)),
            _conv_bn_relu(reduced, reduced, (3, 1), padding=(1, 0)),
            _conv_bn_relu(reduced, oup, 1),
        )
        if stride == 1 and inp == oup:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(inp, oup, 1, stride, bias=True),
                nn.BatchNorm2d(oup),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + F.relu(self.shortcut(x)))


class SqueezeNext(nn.Module):
    """SqueezeNext-23 with width multiplier ``width`` and blocks per stage ``blocks``."""

    def __init__(
        self,
        num_classes: int = 1000,
        img_channels: int = 3,
        width: float = 1.0,
        blocks: tuple[int, int, int, int] = SQUEEZENEXT_BLOCKS["v1"],
    ):
        super().__init__()
        check_positive("num_classes", num_classes)
        check_positive("img_channels", img_channels)
        channels = int(STEM_CHANNELS * width)
        self.stem = nn.Sequential(
            _conv_bn_relu(img_channels, channels, 7, 2),
            nn.MaxPool2d(2),
        )
        stages = []
        for stage, (n_blocks, stage_channels) in enumerate(zip(blocks, STAGE_CHANNELS)):
            out = int(stage_channels * width)
            layers = []
            for i in range(n_blocks):
                stride = 2 if stage > 0 and i == 0 else 1
                layers.append(SqueezeNextBlock(channels, out, stride))
                channels = out
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        final = int(FINAL_CHANNELS * width)
        self.final_conv = _conv_bn_relu(channels, final, 1)
        self.pool = nn.AvgPool2d(FINAL_POOL)
        self.fc = nn.Linear(final, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = tuple(x.shape[-2:])
        x = self.final_conv(self.stages(self.stem(x)))
        # The original's pool is fixed, so only one input range leaves a 1x1 map to classify.
        if min(x.shape[-2:]) < FINAL_POOL or max(x.shape[-2:]) >= 2 * FINAL_POOL:
            low, high = INPUT_RANGE
            raise ValueError(
                f"SqueezeNext takes images from {low}x{low} to {high}x{high} pixels (its last "
                f"feature map must be {FINAL_POOL} to {2 * FINAL_POOL - 1} pixels a side for the "
                f"{FINAL_POOL}x{FINAL_POOL} average pool); got {size[0]}x{size[1]}"
            )
        return self.fc(torch.flatten(self.pool(x), 1))


def squeezenext23(
    width: float, version: str, num_classes: int = 1000, img_channels: int = 3
) -> SqueezeNext:
    """``width``-SqNxt-23 with the ``version`` ('v1' or 'v5') block arrangement."""
    if version not in SQUEEZENEXT_BLOCKS:
        raise ValueError(
            f"unknown SqueezeNext version {version!r}; use one of {tuple(SQUEEZENEXT_BLOCKS)}"
        )
    return SqueezeNext(num_classes, img_channels, width, SQUEEZENEXT_BLOCKS[version])


# A variant binds its argument positionally, keeping it out of the signature that the
# architecture registry reads options from.
squeezenext23_10 = partial(squeezenext23, 1.0, "v1")
squeezenext23_10_v5 = partial(squeezenext23, 1.0, "v5")
squeezenext23_20 = partial(squeezenext23, 2.0, "v1")
squeezenext23_20_v5 = partial(squeezenext23, 2.0, "v5")
