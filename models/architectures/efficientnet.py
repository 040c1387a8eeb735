"""EfficientNet B0-B7 (Tan and Le, 2019), built on torchvision, from scratch."""

from __future__ import annotations

from functools import partial

from torch import nn
from torchvision import models

from models.architectures._common import check_positive, kaiming_fan_out_, replace_stem_conv


def efficientnet(variant: str, num_classes: int = 1000, img_channels: int = 3) -> nn.Module:
    """EfficientNet-``variant`` ('b0' ... 'b7') with torchvision's dropout and init."""
    check_positive("num_classes", num_classes)
    check_positive("img_channels", img_channels)
    factory = getattr(models, f"efficientnet_{variant}", None)
    if factory is None or variant not in VARIANTS:
        raise ValueError(f"unknown EfficientNet variant {variant!r}; use one of {VARIANTS}")
    net = factory(weights=None, num_classes=num_classes)
    replace_stem_conv(net.features[0], "0", img_channels, kaiming_fan_out_)
    return net


VARIANTS = ("b0", "b1", "b2", "b3", "b4", "b5", "b6", "b7")

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
