"""A folder of photos, one sub-folder per class, turned into the prepared format.

``PHOTOS/<class>/...`` is split per class into train and test (stratified, reproducible from the
seed); ``PHOTOS/train/<class>/`` and ``PHOTOS/test/<class>/`` keep the user's split. Images in
folders nested inside a class folder belong to that class. Classes are numbered in sorted name
order; every bbox is the whole image.

Each file is decoded once. JPEGs in RGB or grayscale without an EXIF rotation are copied byte
for byte; every other image (PNG, WebP, HEIC when Pillow reads it, CMYK, EXIF-rotated, ...) is
straightened and re-encoded as a JPEG, so that the prepared folder holds only files every
loader reads. Output names are unique within the dataset: a name already taken (the same file
name in two classes, or ``a.png`` beside ``a.jpg``) gets a ``-2``, ``-3``... suffix. Links are
refused, hidden files are ignored, and everything left out or changed is reported.
"""

from __future__ import annotations

import io
import logging
import os
import random
import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePath

from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from datasets.labels import SPLITS
from datasets.prepare.annotations import RawAnnotation
from datasets.prepare.layouts import Layout, visible_subfolders
from utils.errors import UserError

try:  # HEIC/HEIF photos (iPhones) decode when the optional pillow-heif plugin is installed
    from pillow_heif import register_heif_opener
except ImportError:
    register_heif_opener = None

logger = logging.getLogger(__name__)

DEFAULT_TEST_FRACTION = 0.5
DEFAULT_SEED = 0
JPEG_QUALITY = 95
_EXIF_ORIENTATION = 0x0112
_KEPT_MODES = ("RGB", "L")
# Formats Pillow reads only with a plugin; without it such a file is "unsupported", not broken.
_PLUGIN_SUFFIXES = {".heic": "pillow-heif", ".heif": "pillow-heif"}
_STAGING = "photos-staging"
# What the report's ``details`` hold, in the order they are reported, and whether that kind
# left something out (a warning) or only changed it (information).
DETAIL_KINDS: dict[str, tuple[str, bool]] = {
    "left_out_classes": ("class folders left out", True),
    "not_images": ("files left out, not images", True),
    "unsupported": ("images left out, a format Pillow cannot read here", True),
    "outside_class_folders": ("files outside the class folders, ignored", True),
    "no_test_images": ("classes without test images", True),
    "converted": ("images converted to JPEG", False),
    "straightened": ("EXIF-rotated photos straightened", False),
    "renamed": ("images renamed (the name was taken, or the file became a JPEG)", False),
    "nested": ("images in folders nested in a class folder, kept in that class", False),
}


@dataclass
class PhotoFile:
    """One file found under a class folder."""

    class_name: str
    path: Path
    rel: str  # relative to the photo folder, for reports
    split: str | None  # given by a pre-split layout, else chosen by the split


@dataclass
class Staged:
    """A usable image, written to the staging folder under its final name."""

    photo: PhotoFile
    name: str
    size: tuple[int, int]


@dataclass
class PhotoDataset:
    """What ``build_photo_dataset`` wrote to the build folder, and what it left out or changed."""

    class_names: list[str]
    rows: dict[str, list[RawAnnotation]]
    broken: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    details: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))


def build_photo_dataset(
    layout: Layout,
    work: Path,
    build: Path,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    seed: int = DEFAULT_SEED,
    progress: bool = True,
) -> PhotoDataset:
    """Copy or convert the photos of ``layout`` into ``build/<split>/``; ``work`` holds the
    staging folder. The CSVs are the caller's to write from ``rows``."""
    check_test_fraction(test_fraction)
    if register_heif_opener is not None:
        register_heif_opener()
    result = PhotoDataset(class_names=[], rows={split: [] for split in SPLITS})
    photos = _collect(layout, result)
    staging = work / _STAGING
    staging.mkdir()
    staged: list[Staged] = []
    taken: set[str] = set()
    with tqdm(total=len(photos), desc="Preparing photos", unit="img", disable=not progress) as bar:
        for photo in photos:
            item = _stage(photo, staging, taken, result)
            if item is not None:
                staged.append(item)
            bar.update(1)

    by_class: dict[str, list[Staged]] = defaultdict(list)
    for item in staged:
        by_class[item.photo.class_name].append(item)
    if layout.name == "photos":
        chosen = _stratified_split(by_class, test_fraction, seed, result)
    else:
        chosen = _given_split(by_class, result)
    for name in _empty_classes(layout, by_class):
        result.details["left_out_classes"].append(f"{name} (no usable images)")
    class_names = sorted(chosen)
    if len(class_names) < 2:
        raise UserError(
            f"The photo folder {layout.root} has {len(class_names)} class(es) with enough usable "
            "images; a classifier needs at least two. Put each class's photos in a sub-folder "
            f"named after the class, at least 2 images per class.{_left_out_hint(result)}"
        )
    result.class_names = class_names
    for class_id, name in enumerate(class_names, start=1):
        for split, item in chosen[name]:
            _move(staging / item.name, build / split / item.name)
            width, height = item.size
            result.rows[split].append(
                RawAnnotation(split, item.photo.rel, item.name, class_id, (0, 0, width, height))
            )
    result.details = {kind: sorted(names) for kind, names in result.details.items() if names}
    result.broken.sort()
    result.refused.sort()
    return result


