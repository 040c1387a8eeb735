"""SqueezeNet 1.0 and 1.1 (Iandola et al., 2016), built on torchvision, from scratch.

1.0 has a 7x7/96 stem; 1.1 a 3x3/64 one and earlier pooling, for about 2.4x less computation.
"""

from __future__ import annotations

from functools import partial

from torch import nn
from torchvision import models

from models.architectures._common import check_positive, replace_stem_conv

_FACTORIES = {"1.0": models.squeezenet1_0, "1.1": models.squeezenet1_1}


def _squeezenet_init(conv: nn.Conv2d) -> None:
    # torchvision initializes SqueezeNet's convolutions with Kaiming uniform and zero bias.
    nn.init.kaiming_uniform_(conv.weight)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def squeezenet(version: str, num_classes: int = 1000, img_channels: int = 3) -> nn.Module:
    """SqueezeNet ``version`` ('1.0' or '1.1')."""
    check_positive("num_classes", num_classes)
    check_positive("img_channels", img_channels)
    if version not in _FACTORIES:
        raise ValueError(f"unknown SqueezeNet version {version!r}; use one of {tuple(_FACTORIES)}")
    net = _FACTORIES[version](weights=None, num_classes=num_classes)
    replace_stem_conv(net.features, "0", img_channels, _squeezenet_init)
    return net


# A variant binds its argument positionally, keeping it out of the signature that the
# architecture registry reads options from.
squeezenet_10 = partial(squeezenet, "1.0")
squeezenet_11 = partial(squeezenet, "1.1")
