"""Image pipeline stages, kept separable: decode -> [bbox crop] -> resize -> [grayscale] ->
[image augmentations] -> to tensor -> [tensor augmentations] -> [normalize].

Transforms named in the config resolve through a table of torchvision's transform classes.
"""

from __future__ import annotations

import enum
import inspect
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path

import torch
import torchvision.transforms as T
from PIL import Image

from datasets.preprocessing import Augmentation, Preprocessing
from utils.names import resolve

WHITE = (255, 255, 255)
# Transforms whose parameters are other transforms, callables, tensors or dtypes: they cannot
# come from YAML.
_NON_CONFIGURABLE = {
    "Compose",
    "RandomApply",
    "RandomChoice",
    "RandomOrder",
    "Lambda",
    "LinearTransformation",
    "ConvertImageDtype",
}


def load_image(path: str | Path) -> Image.Image:
    """Decode an image file as RGB (grayscale, palette and CMYK files included)."""
    with Image.open(path) as img:
        img.load()
        return img.convert("RGB")


def crop_to_bbox(
    img: Image.Image, bbox: Sequence[float], erase_background: bool = False
) -> Image.Image:
    """Crop to ``(x1, y1, x2, y2)``; with ``erase_background`` paste the crop centred on a white
    canvas of the original size, so the aspect ratio of the car is kept after resizing."""
    width, height = img.size
    x1, y1, x2, y2 = (int(round(v)) for v in bbox)
    x1, x2 = sorted((max(0, min(width, x1)), max(0, min(width, x2))))
    y1, y2 = sorted((max(0, min(height, y1)), max(0, min(height, y2))))
    if x2 - x1 < 1 or y2 - y1 < 1:  # a degenerate box would make an empty image
        return img
    crop = img.crop((x1, y1, x2, y2))
    if not erase_background:
        return crop
    canvas = Image.new(img.mode, (width, height), WHITE if img.mode == "RGB" else 255)
    canvas.paste(crop, ((width - crop.width) // 2, (height - crop.height) // 2))
    return canvas


@cache
def transform_classes() -> dict[str, type]:
    """The torchvision transforms a config may name."""
    found = {}
    for attr in getattr(T, "__all__", dir(T)):
        obj = getattr(T, attr, None)
        if (
            inspect.isclass(obj)
            and not attr.startswith("_")
            and attr not in _NON_CONFIGURABLE
            and not issubclass(obj, enum.Enum)
            and (issubclass(obj, torch.nn.Module) or "__call__" in vars(obj))
        ):
            found[attr] = obj
    return found


def resolve_transform(name: str) -> type:
    """A transform class from torchvision.transforms."""
    return resolve(name, transform_classes(), "a transform class in torchvision.transforms")


def build_augmentation(augmentation: Augmentation):
    """Instantiate one configured transform."""
    return resolve_transform(augmentation.name)(**augmentation.params)


def build_transform(
    preprocessing: Preprocessing, augmentations: Iterable[Augmentation] = ()
) -> T.Compose:
    """The tensor pipeline after decoding (and cropping) a PIL image."""
    return T.Compose(
        resize_stages(preprocessing).transforms
        + build_after_resize(preprocessing, augmentations).transforms
    )


def resize_stages(preprocessing: Preprocessing) -> T.Compose:
    """The deterministic stages after decoding and the bbox crop: resize, then grayscale."""
    stages: list = [T.Resize(preprocessing.image_size)]
    if preprocessing.grayscale:
        stages.append(T.Grayscale(num_output_channels=1))
    return T.Compose(stages)


def build_after_resize(
    preprocessing: Preprocessing, augmentations: Iterable[Augmentation] = ()
) -> T.Compose:
    """The stages after resize and grayscale: image augmentations, ToTensor, tensor
    augmentations, Normalize (what a cached, already resized image still goes through)."""
    augmentations = list(augmentations)
    stages: list = [build_augmentation(a) for a in augmentations if not a.on_tensor]
    stages.append(T.ToTensor())
    stages += [build_augmentation(a) for a in augmentations if a.on_tensor]
    if preprocessing.normalize:
        stages.append(T.Normalize(mean=list(preprocessing.mean), std=list(preprocessing.std)))
    return T.Compose(stages)
