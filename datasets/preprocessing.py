"""What every image goes through before the network sees it, as one small frozen object.

``Preprocessing`` is built once from the config, stored in each checkpoint and taken by the
dataset, the data module, evaluation, prediction and export, so that no stage rebuilds it from
loose keywords. ``Augmentation`` is one configured random transform; the training pipeline gets
the list of those that are switched on, nothing else does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any


@dataclass(frozen=True)
class Preprocessing:
    """Resize to ``image_size`` (height, width), optionally grayscale, optionally normalise with
    ``mean``/``std``; ``crop_to_bboxes`` (and ``erase_background``) apply to training only."""

    image_size: tuple[int, int] = (227, 227)
    grayscale: bool = False
    normalize: bool = False
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    crop_to_bboxes: bool = False
    erase_background: bool = False

    def __post_init__(self) -> None:
        # Tuples whatever the caller passed, so the object stays hashable and comparable.
        object.__setattr__(self, "image_size", tuple(int(v) for v in self.image_size))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    @property
    def channels(self) -> int:
        return 1 if self.grayscale else 3

    def for_evaluation(self) -> Preprocessing:
        """The same images without the training-only bbox crop (validation, test, inference)."""
        return replace(self, crop_to_bboxes=False, erase_background=False)

    def input_mean_std(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of the network's input: zeros and ones without Normalize."""
        if self.normalize:
            return list(self.mean), list(self.std)
        return [0.0] * self.channels, [1.0] * self.channels

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and scalars (checkpoints load with ``weights_only``)."""
        data = asdict(self)
        for key in ("image_size", "mean", "std"):
            data[key] = list(data[key])
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocessing:
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


@dataclass(frozen=True)
class Augmentation:
    """A torchvision transform by name with its parameters; ``on_tensor`` ones run after
    ToTensor (e.g. RandomErasing), the others on the PIL image before it."""

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)
    on_tensor: bool = False


def augmentations_from(
    image: Mapping[str, Mapping[str, Any] | None] | None = None,
    tensor: Mapping[str, Mapping[str, Any] | None] | None = None,
) -> list[Augmentation]:
    """Image then tensor augmentations, each in the order given."""
    return [
        Augmentation(name, dict(params or {}), on_tensor)
        for specs, on_tensor in ((image, False), (tensor, True))
        for name, params in (specs or {}).items()
    ]
