"""A miniature Stanford Cars dataset in the real raw file formats.

Tests and ``make demo`` use it instead of the real 1.9 GB download. It writes the same files,
with the same archive member names and the same MATLAB variables, as the three layouts users
hold today (see ``datasets.prepare.layouts``):

- ``"updated"``: ``car_ims.tgz``, ``cars_annos.mat``, ``car_devkit.tgz``
- ``"original"``: ``cars_train.tgz``, ``cars_test.tgz``, ``car_devkit.tgz``,
  ``cars_test_annos_withlabels.mat``
- ``"extracted"``: torchvision's ``stanford_cars/`` folder (optionally with Kaggle-style nested
  ``cars_train/cars_train/`` image folders)

Images are small JPEGs of varied, odd sizes: a noisy neutral background with the bounding box
filled by a colour that identifies the class (``class_color``), so a network learns the classes
within a few steps and a test can check a bounding-box crop by its colour. Every split with at
least three images holds one grayscale and one CMYK JPEG, like the real data set.

The same seed gives the same images, labels and boxes in every layout; only file names differ.

Command line: ``python -m datasets.sample_data DEST [--layout ...] [--classes N] ...``
"""

from __future__ import annotations

import argparse
import colorsys
import io
import math
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from utils.cli import positive_int

LAYOUTS = ("updated", "original", "extracted")

_MIN_SIDE = 37
_MAX_SIDE = 120
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0  # 0.618...: spreads hues evenly for any class count


def class_color(class_index: int) -> tuple[int, int, int]:
    """The RGB colour that fills the bounding box of every image of a class (0-based index).

    Hues follow the golden ratio, so any number of classes gets well separated colours; all are
    saturated, so they stand out from the grey backgrounds.
    """
    if class_index < 0:
        raise ValueError(f"class_index must be >= 0, got {class_index}")
    hue = (class_index * _GOLDEN) % 1.0
    value = 0.95 if (class_index // 5) % 2 == 0 else 0.7
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.9, value)
    return round(red * 255), round(green * 255), round(blue * 255)


def sample_class_names(num_classes: int) -> list[str]:
    """Distinct class names in the style of the real ones ("Make Model Year")."""
    return [f"Sample Make Model{i + 1} {2001 + i % 12}" for i in range(num_classes)]


@dataclass(frozen=True)
class SampleImage:
    """What the generator put into one image (the ground truth tests compare against)."""

    split: str  # "train" or "test"
    number: int  # 1-based position within its split (original release file number)
    global_number: int  # 1-based position over both splits (updated release file number)
    class_id: int  # 1-based, as in the .mat files and the prepared CSVs
    class_name: str
    bbox: tuple[int, int, int, int]  # x1, y1, x2, y2: 1-based inclusive pixel coordinates
    size: tuple[int, int]  # width, height
    mode: str  # "RGB", "L" or "CMYK"

    def file_name(self, layout: str) -> str:
        """The image's base name in the given layout (and in the prepared output)."""
        if layout == "updated":
            return f"{self.global_number:06d}.jpg"
        if layout in ("original", "extracted"):
            return f"{self.number:05d}.jpg"
        raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")


def sample_images(
    num_classes: int = 3, train_per_class: int = 4, test_per_class: int = 2, seed: int = 0
) -> list[SampleImage]:
    """The images ``make_sample_raw`` writes for these arguments, in global (file) order."""
    _check_counts(num_classes, train_per_class, test_per_class)
    rng = np.random.default_rng(seed)
    names = sample_class_names(num_classes)

    # Like the real updated release: images grouped by class, train and test interleaved.
    slots: list[tuple[int, str]] = []
    for class_index in range(num_classes):
        splits = ["train"] * train_per_class + ["test"] * test_per_class
        order = rng.permutation(len(splits))
        slots.extend((class_index, splits[i]) for i in order)

    split_sizes = {"train": num_classes * train_per_class, "test": num_classes * test_per_class}
    counters = {"train": 0, "test": 0}
    images = []
    for global_index, (class_index, split) in enumerate(slots):
        counters[split] += 1
        number = counters[split]
        width = int(rng.integers(_MIN_SIDE, _MAX_SIDE + 1))
        height = int(rng.integers(_MIN_SIDE, _MAX_SIDE + 1))
        box_w = int(rng.integers(math.ceil(0.4 * width), int(0.9 * width) + 1))
        box_h = int(rng.integers(math.ceil(0.4 * height), int(0.9 * height) + 1))
        x1 = int(rng.integers(1, width - box_w + 2))
        y1 = int(rng.integers(1, height - box_h + 2))
        mode = "RGB"
        if number == 2 and split_sizes[split] >= 3:
            mode = "L"
        elif number == 3 and split_sizes[split] >= 3:
            mode = "CMYK"
        images.append(
            SampleImage(
                split=split,
                number=number,
                global_number=global_index + 1,
                class_id=class_index + 1,
                class_name=names[class_index],
                bbox=(x1, y1, x1 + box_w - 1, y1 + box_h - 1),
                size=(width, height),
                mode=mode,
            )
        )
    return images


