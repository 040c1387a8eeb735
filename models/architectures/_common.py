"""What the architectures share: argument checks, weight initialisation, the stem swap."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn


def check_positive(name: str, value: int) -> None:
    """Raise ValueError unless ``value`` is a positive integer."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def kaiming_fan_out_(conv: nn.Conv2d) -> None:
    """He-normal weights scaled by fan-out (gain for ReLU) and a zero bias."""
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def init_conv_bn_(net: nn.Module) -> None:
    """``kaiming_fan_out_`` for every Conv2d, unit scale and zero shift for every BatchNorm2d."""
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            kaiming_fan_out_(module)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def replace_stem_conv(
    parent: nn.Module,
    name: str,
    img_channels: int,
    init: Callable[[nn.Conv2d], None] | None = None,
) -> None:
    """Swap ``parent.<name>`` (a Conv2d) for one of the same shape reading ``img_channels``.

    ``init`` re-initializes the new convolution the way the network initializes its others;
    without it the new layer keeps PyTorch's default initialization. Nothing changes when the
    channel count already matches, so RGB networks are exactly torchvision's.
    """
    old = getattr(parent, name) if not name.isdigit() else parent[int(name)]
    if not isinstance(old, nn.Conv2d):
        raise TypeError(f"expected a Conv2d stem, found {type(old).__name__}")
    if old.in_channels == img_channels:
        return
    new = nn.Conv2d(
        img_channels,
        old.out_channels,
        kernel_size=old.kernel_size,
        stride=old.stride,
        padding=old.padding,
        dilation=old.dilation,
        groups=1,
        bias=old.bias is not None,
        padding_mode=old.padding_mode,
    )
    if init is not None:
        init(new)
    if name.isdigit():
        parent[int(name)] = new
    else:
        setattr(parent, name, new)
