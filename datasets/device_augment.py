"""The configured augmentations run batched on the training device (``augment_on: device``).

Batches arrive as uint8 ``(B, C, H, W)`` (resized, grayscale when configured); each
torchvision transform named in the config maps to the kornia transform that draws its random
parameters per image from the same ranges, with the same probability. Order is kept: image
augmentations, then tensor augmentations, then Normalize. A transform or parameter with no
device equivalent raises ``UnsupportedOnDevice``, which the config check reports.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

import kornia.augmentation as K
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from torch import nn

from datasets.preprocessing import Augmentation, Preprocessing


class UnsupportedOnDevice(ValueError):
    """A configured transform (or one of its parameters) that cannot run on the device."""


_RESAMPLE = {
    T.InterpolationMode.NEAREST: "nearest",
    T.InterpolationMode.BILINEAR: "bilinear",
    T.InterpolationMode.BICUBIC: "bicubic",
}
# PIL's integer codes, which torchvision also takes.
_PIL_RESAMPLE = {
    0: T.InterpolationMode.NEAREST,
    2: T.InterpolationMode.BILINEAR,
    3: T.InterpolationMode.BICUBIC,
}


class _Grayscale(nn.Module):
    """torchvision's ``Grayscale``: ITU-R 601 luma, ``num_output_channels`` 1 or 3."""

    def __init__(self, num_output_channels: int = 1) -> None:
        super().__init__()
        self.num_output_channels = num_output_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            return x.expand(-1, self.num_output_channels, -1, -1).contiguous()
        return TF.rgb_to_grayscale(x, self.num_output_channels)


def _resample(name: str, value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = _PIL_RESAMPLE.get(value, value)
    if isinstance(value, str):
        value = T.InterpolationMode(value.lower())
    if value not in _RESAMPLE:
        raise UnsupportedOnDevice(
            f"{name}: interpolation {value!r} has no device equivalent; use nearest, bilinear "
            "or bicubic"
        )
    return _RESAMPLE[value]


def _zero_fill(name: str, fill: Any) -> None:
    values = fill if isinstance(fill, list | tuple) else [fill]
    if any(float(v) != 0 for v in values):
        raise UnsupportedOnDevice(f"{name}: only fill 0 is supported on the device, got {fill!r}")


def _affine(name: str, a: dict) -> nn.Module:
    if a["center"] is not None:
        raise UnsupportedOnDevice(f"{name}: 'center' is not supported on the device")
    fill = a["fill"]
    values = [float(v) for v in (fill if isinstance(fill, list | tuple) else [fill])]
    padding: dict[str, Any] = {"padding_mode": "zeros"}
    if any(values):  # torchvision fills in pixel units, the device works in [0, 1]
        padding = {"padding_mode": "fill", "fill_value": torch.tensor(values) / 255.0}
    return K.RandomAffine(
        degrees=a["degrees"],
        translate=a["translate"],
        scale=a["scale"],
        shear=a["shear"],
        resample=_resample(name, a["interpolation"]),
        p=1.0,
        **padding,
    )


def _rotation(name: str, a: dict) -> nn.Module:
    if a["expand"] or a["center"] is not None:
        raise UnsupportedOnDevice(f"{name}: 'expand' and 'center' are not supported on the device")
    _zero_fill(name, a["fill"])
    # align_corners False is how torchvision's rotation samples the grid.
    return K.RandomRotation(
        degrees=a["degrees"],
        resample=_resample(name, a["interpolation"]),
        align_corners=False,
        p=1.0,
    )


def _perspective(name: str, a: dict) -> nn.Module:
    _zero_fill(name, a["fill"])
    return K.RandomPerspective(
        distortion_scale=a["distortion_scale"],
        resample=_resample(name, a["interpolation"]),
        p=a["p"],
    )


def _resized_crop(name: str, a: dict) -> nn.Module:
    size = a["size"]
    size = (size, size) if isinstance(size, int) else tuple(size)
    if len(size) == 1:
        size = (size[0], size[0])
    return K.RandomResizedCrop(
        size=size,
        scale=tuple(a["scale"]),
        ratio=tuple(a["ratio"]),
        resample=_resample(name, a["interpolation"]),
    )


def _erasing(name: str, a: dict) -> nn.Module:
    value = a["value"]
    if isinstance(value, list | tuple) and len(set(value)) == 1:
        value = value[0]
    if isinstance(value, str | list | tuple):
        raise UnsupportedOnDevice(
            f"{name}: only a single number as 'value' is supported on the device, got {value!r}"
        )
    return K.RandomErasing(
        scale=tuple(a["scale"]), ratio=tuple(a["ratio"]), value=float(value), p=a["p"]
    )


_BUILDERS: dict[str, Callable[[str, dict], nn.Module]] = {
    "RandomHorizontalFlip": lambda _, a: K.RandomHorizontalFlip(p=a["p"]),
    "RandomVerticalFlip": lambda _, a: K.RandomVerticalFlip(p=a["p"]),
    "RandomAffine": _affine,
    "ColorJitter": lambda _, a: K.ColorJitter(
        a["brightness"], a["contrast"], a["saturation"], a["hue"], p=1.0
    ),
    "RandomErasing": _erasing,
    "RandomResizedCrop": _resized_crop,
    "RandomRotation": _rotation,
    "RandomPerspective": _perspective,
    "Grayscale": lambda _, a: _Grayscale(a["num_output_channels"]),
    "RandomGrayscale": lambda _, a: K.RandomGrayscale(p=a["p"]),
    "Normalize": lambda _, a: K.Normalize(mean=a["mean"], std=a["std"]),
}
SUPPORTED = tuple(_BUILDERS)


def device_transform(augmentation: Augmentation) -> nn.Module:
    """The kornia (or local) module equal in distribution to one configured transform."""
    name = augmentation.name
    if name not in _BUILDERS:
        raise UnsupportedOnDevice(
            f"'{name}' has no device equivalent for augment_on: device (supported: "
            f"{', '.join(SUPPORTED)}); remove it or set augment_on: cpu"
        )
    try:
        bound = inspect.signature(getattr(T, name)).bind(**augmentation.params)
    except TypeError as err:
        raise UnsupportedOnDevice(f"{name}: invalid parameters ({err})") from None
    bound.apply_defaults()
    return _BUILDERS[name](name, dict(bound.arguments))


class DeviceAugmenter(nn.Module):
    """uint8 batch -> float batch in [0, 1] -> [augmentations, when training] -> [Normalize]."""

    def __init__(
        self, preprocessing: Preprocessing, augmentations: Iterable[Augmentation] = ()
    ) -> None:
        super().__init__()
        self.augment = nn.Sequential(*(device_transform(a) for a in augmentations))
        mean, std = preprocessing.input_mean_std()
        self.normalize = preprocessing.normalize
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor, train: bool = True) -> torch.Tensor:
        x = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
        if train and len(self.augment):
            x = self.augment(x)
        if self.normalize:
            x = (x - self.mean.to(x.device)) / self.std.to(x.device)
        return x
