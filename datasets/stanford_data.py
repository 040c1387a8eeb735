"""Stanford Cars as prepared by ``prepare_stanford_dataset.py``: ``<split>/`` + ``<split>_labels.csv``.

Every label and bounding box is looked up by file name (the original code took bboxes from the
CSV row with the same index as ``os.listdir`` order, which paired images with other images' boxes).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision.transforms.functional import pil_to_tensor

from datasets.cache.images import ImageCache, array_image
from datasets.labels import SPLITS, Annotation, labels_csv, read_annotations
from datasets.preprocessing import Augmentation, Preprocessing
from datasets.transforms import (
    build_after_resize,
    build_transform,
    crop_to_bbox,
    load_image,
    resize_stages,
)
from utils.errors import UserError


class StanfordCarsDataset(Dataset):
    """One split of prepared Stanford Cars, through ``preprocessing`` and ``augmentations``.

    With ``cache`` (built for these samples, in this order) the resized pixels come from it
    instead of the image files. With ``uint8`` each item is the resized ``(C, H, W)`` uint8
    image, the augmentations and Normalize being left to the device (``augment_on: device``).
    """

    def __init__(
        self,
        data_path: str | Path,
        split: str,
        preprocessing: Preprocessing | None = None,
        augmentations: Iterable[Augmentation] = (),
        annotations: dict[str, Annotation] | None = None,
        cache: ImageCache | None = None,
        uint8: bool = False,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.data_path = Path(data_path)
        self.split = split
        self.image_dir = self.data_path / split
        self.preprocessing = preprocessing or Preprocessing()
        if annotations is None:
            annotations = read_annotations(data_path, split)
        self.samples = sorted(annotations.values(), key=lambda a: a.fname)
        self._check_images()
        self.transform = build_transform(self.preprocessing, augmentations)
        # ---- decoded-image cache and device augmentation (speed) ----
        self.cache = cache
        self.uint8 = uint8
        self.resize = resize_stages(self.preprocessing)
        self.after_resize = build_after_resize(self.preprocessing, augmentations)

    def _check_images(self) -> None:
        if not self.image_dir.is_dir():
            raise UserError(
                f"image folder '{self.image_dir}' not found. Prepare the dataset with "
                "'python prepare_stanford_dataset.py' or point -d / stanford_data_path at it."
            )
        try:
            present = {p.name for p in self.image_dir.iterdir()}
        except OSError as err:  # an unreadable folder
            raise UserError(
                f"image folder '{self.image_dir}' cannot be read ({err.strerror or err}). Give "
                f"yourself read permission on it (e.g. chmod -R u+rX '{self.image_dir}')."
            ) from None
        missing = [s.fname for s in self.samples if s.fname not in present]
        if missing:
            raise UserError(
                f"{len(missing)} image(s) listed in '{labels_csv(self.data_path, self.split)}' "
                f"are missing from '{self.image_dir}' (first: {', '.join(missing[:5])}). Prepare "
                "the dataset again with 'python prepare_stanford_dataset.py --force'."
            )

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        sample = self.samples[index]
        if self.cache is not None:
            array = self.cache[index]
            if self.uint8:
                return torch.from_numpy(array.transpose(2, 0, 1).copy()), sample.label
            return self.after_resize(array_image(array)), sample.label
        path = self.image_dir / sample.fname
        try:
            img = load_image(path)
        except (OSError, ValueError) as err:  # PIL's errors for truncated or foreign files
            raise UserError(
                f"image '{path}' could not be decoded ({type(err).__name__}: {err}). Prepare the "
                "dataset again with 'python prepare_stanford_dataset.py --force', which checks "
                "every image, or remove its row from the labels CSV."
            ) from None
        if self.preprocessing.crop_to_bboxes:
            img = crop_to_bbox(img, sample.bbox, self.preprocessing.erase_background)
        if self.uint8:
            return pil_to_tensor(self.resize(img)), sample.label
        return self.transform(img), sample.label
