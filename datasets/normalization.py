"""Per-channel mean and std of a prepared split, for ``normalization_params_*`` (thesis 4.2.2)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from datasets.preprocessing import Preprocessing
from datasets.stanford_data import StanfordCarsDataset


def compute_normalization_params(
    data_path: str | Path,
    split: str = "train",
    image_size: Sequence[int] = (227, 227),
    grayscale: bool = False,
    batch_size: int = 64,
    num_workers: int = 0,
) -> dict[str, list[float]]:
    """Mean and std of every pixel after resizing (and grayscale conversion), as the network
    sees the images before Normalize; rounded to 4 places like the thesis's values."""
    preprocessing = Preprocessing(image_size=tuple(image_size), grayscale=grayscale)
    dataset = StanfordCarsDataset(data_path, split, preprocessing)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers)
    channels = preprocessing.channels
    total = torch.zeros(channels, dtype=torch.float64)
    total_sq = torch.zeros(channels, dtype=torch.float64)
    count = 0
    for images, _ in loader:
        pixels = images.transpose(0, 1).reshape(channels, -1).double()
        total += pixels.sum(dim=1)
        total_sq += (pixels**2).sum(dim=1)
        count += pixels.shape[1]
    mean = total / count
    std = (total_sq / count - mean**2).clamp_min(0).sqrt()
    return {
        "mean": [round(v, 4) for v in mean.tolist()],
        "std": [round(v, 4) for v in std.tolist()],
    }
