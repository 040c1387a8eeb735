"""The raw annotations: MATLAB files (read with scipy) turned into one record per image."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io

from datasets.prepare.archives import base_name, read_bytes, read_named_files
from datasets.prepare.layouts import REDOWNLOAD, Layout
from utils.errors import UserError
from utils.text import short

_DEVKIT_FILES = frozenset(
    {
        "cars_meta.mat",
        "cars_train_annos.mat",
        "cars_test_annos.mat",
        "cars_test_annos_withlabels.mat",
    }
)


@dataclass(frozen=True)
class RawAnnotation:
    """One annotated image as the raw download describes it."""

    split: str
    source: str  # where the annotations say the image is, e.g. "car_ims/000001.jpg"
    fname: str  # base name in the output folder
    class_id: int  # 1-based
    bbox: tuple[int, int, int, int]


@dataclass
class ImageSource:
    """An archive or folder holding the images of some annotations."""

    path: Path
    is_archive: bool
    annotations: list[RawAnnotation]


def read_raw_annotations(layout: Layout) -> tuple[list[str], list[ImageSource]]:
    """The class names (index = class id - 1) and where each annotated image is to be found."""
    files = layout.files
    devkit = _read_devkit(files["devkit"]) if "devkit" in files else {}

    if layout.name == "updated":
        annos_mat = _parse_mat(read_bytes(files["annos"]), "cars_annos.mat")
        if "cars_meta.mat" in devkit:
            class_names = _class_names(devkit["cars_meta.mat"], "devkit/cars_meta.mat")
        elif "class_names" in annos_mat:
            class_names = _class_names(annos_mat, "cars_annos.mat")
        else:
            raise UserError(
                "No class names found: cars_annos.mat has no 'class_names' and there is no "
                "car_devkit.tgz (devkit/cars_meta.mat) next to it. Download car_devkit.tgz into "
                f"{layout.root}."
            )
        annotations = _updated_annotations(annos_mat, class_names)
        images = files["images"]
        return class_names, [ImageSource(images, images.suffix == ".tgz", annotations)]

    kit = files["devkit"].name
    if "cars_meta.mat" not in devkit or "cars_train_annos.mat" not in devkit:
        raise UserError(
            f"{kit} in {layout.root} lacks devkit/cars_meta.mat or devkit/cars_train_annos.mat. "
            f"It is incomplete or corrupt: {REDOWNLOAD}."
        )
    if "test_labels" in files:
        test_mat = _parse_mat(read_bytes(files["test_labels"]), "cars_test_annos_withlabels.mat")
    elif "cars_test_annos_withlabels.mat" in devkit:
        test_mat = devkit["cars_test_annos_withlabels.mat"]
    else:
        raise UserError(
            f"cars_test_annos_withlabels.mat is missing from {layout.root}: the devkit's "
            "cars_test_annos.mat has no class labels, so the test split cannot be labelled. "
            f"Download cars_test_annos_withlabels.mat into {layout.root}."
        )
    class_names = _class_names(devkit["cars_meta.mat"], "devkit/cars_meta.mat")
    train = _split_annotations(
        devkit["cars_train_annos.mat"], "devkit/cars_train_annos.mat", "train", class_names
    )
    test = _split_annotations(test_mat, "cars_test_annos_withlabels.mat", "test", class_names)
    is_archive = layout.name == "original"
    return class_names, [
        ImageSource(files["train_images"], is_archive, train),
        ImageSource(files["test_images"], is_archive, test),
    ]


def _read_devkit(path: Path) -> dict[str, dict]:
    """Parsed .mat files of the devkit (archive or folder), by base name."""
    found = read_named_files(path, _DEVKIT_FILES)
    return {name: _parse_mat(data, f"devkit/{name} ({path.name})") for name, data in found.items()}


def _parse_mat(data: bytes, label: str) -> dict:
    try:
        return scipy.io.loadmat(io.BytesIO(data))
    except Exception as err:  # scipy raises many types for damaged files
        raise UserError(
            f"{label} could not be read as a MATLAB file ({type(err).__name__}: {err}). It is "
            f"probably corrupt or truncated: {REDOWNLOAD}."
        ) from err


def _scalar(value) -> object:
    """Unwrap loadmat's nesting (1x1 matrices, cells of char arrays) down to one value."""
    array = np.asarray(value)
    while array.dtype == object and array.size == 1:
        array = np.asarray(array.ravel()[0])
    if array.size != 1:
        if array.dtype.kind == "U" and array.ndim == 1:
            return "".join(array.tolist())
        raise ValueError(f"expected one value, got an array of shape {array.shape}")
    return array.ravel()[0]


