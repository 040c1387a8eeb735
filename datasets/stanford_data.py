"""Stanford Cars as prepared by ``prepare_stanford_dataset.py``: ``<split>/`` + ``<split>_labels.csv``.

Annotations are read once per split and every label and bounding box is looked up by file name
(the original code took bboxes from the CSV row with the same index as ``os.listdir`` order,
which paired images with other images' boxes).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from datasets.transforms import build_transform, crop_to_bbox, load_image
from utils.errors import UserError

LABEL_COLUMNS = ("image_fname", "class", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class_name")
SPLITS = ("train", "test")


@dataclass(frozen=True)
class Annotation:
    """One labelled image; ``label`` is 0-based, the CSV's ``class`` is 1-based."""

    fname: str
    label: int
    bbox: tuple[float, float, float, float]
    class_name: str


def labels_csv(data_path: str | Path, split: str) -> Path:
    return Path(data_path) / f"{split}_labels.csv"


def read_annotations(data_path: str | Path, split: str) -> dict[str, Annotation]:
    """Read ``<split>_labels.csv`` into ``{image_fname: Annotation}``."""
    path = labels_csv(data_path, split)
    hint = (
        "Prepare the dataset first with 'python prepare_stanford_dataset.py' (or point -d / "
        "stanford_data_path at the folder holding train/, test/ and the two *_labels.csv files)."
    )
    if not path.is_file():
        raise UserError(f"labels file '{path}' not found. {hint}")
    annotations: dict[str, Annotation] = {}
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in LABEL_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise UserError(
                    f"labels file '{path}' lacks the column(s) {', '.join(missing)} (expected "
                    f"{', '.join(LABEL_COLUMNS)}). {hint}"
                )
            for line, row in enumerate(reader, start=2):
                try:
                    class_id = int(row["class"])
                    bbox = tuple(float(row[c]) for c in LABEL_COLUMNS[2:6])
                except (TypeError, ValueError):
                    raise UserError(
                        f"labels file '{path}', line {line}: 'class' must be an integer and the "
                        f"bbox columns numbers, got {row!r}. Fix the row or prepare the dataset again."
                    ) from None
                if class_id < 1:
                    raise UserError(
                        f"labels file '{path}', line {line}: classes are numbered from 1, got "
                        f"{class_id}. Fix the row or prepare the dataset again."
                    )
                fname = row["image_fname"]
                annotations[fname] = Annotation(fname, class_id - 1, bbox, row["class_name"])
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise UserError(f"labels file '{path}' could not be read ({err}). {hint}") from None
    if not annotations:
        raise UserError(f"labels file '{path}' has no rows. {hint}")
    return annotations


def class_names_from(annotation_sets: Iterable[dict[str, Annotation]]) -> list[str]:
    """Class names indexed by 0-based label, from the CSVs; the number of classes comes from the
    data (ids must run 1..K without gaps, and one id must have one name)."""
    names: dict[int, str] = {}
    for split_annotations in annotation_sets:
        for ann in split_annotations.values():
            known = names.setdefault(ann.label, ann.class_name)
            if known != ann.class_name:
                raise UserError(
                    f"class {ann.label + 1} has two names, '{known}' and '{ann.class_name}'. "
                    "Make every row of a class carry the same class_name in the labels CSVs."
                )
    count = max(names) + 1
    gaps = [i + 1 for i in range(count) if i not in names]
    if gaps:
        raise UserError(
            f"class ids must run from 1 to {count} without gaps, but no image has class "
            f"{', '.join(map(str, gaps[:10]))}. Renumber the classes in the labels CSVs."
        )
    return [names[i] for i in range(count)]


class StanfordCarsDataset(Dataset):
    """One split of prepared Stanford Cars, with the thesis's preprocessing parameters."""

    def __init__(
        self,
        data_path: str | Path,
        split: str,
        image_size: Sequence[int] = (227, 227),
        convert_to_grayscale: bool = False,
        normalize: bool = False,
        normalization_params: dict | None = None,
        crop_to_bboxes: bool = False,
        erase_background: bool = False,
        augment_images: bool = False,
        image_augmentations: Iterable[tuple[str, dict]] | dict | None = None,
        augment_tensors: bool = False,
        tensor_augmentations: Iterable[tuple[str, dict]] | dict | None = None,
        annotations: dict[str, Annotation] | None = None,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.data_path = Path(data_path)
        self.split = split
        self.image_dir = self.data_path / split
        self.annotations = (
            annotations if annotations is not None else read_annotations(data_path, split)
        )
        self.samples = sorted(self.annotations.values(), key=lambda a: a.fname)
        self._check_images()
        self.crop_to_bboxes = crop_to_bboxes
        self.erase_background = erase_background
        norm = normalization_params or {}
        self.transform = build_transform(
            image_size,
            grayscale=convert_to_grayscale,
            normalize=normalize,
            mean=norm.get("mean"),
            std=norm.get("std"),
            image_augmentations=_pairs(image_augmentations) if augment_images else (),
            tensor_augmentations=_pairs(tensor_augmentations) if augment_tensors else (),
        )

    def _check_images(self) -> None:
        if not self.image_dir.is_dir():
            raise UserError(
                f"image folder '{self.image_dir}' not found. Prepare the dataset with "
                "'python prepare_stanford_dataset.py' or point -d / stanford_data_path at it."
            )
        present = {p.name for p in self.image_dir.iterdir()}
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
        path = self.image_dir / sample.fname
        try:
            img = load_image(path)
        except (OSError, ValueError) as err:  # PIL's errors for truncated or foreign files
            raise UserError(
                f"image '{path}' could not be decoded ({type(err).__name__}: {err}). Prepare the "
                "dataset again with 'python prepare_stanford_dataset.py --force', which checks "
                "every image, or remove its row from the labels CSV."
            ) from None
        if self.crop_to_bboxes:
            img = crop_to_bbox(img, sample.bbox, self.erase_background)
        return self.transform(img), sample.label

    @property
    def targets(self) -> list[int]:
        return [s.label for s in self.samples]


def _pairs(specs: Iterable[tuple[str, dict]] | dict | None) -> list[tuple[str, dict]]:
    if not specs:
        return []
    if isinstance(specs, dict):
        return [(name, dict(params or {})) for name, params in specs.items()]
    return [(name, dict(params or {})) for name, params in specs]
