"""The configured augmentations run batched on the training device (``augment_on: device``).

Batches arrive as uint8 ``(B, C, H, W)`` (resized, grayscale when configured); each
torchvision transform named in the config maps to the kornia transform that draws its random
parameters per image from the same ranges, with the same probability. Order is kept: image
augmentations, then tensor augmentations, then Normalize. A transform or parameter with no
device equivalent raises ``UnsupportedOnDevice``, which the config check reports.

Nothing here waits for the device (tests/device_waits.py finds such waits on the CPU). kornia
draws its random parameters on the device, then moves them to where its range arguments live:
given as numbers, that is the host, a copy that makes the CPU wait for the GPU five times per
RandomAffine and four per RandomErasing. So the transforms are built per device, their ranges
as tensors on that device. ColorJitter's random order reads the device too; its order is drawn
on the host instead (see ``_ColorJitter``).
"""

from __future__ import annotations

import inspect
import itertools
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


def _on(value: Any, device: torch.device) -> torch.Tensor | None:
    """A range argument as a tensor on the device (see the module docstring)."""
    if value is None:
        return None
    return torch.tensor(value, dtype=torch.float32, device=device)


def _affine(name: str, a: dict, device: torch.device) -> nn.Module:
    if a["center"] is not None:
        raise UnsupportedOnDevice(f"{name}: 'center' is not supported on the device")
    fill = a["fill"]
    values = [float(v) for v in (fill if isinstance(fill, list | tuple) else [fill])]
    padding: dict[str, Any] = {"padding_mode": "zeros"}
    if any(values):  # torchvision fills in pixel units, the device works in [0, 1]
        padding = {"padding_mode": "fill", "fill_value": _on(values, device) / 255.0}
    return K.RandomAffine(
        degrees=_on(a["degrees"], device),
        translate=_on(a["translate"], device),
        scale=_on(a["scale"], device),
        shear=_on(a["shear"], device),
        resample=_resample(name, a["interpolation"]),
        p=1.0,
        **padding,
    )


def _rotation(name: str, a: dict, device: torch.device) -> nn.Module:
    if a["expand"] or a["center"] is not None:
        raise UnsupportedOnDevice(f"{name}: 'expand' and 'center' are not supported on the device")
    _zero_fill(name, a["fill"])
    # align_corners False is how torchvision's rotation samples the grid.
    return K.RandomRotation(
        degrees=_on(a["degrees"], device),
        resample=_resample(name, a["interpolation"]),
        align_corners=False,
        p=1.0,
    )


def _perspective(name: str, a: dict, device: torch.device) -> nn.Module:
    _zero_fill(name, a["fill"])
    return K.RandomPerspective(
        distortion_scale=_on(a["distortion_scale"], device),
        resample=_resample(name, a["interpolation"]),
        p=a["p"],
    )


def _resized_crop(name: str, a: dict, device: torch.device) -> nn.Module:
    size = a["size"]
    size = (size, size) if isinstance(size, int) else tuple(size)
    if len(size) == 1:
        size = (size[0], size[0])
    # ratio stays on the host (kornia reads its bounds on every batch); "resample" crops and
    # resizes by one warp on the device, where "slice" would read the boxes back to the host
    return K.RandomResizedCrop(
        size=size,
        scale=_on(a["scale"], device),
        ratio=tuple(a["ratio"]),
        resample=_resample(name, a["interpolation"]),
        cropping_mode="resample",
    )


def _erasing(name: str, a: dict, device: torch.device) -> nn.Module:
    value = a["value"]
    if isinstance(value, list | tuple) and len(set(value)) == 1:
        value = value[0]
    if isinstance(value, str | list | tuple):
        raise UnsupportedOnDevice(
            f"{name}: only a single number as 'value' is supported on the device, got {value!r}"
        )
    # ratio stays on the host: kornia compares it with 1 on every batch
    return K.RandomErasing(
        scale=_on(a["scale"], device), ratio=tuple(a["ratio"]), value=float(value), p=a["p"]
    )


