"""LightningDataModule: the train split with augmentation, the test split for validation."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from datasets.labels import SPLITS, class_names_from, read_annotations
from datasets.preprocessing import Augmentation, Preprocessing
from datasets.stanford_data import StanfordCarsDataset


class StanfordCarsDataModule(pl.LightningDataModule):
    """Loaders for prepared Stanford Cars (or any folder in the same format).

    The thesis had no hold-out set: the test split is used for validation, without augmentation
    and without the bbox crop. Class names and their number come from the labels CSVs.
    """

    def __init__(
        self,
        data_path: str | Path,
        preprocessing: Preprocessing | None = None,
        augmentations: Iterable[Augmentation] = (),
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        self.data_path = Path(data_path)
        self.preprocessing = preprocessing or Preprocessing()
        self.augmentations = tuple(augmentations)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        # Read once, here: the number of classes is needed to build the network before fit.
        self.annotations = {split: read_annotations(self.data_path, split) for split in SPLITS}
        self.class_names = class_names_from(self.annotations.values())
        self.train_dataset: StanfordCarsDataset | None = None
        self.valid_dataset: StanfordCarsDataset | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is None and stage in (None, "fit"):
            self.train_dataset = StanfordCarsDataset(
                self.data_path,
                "train",
                self.preprocessing,
                self.augmentations,
                annotations=self.annotations["train"],
            )
        if self.valid_dataset is None:
            self.valid_dataset = StanfordCarsDataset(
                self.data_path,
                "test",
                self.preprocessing.for_evaluation(),
                annotations=self.annotations["test"],
            )

    def _loader(self, dataset: StanfordCarsDataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            # BatchNorm cannot train on a batch of one image (GhostNet's classifier, any net's
            # 1x1 feature maps): drop a last batch of one, counted per process under DDP.
            drop_last=shuffle
            and math.ceil(len(dataset) / self._world_size()) % self.batch_size == 1,
        )

    def _world_size(self) -> int:
        return self.trainer.world_size if self.trainer is not None else 1

    def train_dataloader(self) -> DataLoader:
        assert self.train_dataset is not None, "call setup('fit') first"
        return self._loader(self.train_dataset, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        assert self.valid_dataset is not None, "call setup() first"
        return self._loader(self.valid_dataset, shuffle=False)
