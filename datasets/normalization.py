"""Per-channel mean and std of a prepared split, for ``normalization_params_*`` (thesis 4.2.2).

Two ways to reduce the pixels of a split, both after resizing (and grayscale conversion), on the
values ToTensor gives (0..1):

- ``per_image`` (default, the thesis's method, which made the template's values): the mean of
  the per-image means and the mean of the per-image standard deviations.
- ``pooled``: the mean and standard deviation of all pixels of the split together. Its std also
  holds the spread between images, so it comes out larger.

Standard deviations are population ones (divided by the number of pixels).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import yaml
from torch.utils.data import DataLoader

from datasets.preprocessing import Preprocessing
from datasets.stanford_data import StanfordCarsDataset

METHODS = ("per_image", "pooled")
DEFAULT_METHOD = "per_image"


def compute_normalization_params(
    data_path: str | Path,
    split: str = "train",
    image_size: Sequence[int] = (227, 227),
    grayscale: bool = False,
    batch_size: int = 64,
    num_workers: int = 0,
    method: str = DEFAULT_METHOD,
) -> dict[str, list[float]]:
    """``{"mean": [...], "std": [...]}`` per channel of ``split``, by ``method`` (see the module
    docstring), rounded to 4 places like the thesis's values."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    preprocessing = Preprocessing(image_size=tuple(image_size), grayscale=grayscale)
    dataset = StanfordCarsDataset(data_path, split, preprocessing)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers)
    channels = preprocessing.channels
    image_mean_sum = torch.zeros(channels, dtype=torch.float64)
    image_std_sum = torch.zeros(channels, dtype=torch.float64)
    pixel_sum = torch.zeros(channels, dtype=torch.float64)
    pixel_sq_sum = torch.zeros(channels, dtype=torch.float64)
    images_seen = pixels_seen = 0
    for images, _ in loader:
        images = images.double()
        image_mean_sum += images.mean(dim=(2, 3)).sum(dim=0)
        image_std_sum += images.std(dim=(2, 3), unbiased=False).sum(dim=0)
        pixel_sum += images.sum(dim=(0, 2, 3))
        pixel_sq_sum += (images**2).sum(dim=(0, 2, 3))
        images_seen += images.shape[0]
        pixels_seen += images.shape[0] * images.shape[2] * images.shape[3]
    if method == "per_image":
        mean = image_mean_sum / images_seen
        std = image_std_sum / images_seen
    else:
        mean = pixel_sum / pixels_seen
        std = (pixel_sq_sum / pixels_seen - mean**2).clamp_min(0).sqrt()
    return {
        "mean": [round(v, 4) for v in mean.tolist()],
        "std": [round(v, 4) for v in std.tolist()],
    }


def normalization_yaml(
    rgb: dict[str, list[float]] | None = None, grayscale: dict[str, list[float]] | None = None
) -> str:
    """The config lines for the params given, ready to paste into config.yml."""
    lines = []
    for key, params in (
        ("normalization_params_rgb", rgb),
        ("normalization_params_grayscale", grayscale),
    ):
        if params is not None:
            lines.append(f"{key}:")
            for name in ("mean", "std"):
                values = yaml.safe_dump(params[name], default_flow_style=True).strip()
                lines.append(f"  {name}: {values}")
    return "\n".join(lines) + "\n"


def normalization_report(
    data_path: str | Path,
    image_size: Sequence[int],
    split: str = "train",
    method: str = DEFAULT_METHOD,
    num_workers: int = 0,
) -> str:
    """Both colour modes' params of ``split``, as YAML to paste into config.yml."""
    rgb, gray = (
        compute_normalization_params(
            data_path, split, image_size, grayscale=gray, num_workers=num_workers, method=method
        )
        for gray in (False, True)
    )
    header = (
        f"# {split} split of {data_path}, {image_size[0]}x{image_size[1]}, "
        f"method {method} ({'mean of per-image means and stds' if method == 'per_image' else 'all pixels pooled'})"
    )
    return header + "\n" + normalization_yaml(rgb, gray)
