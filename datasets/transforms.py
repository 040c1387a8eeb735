"""Image pipeline stages, kept separable: decode -> [bbox crop] -> resize -> [grayscale] ->
[image augmentations] -> to tensor -> [tensor augmentations] -> [normalize] (FACTS.md 3).

Validation and inference use the same stages without augmentation and without the bbox crop.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
import torchvision.transforms as T
from PIL import Image

from utils.names import resolve_transform

WHITE = (255, 255, 255)


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


def build_named_transforms(specs: Iterable[tuple[str, dict]]) -> list:
    """Instantiate torchvision transforms from ``(name, params)`` pairs, in order."""
    return [resolve_transform(name)(**(params or {})) for name, params in specs]


def build_transform(
    image_size: Sequence[int],
    grayscale: bool = False,
    normalize: bool = False,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    image_augmentations: Iterable[tuple[str, dict]] = (),
    tensor_augmentations: Iterable[tuple[str, dict]] = (),
) -> T.Compose:
    """The tensor pipeline after decoding (and cropping) a PIL image."""
    stages: list = [T.Resize(tuple(image_size))]
    if grayscale:
        stages.append(T.Grayscale(num_output_channels=1))
    stages += build_named_transforms(image_augmentations)
    stages.append(T.ToTensor())
    stages += build_named_transforms(tensor_augmentations)
    if normalize:
        stages.append(T.Normalize(mean=list(mean or ()), std=list(std or ())))
    return T.Compose(stages)


def build_eval_transform(
    image_size: Sequence[int],
    grayscale: bool = False,
    normalize: bool = False,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> T.Compose:
    """Validation/inference pipeline: no augmentation."""
    return build_transform(image_size, grayscale, normalize, mean, std)


def preprocess(img: Image.Image, transform: T.Compose) -> torch.Tensor:
    """Apply a pipeline to one decoded image and add the batch axis."""
    return transform(img).unsqueeze(0)