class _ColorJitter(nn.Module):
    """torchvision's ``ColorJitter``: brightness, contrast, saturation and hue factors drawn per
    image, the four steps applied in a random order.

    kornia's own random order is drawn on the device and read back, and it skips a step only
    after reading whether all factors are neutral. Here the order is drawn on the host (one per
    batch, as kornia does; each image's order is still uniformly random), and each order is a
    kornia ``ColorJitter`` with that fixed order, which selects its steps on the device. A step
    whose range is zero is left out of the order, as torchvision leaves it out. All orders are
    built at once: building one reads its ranges back from the device.
    """

    def __init__(self, brightness: Any, contrast: Any, saturation: Any, hue: Any) -> None:
        super().__init__()
        factors = (brightness, contrast, saturation, hue)
        self.steps = [i for i, value in enumerate(factors) if _jitters(i, value)]
        gray_steps = [i for i in self.steps if i in _GRAY_STEPS]
        orders = {*itertools.permutations(self.steps), *itertools.permutations(gray_steps)}
        self.by_order = nn.ModuleDict(
            {_key(order): K.ColorJitter(*factors, p=1.0, order=order) for order in orders}
        )
        self._last: K.ColorJitter | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        order = [self.steps[i] for i in torch.randperm(len(self.steps)).tolist()]  # on the host
        gray = x.shape[1] == 1
        if gray:  # torchvision leaves a grayscale image's saturation and hue as they are
            order = [i for i in order if i in _GRAY_STEPS]
        if not order:
            return x
        self._last = self.by_order[_key(order)]
        if gray:  # kornia's device-side step selection takes three channels
            return self._last(x.expand(-1, 3, -1, -1))[:, :1]
        return self._last(x)

    @property
    def _params(self) -> dict[str, torch.Tensor]:
        """The last batch's factors, as kornia modules keep them."""
        return self._last._params if self._last is not None else {}


_GRAY_STEPS = (0, 1)  # brightness and contrast


def _key(order: Iterable[int]) -> str:
    return "".join(map(str, order)) or "none"


def _jitters(step: int, value: Any) -> bool:
    """Whether a ColorJitter argument changes images: torchvision leaves out a step given as 0
    (or None) or as a range of just its neutral value (1; 0 for hue)."""
    if value is None:
        return False
    if isinstance(value, list | tuple):
        neutral = 0.0 if step == 3 else 1.0
        return not float(value[0]) == float(value[1]) == neutral
    return float(value) != 0


_BUILDERS: dict[str, Callable[[str, dict, torch.device], nn.Module]] = {
    "RandomHorizontalFlip": lambda _, a, __: K.RandomHorizontalFlip(p=a["p"]),
    "RandomVerticalFlip": lambda _, a, __: K.RandomVerticalFlip(p=a["p"]),
    "RandomAffine": _affine,
    "ColorJitter": lambda _, a, __: _ColorJitter(
        a["brightness"], a["contrast"], a["saturation"], a["hue"]
    ),
    "RandomErasing": _erasing,
    "RandomResizedCrop": _resized_crop,
    "RandomRotation": _rotation,
    "RandomPerspective": _perspective,
    "Grayscale": lambda _, a, __: _Grayscale(a["num_output_channels"]),
    "RandomGrayscale": lambda _, a, __: K.RandomGrayscale(p=a["p"]),
    "Normalize": lambda _, a, device: K.Normalize(
        mean=_on(a["mean"], device), std=_on(a["std"], device)
    ),
}
SUPPORTED = tuple(_BUILDERS)


def device_transform(augmentation: Augmentation, device: Any = "cpu") -> nn.Module:
    """The kornia (or local) module equal in distribution to one configured transform, for
    batches on ``device``."""
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
    device = torch.device(device)
    return _BUILDERS[name](name, dict(bound.arguments), device).to(device)


class DeviceAugmenter(nn.Module):
    """uint8 batch -> float batch in [0, 1] -> [augmentations, when training] -> [Normalize].

    The augmentations are built for each device a batch comes from (see the module docstring).
    """

    def __init__(
        self, preprocessing: Preprocessing, augmentations: Iterable[Augmentation] = ()
    ) -> None:
        super().__init__()
        self.augmentations = tuple(augmentations)
        self._pipelines: dict[torch.device, nn.Sequential] = {}
        self.pipeline(torch.device("cpu"))  # an unsupported transform fails here, not mid-fit
        mean, std = preprocessing.input_mean_std()
        self.normalize = preprocessing.normalize
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def pipeline(self, device: torch.device) -> nn.Sequential:
        """The augmentations for batches on ``device``."""
        if device not in self._pipelines:
            self._pipelines[device] = nn.Sequential(
                *(device_transform(a, device) for a in self.augmentations)
            )
        return self._pipelines[device]

    def forward(self, images: torch.Tensor, train: bool = True) -> torch.Tensor:
        x = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
        if train and self.augmentations:
            x = self.pipeline(x.device)(x)
        if self.normalize:
            x = (x - self.mean.to(x.device)) / self.std.to(x.device)
        return x
