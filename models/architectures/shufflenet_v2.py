"""ShuffleNetV2 x0.5/x1.0/x1.5/x2.0 (Ma et al., 2018), built on torchvision, from scratch."""

from __future__ import annotations

from functools import partial

from torch import nn
from torchvision import models

from models.architectures._common import check_positive, replace_stem_conv

_FACTORIES = {
    "x05": models.shufflenet_v2_x0_5,
    "x10": models.shufflenet_v2_x1_0,
    "x15": models.shufflenet_v2_x1_5,
    "x20": models.shufflenet_v2_x2_0,
}


def shufflenet_v2(width: str, num_classes: int = 1000, img_channels: int = 3) -> nn.Module:
    """ShuffleNetV2 of the given width ('x05', 'x10', 'x15', 'x20').

    torchvision keeps PyTorch's default initialization for this network, and so does the
    replaced stem convolution.
    """
    check_positive("num_classes", num_classes)
    check_positive("img_channels", img_channels)
    if width not in _FACTORIES:
        raise ValueError(f"unknown ShuffleNetV2 width {width!r}; use one of {tuple(_FACTORIES)}")
    net = _FACTORIES[width](weights=None, num_classes=num_classes)
    replace_stem_conv(net.conv1, "0", img_channels)
    return net


# A variant binds its argument positionally, keeping it out of the signature that the
# architecture registry reads options from.
shufflenet_v2_x05 = partial(shufflenet_v2, "x05")
shufflenet_v2_x10 = partial(shufflenet_v2, "x10")
shufflenet_v2_x15 = partial(shufflenet_v2, "x15")
shufflenet_v2_x20 = partial(shufflenet_v2, "x20")