def check_test_fraction(test_fraction: float) -> None:
    """A UserError unless 0 < ``test_fraction`` < 1."""
    if not 0.0 < test_fraction < 1.0:
        raise UserError(
            f"--test-fraction must lie between 0 and 1 (exclusive), got {test_fraction}. Pass "
            "e.g. --test-fraction 0.2 to keep a fifth of each class's photos for testing."
        )


# ---- finding the files ------------------------------------------------------------------------
def _collect(layout: Layout, result: PhotoDataset) -> list[PhotoFile]:
    """Every non-hidden file under the class folders, sorted; links are refused."""
    roots: list[tuple[str | None, Path]]
    if layout.name == "photos":
        roots = [(None, layout.root)]
    else:
        roots = [(split, layout.files[split]) for split in SPLITS if layout.files[split].is_dir()]
    photos: list[PhotoFile] = []
    for split, root in roots:
        for entry in sorted(root.iterdir(), key=lambda p: p.name):
            if entry.name.startswith("."):
                continue
            rel = _rel(entry, layout.root)
            if entry.is_symlink():
                result.refused.append(rel)
            elif entry.is_dir():
                photos.extend(_walk_class(entry, entry.name, split, layout.root, result))
            else:
                result.details["outside_class_folders"].append(rel)
    return photos


def _walk_class(
    folder: Path, class_name: str, split: str | None, root: Path, result: PhotoDataset
) -> list[PhotoFile]:
    found: list[PhotoFile] = []
    for current, dirs, files in os.walk(folder, onerror=_raise_unreadable):
        here = Path(current)
        kept_dirs = []
        for name in sorted(dirs):
            if name.startswith("."):
                continue
            if (here / name).is_symlink():  # os.walk does not follow it; say so
                result.refused.append(_rel(here / name, root))
            else:
                kept_dirs.append(name)
        dirs[:] = kept_dirs
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = here / name
            if path.is_symlink():
                result.refused.append(_rel(path, root))
                continue
            found.append(PhotoFile(class_name, path, _rel(path, root), split))
    return found


def _raise_unreadable(err: OSError) -> None:
    raise UserError(
        f"Could not read the folder {err.filename} ({err.strerror}). Check its permissions, "
        "then run again."
    )


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _empty_classes(layout: Layout, by_class: dict) -> list[str]:
    """Class folders that held no usable image at all."""
    if layout.name == "photos":
        folders = {p.name for p in visible_subfolders(layout.root) if not p.is_symlink()}
    else:
        folders = {
            p.name
            for split in SPLITS
            if layout.files[split].is_dir()
            for p in visible_subfolders(layout.files[split])
            if not p.is_symlink()
        }
    return sorted(folders - set(by_class))