def render_image(image: SampleImage, seed: int = 0) -> bytes:
    """JPEG bytes of one sample image (deterministic from the image and the seed)."""
    rng = np.random.default_rng([seed, image.global_number])
    width, height = image.size
    grey = rng.integers(85, 170)
    tint = rng.integers(-8, 9, size=3)
    background = np.clip(grey + tint, 0, 255).astype(np.float32)
    noise = rng.normal(0.0, 14.0, size=(height, width, 3)).astype(np.float32)
    pixels = np.clip(background + noise, 0, 255).astype(np.uint8)
    x1, y1, x2, y2 = image.bbox
    # 1-based inclusive box -> 0-based slices; PIL's crop((x1, y1, x2, y2)) lies inside it.
    pixels[y1 - 1 : y2, x1 - 1 : x2] = class_color(image.class_id - 1)
    picture = Image.fromarray(pixels, mode="RGB")
    if image.mode != "RGB":
        picture = picture.convert(image.mode)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def make_sample_raw(
    dest: str | Path,
    layout: str = "updated",
    num_classes: int = 3,
    train_per_class: int = 4,
    test_per_class: int = 2,
    seed: int = 0,
    nested: bool = False,
) -> Path:
    """Write a miniature raw Stanford Cars download under ``dest``; return the raw directory.

    ``nested`` (only with layout "extracted") puts the images in ``cars_train/cars_train/`` and
    ``cars_test/cars_test/`` as some Kaggle mirrors do. For "extracted" the returned directory is
    ``dest/stanford_cars``; otherwise it is ``dest``.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    if nested and layout != "extracted":
        raise ValueError("nested=True only applies to layout 'extracted'")
    images = sample_images(num_classes, train_per_class, test_per_class, seed)
    jpegs = [render_image(image, seed) for image in images]
    names = sample_class_names(num_classes)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)

    train = [image for image in images if image.split == "train"]
    test = [image for image in images if image.split == "test"]
    devkit = {
        "cars_meta.mat": _mat_bytes({"class_names": _cell(names)}),
        "cars_train_annos.mat": _mat_bytes({"annotations": _split_annotations(train, True)}),
        "cars_test_annos.mat": _mat_bytes({"annotations": _split_annotations(test, False)}),
    }
    test_with_labels = _mat_bytes({"annotations": _split_annotations(test, True)})

    if layout == "updated":
        _write_tgz(
            dest / "car_ims.tgz",
            "car_ims",
            {image.file_name("updated"): jpeg for image, jpeg in zip(images, jpegs)},
        )
        annos = {"annotations": _updated_annotations(images), "class_names": _cell(names)}
        (dest / "cars_annos.mat").write_bytes(_mat_bytes(annos))
        _write_tgz(dest / "car_devkit.tgz", "devkit", devkit)
        return dest

    by_split = {
        split: {
            image.file_name(layout): jpeg
            for image, jpeg in zip(images, jpegs)
            if image.split == split
        }
        for split in ("train", "test")
    }
    if layout == "original":
        _write_tgz(dest / "cars_train.tgz", "cars_train", by_split["train"])
        _write_tgz(dest / "cars_test.tgz", "cars_test", by_split["test"])
        _write_tgz(dest / "car_devkit.tgz", "devkit", devkit)
        (dest / "cars_test_annos_withlabels.mat").write_bytes(test_with_labels)
        return dest

    root = dest / "stanford_cars"
    for split in ("train", "test"):
        folder = root / f"cars_{split}"
        if nested:
            folder = folder / f"cars_{split}"
        folder.mkdir(parents=True, exist_ok=True)
        for name, jpeg in by_split[split].items():
            (folder / name).write_bytes(jpeg)
    (root / "devkit").mkdir(parents=True, exist_ok=True)
    for name, data in devkit.items():
        (root / "devkit" / name).write_bytes(data)
    (root / "cars_test_annos_withlabels.mat").write_bytes(test_with_labels)
    return root


def _check_counts(num_classes: int, train_per_class: int, test_per_class: int) -> None:
    for label, value in (
        ("num_classes", num_classes),
        ("train_per_class", train_per_class),
        ("test_per_class", test_per_class),
    ):
        if value < 1:
            raise ValueError(f"{label} must be >= 1, got {value}")


def _cell(strings: list[str]) -> np.ndarray:
    """A 1xK MATLAB cell array of strings."""
    cell = np.empty((1, len(strings)), dtype=object)
    for i, text in enumerate(strings):
        cell[0, i] = text
    return cell


def _number(value: int, dtype=np.uint16) -> np.ndarray:
    """A 1x1 MATLAB numeric matrix, as the real files store every scalar."""
    return np.array([[value]], dtype=dtype)


def _struct_array(fields: list[str], rows: list[tuple]) -> np.ndarray:
    """A 1xN MATLAB struct array."""
    array = np.zeros((1, len(rows)), dtype=[(field, object) for field in fields])
    for i, row in enumerate(rows):
        array[0, i] = row
    return array


def _box(image: SampleImage) -> tuple[np.ndarray, ...]:
    return tuple(_number(value) for value in image.bbox)


def _updated_annotations(images: list[SampleImage]) -> np.ndarray:
    fields = ["relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test"]
    rows = [
        (
            f"car_ims/{image.file_name('updated')}",
            *_box(image),
            _number(image.class_id),
            _number(int(image.split == "test"), np.uint8),
        )
        for image in images
    ]
    return _struct_array(fields, rows)


def _split_annotations(images: list[SampleImage], with_class: bool) -> np.ndarray:
    fields = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2"]
    if with_class:
        fields.append("class")
    fields.append("fname")
    rows = []
    for image in images:
        row = list(_box(image))
        if with_class:
            row.append(_number(image.class_id))
        row.append(image.file_name("original"))
        rows.append(tuple(row))
    return _struct_array(fields, rows)


def _mat_bytes(variables: dict) -> bytes:
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, variables, format="5", do_compression=False, oned_as="row")
    return buffer.getvalue()


def _write_tgz(path: Path, folder: str, files: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz", compresslevel=6) as tar:
        directory = tarfile.TarInfo(folder)
        directory.type = tarfile.DIRTYPE
        directory.mode = 0o755
        tar.addfile(directory)
        for name, data in files.items():
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))


# ---- a folder of photos, one sub-folder per class ---------------------------------
def make_sample_photos(
    dest: str | Path,
    class_names: tuple[str, ...] | list[str] = ("Cab", "Van"),
    per_class: int = 4,
    seed: int = 0,
) -> Path:
    """Write ``dest/<class>/001.jpg``...: noisy pictures in the class's colour, of odd sizes
    (every class uses the same file names, as photo folders often do). Returns ``dest``."""
    dest = Path(dest)
    for index, name in enumerate(class_names):
        folder = dest / name
        folder.mkdir(parents=True, exist_ok=True)
        for number in range(1, per_class + 1):
            rng = np.random.default_rng([seed, index, number])
            width, height = 48 + 7 * number, 50 + 5 * index
            pixels = np.array(class_color(index), np.float32) + rng.normal(
                0.0, 20.0, (height, width, 3)
            )
            picture = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="RGB")
            picture.save(folder / f"{number:03d}.jpg", format="JPEG", quality=92)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m datasets.sample_data",
        description="Write a miniature Stanford Cars download (real file formats) for tests "
        "and demos.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,  # defaults shown
    )
    parser.add_argument("dest", type=Path, help="folder to write the raw files into")
    parser.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="updated",
        help="which download to imitate: the updated release (car_ims.tgz, cars_annos.mat), "
        "the original one (cars_train.tgz, cars_test.tgz) or torchvision's extracted folder",
    )
    parser.add_argument("--classes", type=positive_int, default=3, help="number of car classes")
    parser.add_argument(
        "--train-per-class", type=positive_int, default=4, help="training images per class"
    )
    parser.add_argument(
        "--test-per-class", type=positive_int, default=2, help="test images per class"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated pictures")
    parser.add_argument(
        "--nested", action="store_true", help="Kaggle-style cars_train/cars_train/ (extracted)"
    )
    args = parser.parse_args(argv)
    if args.nested and args.layout != "extracted":
        parser.error("--nested only applies to --layout extracted")
    raw_dir = make_sample_raw(
        args.dest,
        layout=args.layout,
        num_classes=args.classes,
        train_per_class=args.train_per_class,
        test_per_class=args.test_per_class,
        seed=args.seed,
        nested=args.nested,
    )
    total = args.classes * (args.train_per_class + args.test_per_class)
    print(f"Wrote a sample '{args.layout}' Stanford Cars download ({total} images) to {raw_dir}")
    return 0


if __name__ == "__main__":
    from utils.errors import run_cli

    run_cli(main)
