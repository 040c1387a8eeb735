"""MobileNetV2 (Sandler et al., 2018), built on torchvision, from scratch."""

from __future__ import annotations

from torch import nn
from torchvision import models

from models.architectures._stem import check_positive, replace_stem_conv


def _kaiming_fan_out(conv: nn.Conv2d) -> None:
    nn.init.kaiming_normal_(conv.weight, mode="fan_out")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def mobilenet_v2(num_classes: int = 1000, img_channels: int = 3) -> nn.Module:
    """MobileNetV2 1.0x."""
    check_positive("num_classes", num_classes)
    check_positive("img_channels", img_channels)
    net = models.mobilenet_v2(weights=None, num_classes=num_classes)
    replace_stem_conv(net.features[0], "0", img_channels, _kaiming_fan_out)
    return net