def _as_int(value) -> int:
    number = _scalar(value)
    # Only real numbers: a struct or a complex value (whose imaginary part float() would drop)
    # is a damaged file, not a number.
    if isinstance(number, (bool, np.bool_)) or not isinstance(
        number, (int, float, np.integer, np.floating)
    ):
        raise ValueError(f"expected a number, got {short(number)}")
    as_float = float(number)
    if not as_float.is_integer():
        raise ValueError(f"expected a whole number, got {as_float}")
    return int(as_float)


def _as_str(value) -> str:
    array = np.asarray(value)
    if array.size == 0:
        return ""
    text = _scalar(array)
    if not isinstance(text, (str, np.str_)):
        raise ValueError(f"expected text, got {short(text)}")
    return str(text)


def _bad_mat(label: str, problem: str) -> UserError:
    return UserError(
        f"{label} does not look like a Stanford Cars annotation file ({problem}). It is probably "
        f"damaged or a different file: {REDOWNLOAD}."
    )


def _class_names(mat: dict, label: str) -> list[str]:
    if "class_names" not in mat:
        raise _bad_mat(label, "no 'class_names' variable")
    try:
        names = [_as_str(item) for item in np.asarray(mat["class_names"]).ravel()]
    except ValueError as err:
        raise _bad_mat(label, f"class_names: {err}") from err
    if not names:
        raise _bad_mat(label, "class_names is empty")
    return names


def _struct_columns(mat: dict, label: str, fields: Iterable[str]) -> dict[str, np.ndarray]:
    array = mat.get("annotations")
    if not isinstance(array, np.ndarray) or array.dtype.names is None:
        raise _bad_mat(label, "no 'annotations' struct array")
    lacking = [name for name in fields if name not in array.dtype.names]
    if lacking:
        raise _bad_mat(label, f"annotations lack the fields {', '.join(lacking)}")
    return {name: array[name].ravel() for name in fields}


def _build_annotations(
    columns: dict[str, np.ndarray],
    label: str,
    class_names: list[str],
    path_field: str,
    split_of: Callable[[int], str],
    source_dir: str,
) -> list[RawAnnotation]:
    annotations = []
    seen: dict[tuple[str, str], str] = {}
    count = len(next(iter(columns.values())))
    for i in range(count):
        try:
            path = _as_str(columns[path_field][i]).replace("\\", "/")
            x1, y1, x2, y2 = (_as_int(columns[f"bbox_{k}"][i]) for k in ("x1", "y1", "x2", "y2"))
            bbox = (x1, y1, x2, y2)
            class_id = _as_int(columns["class"][i])
            split = split_of(i)
        except ValueError as err:
            raise _bad_mat(label, f"annotation {i + 1}: {err}") from err
        fname = base_name(path)
        if fname in ("", ".", ".."):
            raise _bad_mat(label, f"annotation {i + 1} names no image file ({path!r})")
        if not 1 <= class_id <= len(class_names):
            raise _bad_mat(
                label,
                f"{path} has class {class_id}, outside 1..{len(class_names)} of the class names",
            )
        source = path if "/" in path else f"{source_dir}/{path}"
        if (split, fname) in seen:
            raise _bad_mat(label, f"{fname} is annotated twice ({seen[(split, fname)]}, {path})")
        seen[(split, fname)] = path
        annotations.append(RawAnnotation(split, source, fname, class_id, bbox))
    if not annotations:
        raise _bad_mat(label, "no annotations")
    return annotations


def _updated_annotations(mat: dict, class_names: list[str]) -> list[RawAnnotation]:
    label = "cars_annos.mat"
    fields = ("relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test")
    columns = _struct_columns(mat, label, fields)

    def split_of(i: int) -> str:
        return "test" if _as_int(columns["test"][i]) else "train"

    annotations = _build_annotations(
        columns, label, class_names, "relative_im_path", split_of, "car_ims"
    )
    # One archive holds both splits, so base names must be unique across them.
    by_name: dict[str, str] = {}
    for ann in annotations:
        if ann.fname in by_name:
            raise _bad_mat(label, f"{ann.fname} is annotated twice ({by_name[ann.fname]})")
        by_name[ann.fname] = ann.source
    return annotations


def _split_annotations(
    mat: dict, label: str, split: str, class_names: list[str]
) -> list[RawAnnotation]:
    fields = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")
    columns = _struct_columns(mat, label, fields)
    return _build_annotations(
        columns, label, class_names, "fname", lambda _i: split, f"cars_{split}"
    )
