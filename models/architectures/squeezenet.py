"""SqueezeNet 1.0 and 1.1 (Iandola et al., 2016), built on torchvision, from scratch."""

from __future__ import annotations

from torch import nn
from torchvision import models

from models.architectures._stem import check_positive, replace_stem_conv


def _squeezenet_init(conv: nn.Conv2d) -> None:
    # torchvision initializes SqueezeNet's convolutions with Kaiming uniform and zero bias.
    nn.init.kaiming_uniform_(conv.weight)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def _build(factory, num_classes: int, img_channels: int) -> nn.Module:
    check_positive("num_classes", num_classes)
    check_positive("img_channels", img_channels)
    net = factory(weights=None, num_classes=num_classes)
    replace_stem_conv(net.features, "0", img_channels, _squeezenet_init)
    return net


def squeezenet_10(num_classes: int = 1000, img_channels: int = 3) -> nn.Module:
    """SqueezeNet 1.0 (7x7/96 stem)."""
    return _build(models.squeezenet1_0, num_classes, img_channels)


def squeezenet_11(num_classes: int = 1000, img_channels: int = 3) -> nn.Module:
    """SqueezeNet 1.1 (3x3/64 stem, earlier pooling: about 2.4x less computation)."""
    return _build(models.squeezenet1_1, num_classes, img_channels)
