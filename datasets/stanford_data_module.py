"""LightningDataModule: the train split with augmentation, the test split for validation."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import pytorch_lightning as pl
import torch
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Sampler

from datasets.cache.device import CacheOnDevice, IndexDataset
from datasets.cache.images import CACHE_DIRNAME, ImageCache, open_or_build
from datasets.labels import SPLITS, class_names_from, read_annotations
from datasets.preprocessing import Augmentation, Preprocessing
from datasets.stanford_data import StanfordCarsDataset
from utils.hardware import available_cpus

if TYPE_CHECKING:
    from datasets.device_augment import DeviceAugmenter

AUGMENT_ON = ("cpu", "device")


class StanfordCarsDataModule(pl.LightningDataModule):
    """Loaders for prepared Stanford Cars (or any folder in the same format).

    The thesis had no hold-out set: the test split is used for validation, without augmentation
    and without the bbox crop. Class names and their number come from the labels CSVs.

    Speed settings: ``cache_images`` reads resized pixels from a cache per split (built on the
    first ``setup``, under ``cache_dir``, default ``<data_path>/.cache``); ``augment_on``
    ``device`` makes the loaders yield uint8 batches that ``on_after_batch_transfer`` turns
    into normalised (and, for training, augmented) float batches on the device;
    ``channels_last`` hands them over in that memory format. ``cache_on_device`` (True, False or
    "auto"; only with ``cache_images`` and ``augment_on`` ``device``) makes the loaders yield
    sample indices, the hook gathering their images from a copy of the cache on the device.
    """

    def __init__(
        self,
        data_path: str | Path,
        preprocessing: Preprocessing | None = None,
        augmentations: Iterable[Augmentation] = (),
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool = False,
        cache_images: bool = False,
        augment_on: str = "cpu",
        channels_last: bool = False,
        cache_dir: str | Path | None = None,
        progress: bool = True,
        cache_on_device: bool | str = False,
        valid_batch_size: int | None = None,
    ) -> None:
        super().__init__()
        if augment_on not in AUGMENT_ON:
            raise ValueError(f"augment_on must be one of {AUGMENT_ON}, got {augment_on!r}")
        self.data_path = Path(data_path)
        self.preprocessing = preprocessing or Preprocessing()
        self.augmentations = tuple(augmentations)
        self.batch_size = batch_size
        self.valid_batch_size = valid_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        # Read once, here: the number of classes is needed to build the network before fit.
        self.annotations = {split: read_annotations(self.data_path, split) for split in SPLITS}
        self.class_names = class_names_from(self.annotations.values())
        self.train_dataset: StanfordCarsDataset | None = None
        self.valid_dataset: StanfordCarsDataset | None = None
        # ---- speed: decoded-image cache, device augmentation, memory format ----
        self.cache_images = cache_images
        self.cache_dir = Path(cache_dir) if cache_dir else self.data_path / CACHE_DIRNAME
        self.progress = progress
        self.channels_last = channels_last
        self.device_augmenter: DeviceAugmenter | None = None
        if augment_on == "device":
            # kornia (about a second to import) only when the augmentations run on the device
            from datasets.device_augment import DeviceAugmenter

            self.device_augmenter = DeviceAugmenter(self.preprocessing, self.augmentations)
        # cache_on_device: with the cache and device augmentation, batches may be gathered
        # from a copy of the cache on the device (datasets/cache/device.py)
        gather = cache_images and augment_on == "device"
        self.cache_on_device = CacheOnDevice(cache_on_device if gather else False)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def setup(self, stage: str | None = None) -> None:
        uint8 = self.device_augmenter is not None
        if self.train_dataset is None and stage in (None, "fit"):
            self.train_dataset = StanfordCarsDataset(
                self.data_path,
                "train",
                self.preprocessing,
                self.augmentations,
                annotations=self.annotations["train"],
                uint8=uint8,
            )
            self.train_dataset.cache = self._cache(self.train_dataset)
        if self.valid_dataset is None:
            self.valid_dataset = StanfordCarsDataset(
                self.data_path,
                "test",
                self.preprocessing.for_evaluation(),
                annotations=self.annotations["test"],
                uint8=uint8,
            )
            self.valid_dataset.cache = self._cache(self.valid_dataset)

    def _cache(self, dataset: StanfordCarsDataset) -> ImageCache | None:
        if not self.cache_images:
            return None
        return open_or_build(
            dataset.image_dir,
            dataset.split,
            dataset.samples,
            dataset.preprocessing,
            self.cache_dir,
            workers=available_cpus(),
            progress=self.progress,
        )

    def finish_batch(self, images: torch.Tensor, train: bool) -> torch.Tensor:
        """A loader batch as the network takes it: with ``augment_on: device``, uint8 to
        normalised float (augmented when ``train``), on the batch's device."""
        if self.device_augmenter is not None:
            images = self.device_augmenter.to(images.device)(images, train=train)
        if self.channels_last and images.dim() == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if self.device_augmenter is None and not self.channels_last:
            return batch
        images, labels = batch
        train = self.trainer is not None and self.trainer.training
        if self.cache_on_device.active:  # the loader yielded sample indices
            images = self.cache_on_device.gather("train" if train else "test", images)
        return self.finish_batch(images, train), labels

    # ---- cache_on_device: batches gathered from the cache on the device ----
    def _gathers_on_device(self) -> bool:
        if self.cache_on_device.setting is False:
            return False
        caches = {
            dataset.split: dataset.cache
            for dataset in (self.train_dataset, self.valid_dataset)
            if dataset is not None and dataset.cache is not None
        }
        trainer = self.trainer
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        return self.cache_on_device.resolve(caches, device)

    def _loader(self, dataset: StanfordCarsDataset, shuffle: bool, batch_size: int) -> DataLoader:
        workers, pin_memory = self.num_workers, self.pin_memory
        if self._gathers_on_device():
            # Only indices and labels to load: worker processes and pinned memory would cost
            # more than the few integers of a batch.
            labels = [sample.label for sample in dataset.samples]
            dataset, workers, pin_memory = IndexDataset(labels), 0, False
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            sampler=None if shuffle else self._evaluation_sampler(dataset),
            num_workers=workers,
            pin_memory=pin_memory,
            persistent_workers=workers > 0,
            # BatchNorm cannot train on a batch of one image (GhostNet's classifier, any net's
            # 1x1 feature maps): drop a last batch of one, counted per process under DDP.
            drop_last=shuffle and math.ceil(len(dataset) / self._world_size()) % batch_size == 1,
        )

    def _world_size(self) -> int:
        return self.trainer.world_size if self.trainer is not None else 1

    def _evaluation_sampler(self, dataset: StanfordCarsDataset) -> Sampler | None:
        """Under DDP, each process validates every n-th image and each image counts exactly
        once. (Lightning's own DistributedSampler pads the split with repeats so that every
        process gets as many batches; validation needs no such balance: the metrics are summed
        over processes once per epoch.) None when Lightning's default serves."""
        world = self._world_size()
        if world <= 1 or len(dataset) < world:
            return None
        return UnrepeatedDistributedSampler(
            dataset, num_replicas=world, rank=self.trainer.global_rank, shuffle=False
        )

    def train_dataloader(self) -> DataLoader:
        assert self.train_dataset is not None, "call setup('fit') first"
        return self._loader(self.train_dataset, shuffle=True, batch_size=self.batch_size)

    def val_dataloader(self) -> DataLoader:
        assert self.valid_dataset is not None, "call setup() first"
        return self._loader(self.valid_dataset, shuffle=False, batch_size=self.valid_batch_size)
