"""Batches gathered straight from a copy of the image cache on the training device
(``cache_on_device``, with ``cache_images`` and ``augment_on: device``).

The loaders then yield only sample indices and labels (``IndexDataset``, a plain map-style
dataset, so Lightning's DistributedSampler and any validation sampler apply to it unchanged);
the data module's ``on_after_batch_transfer`` gathers the uint8 images for those indices from
``DeviceImages``: a tensor copy of the split's cache, made once per process on the first batch
that reaches a GPU, or, on the CPU, the memory-mapped cache file itself. The gathered batch is
the one the loader workers would have built from the cache, byte for byte.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from datasets.cache.images import ImageCache
from utils.errors import UserError

log = logging.getLogger(__name__)

CACHE_ON_DEVICE = (True, False, "auto")
# ``auto`` copies the cache to a GPU only when it takes at most this share of the memory free
# there before training starts: the rest is for the network, its activations and gradients,
# the optimizer state and cuDNN's workspace.
FREE_MEMORY_SHARE = 0.5
# Images copied to the device at a time: bounds the host memory the copy needs.
_COPY_CHUNK = 512


class IndexDataset(Dataset):
    """Sample ``i`` is ``(i, label of i)``: what a loader yields when the pixels are gathered
    on the device."""

    def __init__(self, labels: Sequence[int]) -> None:
        self.labels = list(labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[int, int]:
        return index, self.labels[index]


def fits_on_device(nbytes: int, device: torch.device) -> bool:
    """Whether ``nbytes`` of cached images fit comfortably on ``device``: on a GPU at most
    ``FREE_MEMORY_SHARE`` of its free memory; on the CPU always (the memory-mapped cache is
    read in place, nothing is copied); on other devices never (their free memory is unknown)."""
    if device.type == "cpu":
        return True
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return nbytes <= FREE_MEMORY_SHARE * free
    return False


def use_cache_on_device(setting: bool | str, nbytes: int, device: torch.device) -> bool:
    """The ``cache_on_device`` setting (``True``, ``False`` or ``"auto"``) resolved for a cache
    of ``nbytes`` on ``device``."""
    if setting not in CACHE_ON_DEVICE:
        raise ValueError(f"cache_on_device must be one of {CACHE_ON_DEVICE}, got {setting!r}")
    if setting == "auto":
        return fits_on_device(nbytes, device)
    return bool(setting)


class DeviceImages:
    """One split's cached images, gathered by index on the indices' device as a uint8
    ``(B, C, H, W)`` batch."""

    def __init__(self, cache: ImageCache) -> None:
        self.cache = cache
        self._copies: dict[torch.device, torch.Tensor] = {}

    @property
    def nbytes(self) -> int:
        return self.cache.nbytes

    def gather(self, indices: torch.Tensor) -> torch.Tensor:
        """The images of ``indices`` (a 1-D integer tensor), on ``indices.device``."""
        if indices.device.type == "cpu":
            # Fancy indexing reads just these rows of the mapped file, into a new array; numpy
            # reorders uint8 to (B, C, H, W) several times faster than torch on the CPU.
            rows = self.cache.array[indices.numpy()]
            return torch.from_numpy(np.ascontiguousarray(rows.transpose(0, 3, 1, 2)))
        copy = self._copies.get(indices.device)
        if copy is None:
            copy = self._copies[indices.device] = self.copy_to(indices.device)
        return copy.index_select(0, indices)

    def copy_to(self, device: torch.device) -> torch.Tensor:
        """The whole cache as one uint8 ``(N, C, H, W)`` tensor on ``device``."""
        count, height, width, channels = self.cache.shape
        try:
            copy = torch.empty((count, channels, height, width), dtype=torch.uint8, device=device)
        except torch.OutOfMemoryError:
            raise UserError(
                f"the image cache ({self.nbytes / 2**30:.1f} GiB for this split) does not fit "
                f"in the free memory of {device}. Set cache_on_device: auto (copy it only when "
                "it fits) or false (read it with the loader workers)."
            ) from None
        for start in range(0, count, _COPY_CHUNK):
            stop = min(start + _COPY_CHUNK, count)
            chunk = torch.from_numpy(np.array(self.cache.array[start:stop]))
            copy[start:stop] = chunk.to(device).permute(0, 3, 1, 2)
        log.info(
            "image cache copied to %s: %d images, %.2f GiB", device, count, self.nbytes / 2**30
        )
        return copy


class CacheOnDevice:
    """A data module's ``cache_on_device`` setting: resolved once per process, when the first
    loader is built (the device is known by then), then the gatherer of each split."""

    def __init__(self, setting: bool | str) -> None:
        self.setting = setting  # checked when resolved (use_cache_on_device)
        self.active: bool | None = None  # None: not resolved yet
        self.splits: dict[str, DeviceImages] = {}

    def resolve(self, caches: dict[str, ImageCache], device: torch.device) -> bool:
        """Whether the loaders yield indices for batches gathered on ``device`` from
        ``caches`` (split -> cache; every split that has one)."""
        if self.active is None:
            nbytes = sum(cache.nbytes for cache in caches.values())
            self.active = bool(caches) and use_cache_on_device(self.setting, nbytes, device)
            if self.active:
                log.info(
                    "batches gathered from the image cache on %s (%.2f GiB)", device, nbytes / 2**30
                )
                # Lightning's advice to add loader workers does not apply to a loader that
                # yields only indices.
                warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
            elif caches and self.setting == "auto":
                log.info(
                    "the image cache (%.2f GiB) stays with the loader: cache_on_device auto "
                    "copies it only to a GPU where it takes at most %d%% of the free memory, "
                    "not to %s",
                    nbytes / 2**30,
                    FREE_MEMORY_SHARE * 100,
                    device,
                )
        if self.active:
            for split, cache in caches.items():
                self.splits.setdefault(split, DeviceImages(cache))
        return self.active

    def gather(self, split: str, indices: torch.Tensor) -> torch.Tensor:
        """The uint8 batch of ``split``'s images at ``indices``, on their device."""
        return self.splits[split].gather(indices)