# ---- decoding, straightening, converting ------------------------------------------------------
def _stage(photo: PhotoFile, staging: Path, taken: set[str], result: PhotoDataset) -> Staged | None:
    """Decode one file; write it (unchanged, or straightened and as JPEG) to ``staging``. The
    file is identified by its header, so a non-image (a 3 GB video) is never read whole."""
    suffix = photo.path.suffix.lower()
    try:
        with Image.open(photo.path) as image:  # reads the header; the pixels when loaded
            image.load()
            rotated = _orientation(image) in range(2, 9)  # 1 is upright, others are not EXIF's
            unchanged = image.format == "JPEG" and image.mode in _KEPT_MODES and not rotated
            if unchanged:
                data, size = None, image.size
                out_suffix = suffix if suffix in (".jpg", ".jpeg") else ".jpg"
            else:
                fixed = _plain(ImageOps.exif_transpose(image))
                buffer = io.BytesIO()
                fixed.save(buffer, format="JPEG", quality=JPEG_QUALITY)
                data, size, out_suffix = buffer.getvalue(), fixed.size, ".jpg"
                if rotated:
                    result.details["straightened"].append(photo.rel)
                if image.format != "JPEG" or image.mode not in _KEPT_MODES:
                    result.details["converted"].append(
                        f"{photo.rel} ({image.format} {image.mode} -> JPEG {fixed.mode})"
                    )
    except UnidentifiedImageError:
        if suffix in _PLUGIN_SUFFIXES:
            result.details["unsupported"].append(
                f"{photo.rel} (install {_PLUGIN_SUFFIXES[suffix]} or convert it to JPEG)"
            )
        elif suffix in Image.registered_extensions():
            result.broken.append(photo.rel)
        else:
            result.details["not_images"].append(photo.rel)
        return None
    except OSError as err:  # the file itself could not be read
        result.broken.append(photo.rel)
        logger.debug("unreadable file %s: %s", photo.rel, err)
        return None
    except Exception as err:  # any decoder failure means the image is unusable
        result.broken.append(photo.rel)
        logger.debug("broken image %s: %s: %s", photo.rel, type(err).__name__, err)
        return None

    if Path(photo.rel).parent.parts[1 if photo.split is None else 2 :]:
        result.details["nested"].append(photo.rel)
    name = _unique_name(_safe_stem(photo.path), out_suffix, taken)
    if name != photo.path.name:
        result.details["renamed"].append(f"{photo.rel} -> {name}")
    try:
        if data is None:  # a JPEG kept byte for byte: copied in blocks, never held whole
            shutil.copyfile(photo.path, staging / name)
        else:
            (staging / name).write_bytes(data)
    except OSError as err:
        raise UserError(
            f"Could not write {staging / name} ({err}). Free some disk space or choose another "
            "output folder (--out-dir), then run again."
        ) from err
    return Staged(photo, name, size)


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1: upright); a damaged EXIF block does not spoil the pixels."""
    try:
        return int(image.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # malformed EXIF data: keep the picture as it is stored
        return 1


def _plain(image: Image.Image) -> Image.Image:
    """RGB (transparent areas on white) or grayscale, as a JPEG holds them."""
    if image.mode in ("L", "1"):
        return image.convert("L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _safe_stem(path: Path) -> str:
    """The file's stem without control characters (they would break the CSV's lines)."""
    stem = "".join(c if c.isprintable() else "_" for c in PurePath(path.name).stem)
    return stem or "image"


def _unique_name(stem: str, suffix: str, taken: set[str]) -> str:
    """``stem + suffix``, or with ``-2``, ``-3``... when taken (case-insensitively: the output
    may sit on a case-insensitive file system)."""
    name, number = stem + suffix, 1
    while name.casefold() in taken:
        number += 1
        name = f"{stem}-{number}{suffix}"
    taken.add(name.casefold())
    return name


def _move(source: Path, target: Path) -> None:
    try:
        os.replace(source, target)
    except OSError as err:
        raise UserError(
            f"Could not move {source} to {target} ({err}). Check that the output folder is "
            "writable, then run again."
        ) from err


# ---- splitting --------------------------------------------------------------------------------
def _stratified_split(
    by_class: dict[str, list[Staged]], test_fraction: float, seed: int, result: PhotoDataset
) -> dict[str, list[tuple[str, Staged]]]:
    """Per class, ``test_fraction`` of the images (at least one, never all) go to test; the
    choice depends only on the seed, the class name and its files."""
    chosen: dict[str, list[tuple[str, Staged]]] = {}
    for name, items in by_class.items():
        if len(items) < 2:
            result.details["left_out_classes"].append(
                f"{name} ({len(items)} usable image: at least 2 are needed, 1 to train, 1 to test)"
            )
            continue
        items = sorted(items, key=lambda item: item.photo.rel)
        num_test = min(len(items) - 1, max(1, int(len(items) * test_fraction + 0.5)))
        # A string seed is hashed with SHA-512: the same split on every machine and Python run.
        order = list(range(len(items)))
        random.Random(f"{seed}/{name}").shuffle(order)
        test = set(order[:num_test])
        chosen[name] = [("test" if i in test else "train", item) for i, item in enumerate(items)]
    return chosen


def _given_split(
    by_class: dict[str, list[Staged]], result: PhotoDataset
) -> dict[str, list[tuple[str, Staged]]]:
    """The user's split; a class without training images is left out."""
    chosen: dict[str, list[tuple[str, Staged]]] = {}
    for name, items in by_class.items():
        splits = {item.photo.split for item in items}
        if "train" not in splits:
            result.details["left_out_classes"].append(f"{name} (no usable image in train/)")
            continue
        if "test" not in splits:
            result.details["no_test_images"].append(name)
        chosen[name] = [(str(item.photo.split), item) for item in items]
    return chosen


def _left_out_hint(result: PhotoDataset) -> str:
    left_out = result.details.get("left_out_classes", [])
    if not left_out:
        return ""
    return " Left out: " + "; ".join(left_out[:5]) + ("; ..." if len(left_out) > 5 else "") + "."
