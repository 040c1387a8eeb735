"""MobileNetV2 (Sandler et al., 2018), built on torchvision, from scratch."""

from __future__ import annotations

from torch import nn
from torchvision import models

from models.architectures._common import check_positive, kaiming_fan_out_, replace_stem_conv


def mobilenet_v2(num_classes: int = 1000, img_channels: int = 3) -> nn.Module:
    """MobileNetV2 1.0x."""
    check_positive("num_classes", num_classes)
    check_positive("img_channels", img_channels)
    net = models.mobilenet_v2(weights=None, num_classes=num_classes)
    replace_stem_conv(net.features[0], "0", img_channels, kaiming_fan_out_)
    return net
