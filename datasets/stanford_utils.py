"""Turn a raw Stanford Cars download into the folders and CSVs that training reads.

Three raw layouts are recognised (users hold one of them now that the original URLs are gone):

- "updated" release: ``car_ims.tgz``, ``cars_annos.mat``, ``car_devkit.tgz`` (the thesis used
  this one); also accepted already unpacked as ``car_ims/``, ``cars_annos.mat``, ``devkit/``.
- "original" release: ``cars_train.tgz``, ``cars_test.tgz``, ``car_devkit.tgz`` and
  ``cars_test_annos_withlabels.mat``.
- "extracted": torchvision's ``stanford_cars/`` folder (``cars_train/``, ``cars_test/``,
  ``devkit/``, ``cars_test_annos_withlabels.mat``), including Kaggle mirrors that nest the
  images one level deeper (``cars_train/cars_train/``).

Output (the thesis's format)::

    out_dir/
        train/<base name>.jpg       bytes copied unchanged
        test/<base name>.jpg
        train_labels.csv            image_fname,class,bbox_x1,bbox_y1,bbox_x2,bbox_y2,class_name
        test_labels.csv             (class is 1-based, rows sorted by image_fname)
        .prepared.json              written last: layout, counts and problems

The output is built in a hidden sibling folder and renamed into place only when complete, so
an interrupted run never leaves a folder that looks prepared. Archive members are streamed one
by one; links are refused and nothing is written anywhere but ``out_dir``, whatever the member
names say. Every annotated image is decoded once; missing or broken ones are left out of the
CSVs and reported.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
import tarfile
import zlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

import numpy as np
import scipy.io
from PIL import Image
from tqdm import tqdm

from utils.errors import UserError

logger = logging.getLogger(__name__)

SPLITS = ("train", "test")
CSV_COLUMNS = ("image_fname", "class", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class_name")
MARKER_NAME = ".prepared.json"
MARKER_FORMAT = 1
_PARTIAL_TAG = ".partial-"
_OLD_TAG = ".old-"
_MAX_LISTED = 5

_UPDATED_FILES = "car_ims.tgz, cars_annos.mat and car_devkit.tgz"
_ORIGINAL_FILES = "cars_train.tgz, cars_test.tgz, car_devkit.tgz and cars_test_annos_withlabels.mat"
_EXTRACTED_FILES = (
    "a stanford_cars/ folder with cars_train/, cars_test/, devkit/ and "
    "cars_test_annos_withlabels.mat"
)
_REDOWNLOAD = "download it again (a Stanford Cars mirror, e.g. Kaggle or Hugging Face)"


@dataclass
class PrepareReport:
    """What ``prepare_dataset`` did (or found already done, when ``skipped``)."""

    layout: str
    out_dir: Path
    num_train: int
    num_test: int
    num_classes: int
    missing: list[str] = field(default_factory=list)
    broken: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    skipped: bool = False


@dataclass(frozen=True)
class _Annotation:
    split: str
    source: str  # where the annotations say the image is, e.g. "car_ims/000001.jpg"
    fname: str  # base name in the output folder
    class_id: int  # 1-based
    bbox: tuple[int, int, int, int]


@dataclass
class _ImageSource:
    """An archive or folder holding the images of some annotations."""

    path: Path
    is_archive: bool
    annotations: list[_Annotation]


@dataclass
class _Layout:
    name: str
    description: str
    root: Path
    files: dict[str, Path]  # role -> path of what was found


@dataclass
class _Outcome:
    """Per-image results while copying."""

    written: dict[str, set[str]] = field(default_factory=lambda: {s: set() for s in SPLITS})
    problems: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)

    def ok(self, ann: _Annotation) -> None:
        self.written[ann.split].add(ann.fname)
        self.problems.pop((ann.split, ann.fname), None)

    def problem(self, ann: _Annotation, kind: str, detail: str) -> None:
        if ann.fname not in self.written[ann.split]:
            self.problems[(ann.split, ann.fname)] = (kind, ann.source)
            logger.debug("%s image %s: %s", kind, ann.source, detail)

    def seen(self, ann: _Annotation) -> bool:
        key = (ann.split, ann.fname)
        return ann.fname in self.written[ann.split] or key in self.problems

    def names(self, kind: str) -> list[str]:
        return sorted(source for k, source in self.problems.values() if k == kind)


# --------------------------------------------------------------------------- public API


def prepare_dataset(
    raw_dir: str | Path, out_dir: str | Path, force: bool = False, progress: bool = True
) -> PrepareReport:
    """Prepare the raw Stanford Cars files in ``raw_dir`` into ``out_dir``.

    Does nothing (returns a report with ``skipped=True``) when ``out_dir`` already holds a
    complete prepared dataset, unless ``force``; then the new dataset replaces the old one once
    it is complete. Raises ``UserError`` for anything the user has to fix.
    """
    raw_dir = Path(raw_dir).expanduser()
    # Absolute and normalised, so that the temporary sibling folder has a real parent and name.
    out_dir = Path(os.path.abspath(Path(out_dir).expanduser()))

    existing = _check_out_dir(out_dir, force)
    if existing is not None:
        return existing

    layout = _detect_layout(raw_dir)
    _check_not_nested(raw_dir, out_dir)
    logger.info(
        "Found the '%s' Stanford Cars %s (%s) in %s",
        layout.name,
        "folder" if layout.name == "extracted" else "release",
        layout.description,
        layout.root,
    )
    class_names, sources = _read_annotations(layout)
    total = sum(len(source.annotations) for source in sources)
    logger.info(
        "Annotations: %d images (%d train, %d test), %d classes",
        total,
        sum(ann.split == "train" for s in sources for ann in s.annotations),
        sum(ann.split == "test" for s in sources for ann in s.annotations),
        len(class_names),
    )

    _remove_stale_temp_folders(out_dir)
    temp = out_dir.parent / f".{out_dir.name}{_PARTIAL_TAG}{os.getpid()}"
    try:
        _make_dirs(temp)
        outcome = _Outcome()
        with tqdm(total=total, desc="Preparing images", unit="img", disable=not progress) as bar:
            for source in sources:
                if source.is_archive:
                    _copy_from_archive(source, temp, outcome, bar)
                else:
                    _copy_from_folder(source, temp, outcome, bar)
        report = _finish(layout, sources, class_names, outcome, temp, out_dir, raw_dir)
        _move_into_place(temp, out_dir)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    _log_problems(report)
    return report


def read_marker(out_dir: str | Path) -> dict | None:
    """The contents of a prepared dataset's marker file, or None when there is none."""
    marker = Path(out_dir) / MARKER_NAME
    if not marker.is_file():
        return None
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# --------------------------------------------------------------------------- output folder


def _check_out_dir(out_dir: Path, force: bool) -> PrepareReport | None:
    """Return the existing dataset's report when there is nothing to do; else check it may go."""
    if not out_dir.exists():
        if out_dir.is_symlink():
            raise UserError(
                f"The output path {out_dir} is a broken symbolic link. Remove it or choose "
                "another output folder (--out-dir or stanford_data_path in config.yml)."
            )
        return None
    if not out_dir.is_dir():
        raise UserError(
            f"The output path {out_dir} exists and is not a folder. Remove it or choose another "
            "output folder (--out-dir or stanford_data_path in config.yml)."
        )
    has_marker = (out_dir / MARKER_NAME).exists()
    if not has_marker:
        if any(out_dir.iterdir()):
            raise UserError(
                f"The output folder {out_dir} is not empty and is not a dataset prepared by this "
                f"script (it has no {MARKER_NAME}), so it is left alone. Choose an empty or new "
                "output folder (--out-dir or stanford_data_path in config.yml), or move its "
                "contents away."
            )
        return None
    if force:
        logger.info("Rebuilding the prepared dataset in %s (--force)", out_dir)
        return None
    marker = read_marker(out_dir)
    if marker is None or marker.get("format") != MARKER_FORMAT:
        raise UserError(
            f"The prepared dataset in {out_dir} has an unreadable {MARKER_NAME}. Run again "
            "with --force to rebuild it."
        )
    damaged = [
        name
        for name in (*SPLITS, *(f"{split}_labels.csv" for split in SPLITS))
        if not (out_dir / name).exists()
    ]
    if damaged:
        raise UserError(
            f"The prepared dataset in {out_dir} is damaged ({', '.join(damaged)} missing). Run "
            "again with --force to rebuild it."
        )
    logger.info(
        "%s already holds a prepared dataset (from %s); nothing to do. Use --force to rebuild.",
        out_dir,
        marker.get("raw_dir", "?"),
    )
    return PrepareReport(
        layout=str(marker.get("layout", "?")),
        out_dir=out_dir,
        num_train=int(marker.get("num_train", 0)),
        num_test=int(marker.get("num_test", 0)),
        num_classes=int(marker.get("num_classes", 0)),
        missing=list(marker.get("missing", [])),
        broken=list(marker.get("broken", [])),
        refused=list(marker.get("refused", [])),
        skipped=True,
    )


def _check_not_nested(raw_dir: Path, out_dir: Path) -> None:
    raw = raw_dir.resolve()
    out = out_dir.resolve()
    if raw == out or out in raw.parents:
        raise UserError(
            f"The output folder {out_dir} contains the raw data folder {raw_dir}; preparing "
            "would replace the raw files. Choose an output folder outside the raw data."
        )


def _make_dirs(temp: Path) -> None:
    try:
        temp.parent.mkdir(parents=True, exist_ok=True)
        temp.mkdir()
        for split in SPLITS:
            (temp / split).mkdir()
    except OSError as err:
        raise UserError(
            f"Could not create the output folder next to {temp.parent} ({err}). Check that the "
            "path is writable or choose another output folder (--out-dir)."
        ) from err


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if os.name != "posix":
        return False  # os.kill(pid, 0) would terminate the process on Windows
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, OSError):
        return False
    return True


def _remove_stale_temp_folders(out_dir: Path) -> None:
    parent = out_dir.parent
    if not parent.is_dir():
        return
    for tag in (_PARTIAL_TAG, _OLD_TAG):
        prefix = f".{out_dir.name}{tag}"
        for path in parent.iterdir():
            suffix = path.name[len(prefix) :]
            if not path.name.startswith(prefix) or not suffix.isdigit():
                continue
            if _pid_alive(int(suffix)) and int(suffix) != os.getpid():
                logger.warning("Leaving %s alone: process %s is still running", path, suffix)
                continue
            logger.info("Removing %s left by an earlier interrupted run", path)
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def _move_into_place(temp: Path, out_dir: Path) -> None:
    try:
        if out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}{_OLD_TAG}{os.getpid()}"
            os.rename(out_dir, old)
            os.rename(temp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(temp, out_dir)
    except OSError as err:
        raise UserError(
            f"Could not move the prepared dataset into {out_dir} ({err}). Check that the folder "
            "is writable and not open in another program, then run again."
        ) from err


# --------------------------------------------------------------------------- layout detection


def _image_folder(folder: Path) -> Path:
    """``folder``, or ``folder/<same name>`` when that holds the images (Kaggle mirrors)."""
    inner = folder / folder.name
    if inner.is_dir() and not any(folder.glob("*.jpg")):
        return inner
    return folder


def _detect_layout(raw_dir: Path) -> _Layout:
    if not raw_dir.exists():
        raise UserError(
            f"The raw data folder {raw_dir} does not exist. Download Stanford Cars (the updated "
            f"release: {_UPDATED_FILES}; or the original release: {_ORIGINAL_FILES}; or "
            f"{_EXTRACTED_FILES}) into it, or point --raw-dir (stanford_raw_data_path in "
            "config.yml) at the folder that holds them."
        )
    if not raw_dir.is_dir():
        raise UserError(
            f"The raw data path {raw_dir} is not a folder. Point --raw-dir "
            "(stanford_raw_data_path in config.yml) at the folder that holds the downloaded files."
        )

    annos = raw_dir / "cars_annos.mat"
    if annos.is_file():
        devkit = _find_devkit(raw_dir)
        kit = "car_devkit.tgz" if devkit and devkit.suffix == ".tgz" else "devkit/"
        if (raw_dir / "car_ims.tgz").is_file():
            files = {"images": raw_dir / "car_ims.tgz", "annos": annos}
            text = "car_ims.tgz, cars_annos.mat"
        elif (raw_dir / "car_ims").is_dir():
            files = {"images": _image_folder(raw_dir / "car_ims"), "annos": annos}
            text = "car_ims/, cars_annos.mat"
        else:
            files = None
        if files is not None:
            if devkit is not None:
                files["devkit"] = devkit
                text += f", {kit}"
            return _Layout("updated", text, raw_dir, files)

    if all((raw_dir / f"cars_{split}.tgz").is_file() for split in SPLITS):
        devkit = _find_devkit(raw_dir)
        if devkit is not None:
            files = {
                "train_images": raw_dir / "cars_train.tgz",
                "test_images": raw_dir / "cars_test.tgz",
                "devkit": devkit,
            }
            labels = raw_dir / "cars_test_annos_withlabels.mat"
            text = "cars_train.tgz, cars_test.tgz, " + devkit.name
            if labels.is_file():
                files["test_labels"] = labels
                text += ", cars_test_annos_withlabels.mat"
            return _Layout("original", text, raw_dir, files)

    for root in (raw_dir, raw_dir / "stanford_cars"):
        if all((root / name).is_dir() for name in ("cars_train", "cars_test", "devkit")):
            files = {
                "train_images": _image_folder(root / "cars_train"),
                "test_images": _image_folder(root / "cars_test"),
                "devkit": root / "devkit",
            }
            text = "cars_train/, cars_test/, devkit/"
            labels = root / "cars_test_annos_withlabels.mat"
            if labels.is_file():
                files["test_labels"] = labels
                text += ", cars_test_annos_withlabels.mat"
            return _Layout("extracted", text, root, files)

    raise UserError(_unrecognised_message(raw_dir))


def _find_devkit(raw_dir: Path) -> Path | None:
    if (raw_dir / "car_devkit.tgz").is_file():
        return raw_dir / "car_devkit.tgz"
    if (raw_dir / "devkit").is_dir():
        return raw_dir / "devkit"
    return None


def _unrecognised_message(raw_dir: Path) -> str:
    try:
        entries = sorted(p.name + ("/" if p.is_dir() else "") for p in raw_dir.iterdir())
    except OSError:
        entries = []
    if entries:
        shown = ", ".join(entries[:10]) + (", ..." if len(entries) > 10 else "")
        found = f"It holds: {shown}."
    else:
        found = "It is empty."
    return (
        f"No Stanford Cars download was recognised in {raw_dir}. {found} Expected one of: the "
        f"'updated' release ({_UPDATED_FILES}); the 'original' release ({_ORIGINAL_FILES}); "
        f"or torchvision's extracted folder ({_EXTRACTED_FILES}). Put the downloaded files "
        "there, or point --raw-dir (stanford_raw_data_path in config.yml) at the folder that "
        "holds them."
    )


# --------------------------------------------------------------------------- annotations


def _read_annotations(layout: _Layout) -> tuple[list[str], list[_ImageSource]]:
    files = layout.files
    devkit = _read_devkit(files["devkit"]) if "devkit" in files else {}

    if layout.name == "updated":
        annos_mat = _parse_mat(_read_bytes(files["annos"]), "cars_annos.mat")
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
        return class_names, [_ImageSource(images, images.suffix == ".tgz", annotations)]

    kit = files["devkit"].name
    if "cars_meta.mat" not in devkit or "cars_train_annos.mat" not in devkit:
        raise UserError(
            f"{kit} in {layout.root} lacks devkit/cars_meta.mat or devkit/cars_train_annos.mat. "
            f"It is incomplete or corrupt: {_REDOWNLOAD}."
        )
    if "test_labels" in files:
        test_mat = _parse_mat(_read_bytes(files["test_labels"]), "cars_test_annos_withlabels.mat")
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
        _ImageSource(files["train_images"], is_archive, train),
        _ImageSource(files["test_images"], is_archive, test),
    ]


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise UserError(f"Could not read {path} ({err}). Check its permissions.") from err


def _read_devkit(path: Path) -> dict[str, dict]:
    """Parsed .mat files of the devkit (archive or folder), by base name."""
    wanted = {
        "cars_meta.mat",
        "cars_train_annos.mat",
        "cars_test_annos.mat",
        "cars_test_annos_withlabels.mat",
    }
    found: dict[str, bytes] = {}
    if path.is_dir():
        for name in wanted:
            if (path / name).is_file():
                found[name] = _read_bytes(path / name)
    else:
        for member, data in _iter_archive(path, lambda m: _base_name(m.name) in wanted):
            if member.isreg() and _is_safe_member_name(member.name):
                found.setdefault(_base_name(member.name), data)
    return {name: _parse_mat(data, f"devkit/{name} ({path.name})") for name, data in found.items()}


def _parse_mat(data: bytes, label: str) -> dict:
    try:
        return scipy.io.loadmat(io.BytesIO(data))
    except Exception as err:  # scipy raises many types for damaged files
        raise UserError(
            f"{label} could not be read as a MATLAB file ({type(err).__name__}: {err}). It is "
            f"probably corrupt or truncated: {_REDOWNLOAD}."
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
    if isinstance(number, (str, np.str_)):
        raise ValueError(f"expected a number, got {number!r}")
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
        raise ValueError(f"expected text, got {text!r}")
    return str(text)


def _bad_mat(label: str, problem: str) -> UserError:
    return UserError(
        f"{label} does not look like a Stanford Cars annotation file ({problem}). It is probably "
        f"damaged or a different file: {_REDOWNLOAD}."
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
    split_of,
    source_dir: str,
) -> list[_Annotation]:
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
        fname = _base_name(path)
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
        annotations.append(_Annotation(split, source, fname, class_id, bbox))
    if not annotations:
        raise _bad_mat(label, "no annotations")
    return annotations


def _updated_annotations(mat: dict, class_names: list[str]) -> list[_Annotation]:
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
) -> list[_Annotation]:
    fields = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")
    columns = _struct_columns(mat, label, fields)
    return _build_annotations(
        columns, label, class_names, "fname", lambda _i: split, f"cars_{split}"
    )


# --------------------------------------------------------------------------- copying images


def _base_name(name: str) -> str:
    return PurePosixPath(name.replace("\\", "/")).name


def _normalise(name: str) -> str:
    name = name.replace("\\", "/")
    while name.startswith("./"):
        name = name[2:]
    return name


def _is_safe_member_name(name: str) -> bool:
    name = name.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return False
    return ".." not in name.split("/")


def _iter_archive(path: Path, wanted) -> Iterable[tuple[tarfile.TarInfo, bytes | None]]:
    """Stream an archive once, yielding (member, bytes) for members ``wanted(member)`` accepts.

    Bytes are read only for regular files with safe names; other members come with None.
    Any damage to the archive becomes a UserError naming the file.
    """
    try:
        with tarfile.open(path, mode="r|*") as tar:
            for member in tar:
                if not wanted(member):
                    continue
                data = None
                if member.isreg() and _is_safe_member_name(member.name):
                    handle = tar.extractfile(member)
                    data = handle.read() if handle is not None else None
                yield member, data
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        raise UserError(
            f"{path} could not be read ({type(err).__name__}: {err}). The archive is corrupt or "
            f"truncated (an interrupted download?): {_REDOWNLOAD}."
        ) from err


def _check_image(data: bytes) -> str | None:
    """None when ``data`` decodes as an image, else what went wrong."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except Exception as err:  # any decoder failure means the image is unusable
        return f"{type(err).__name__}: {err}"
    return None


def _store(ann: _Annotation, data: bytes, temp: Path, outcome: _Outcome) -> None:
    problem = _check_image(data)
    if problem is not None:
        outcome.problem(ann, "broken", problem)
        return
    target = temp / ann.split / ann.fname
    try:
        target.write_bytes(data)
    except OSError as err:
        raise UserError(
            f"Could not write {target} ({err}). Free some disk space or choose another output "
            "folder (--out-dir), then run again."
        ) from err
    outcome.ok(ann)


def _copy_from_archive(source: _ImageSource, temp: Path, outcome: _Outcome, bar: tqdm) -> None:
    by_name = {ann.fname: ann for ann in source.annotations}
    exact_done: set[str] = set()

    def wanted(member: tarfile.TarInfo) -> bool:
        return not member.isdir() and _base_name(member.name) in by_name

    for member, data in _iter_archive(source.path, wanted):
        ann = by_name[_base_name(member.name)]
        first = not outcome.seen(ann)
        exact = _normalise(member.name) == ann.source
        if member.issym() or member.islnk():
            outcome.problem(ann, "refused", f"archive member {member.name} is a link")
        elif not member.isreg():
            outcome.problem(ann, "refused", f"archive member {member.name} is not a file")
        elif not _is_safe_member_name(member.name):
            outcome.problem(ann, "refused", f"unsafe archive member name {member.name}")
        elif ann.fname in exact_done or (ann.fname in outcome.written[ann.split] and not exact):
            pass  # a better copy of this image was already taken
        elif data is not None:
            _store(ann, data, temp, outcome)
            if exact:
                exact_done.add(ann.fname)
        if first:
            bar.update(1)


def _copy_from_folder(source: _ImageSource, temp: Path, outcome: _Outcome, bar: tqdm) -> None:
    for ann in source.annotations:
        path = source.path / ann.fname
        if path.is_file():
            try:
                data = path.read_bytes()
            except OSError as err:
                outcome.problem(ann, "broken", f"unreadable: {err}")
            else:
                _store(ann, data, temp, outcome)
        bar.update(1)


# --------------------------------------------------------------------------- finishing


def _finish(
    layout: _Layout,
    sources: list[_ImageSource],
    class_names: list[str],
    outcome: _Outcome,
    temp: Path,
    out_dir: Path,
    raw_dir: Path,
) -> PrepareReport:
    """Record missing images, write the CSVs and (last) the marker; return the report."""
    for source in sources:
        for ann in source.annotations:
            if not outcome.seen(ann):
                outcome.problem(ann, "missing", f"not in {source.path.name}")
    missing, broken, refused = (outcome.names(k) for k in ("missing", "broken", "refused"))

    counts = {}
    for split in SPLITS:
        rows = sorted(
            (ann for s in sources for ann in s.annotations if ann.split == split),
            key=lambda ann: ann.fname,
        )
        rows = [ann for ann in rows if ann.fname in outcome.written[split]]
        if not rows:
            raise UserError(
                f"No usable {split} images in {layout.root}: {len(missing)} missing, "
                f"{len(broken)} broken and {len(refused)} refused in total (e.g. "
                f"{', '.join((missing + broken + refused)[:3])}). The image files do not match "
                f"the annotations or are damaged: {_REDOWNLOAD}."
            )
        counts[split] = len(rows)
        _write_csv(temp / f"{split}_labels.csv", rows, class_names)

    report = PrepareReport(
        layout=layout.name,
        out_dir=out_dir,
        num_train=counts["train"],
        num_test=counts["test"],
        num_classes=len(class_names),
        missing=missing,
        broken=broken,
        refused=refused,
    )
    marker = asdict(report)
    del marker["skipped"]
    marker.update(
        format=MARKER_FORMAT,
        out_dir=str(out_dir),
        raw_dir=str(raw_dir.resolve()),
        found=layout.description,
        prepared_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    try:
        (temp / MARKER_NAME).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    except OSError as err:
        raise UserError(f"Could not write {temp / MARKER_NAME} ({err}).") from err
    return report


def _write_csv(path: Path, rows: list[_Annotation], class_names: list[str]) -> None:
    try:
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(CSV_COLUMNS)
            for ann in rows:
                writer.writerow([ann.fname, ann.class_id, *ann.bbox, class_names[ann.class_id - 1]])
    except OSError as err:
        raise UserError(
            f"Could not write {path} ({err}). Free some disk space or choose another output "
            "folder (--out-dir), then run again."
        ) from err


def _log_problems(report: PrepareReport) -> None:
    for kind, names, why in (
        ("missing", report.missing, "not found where the annotations say"),
        ("broken", report.broken, "do not decode"),
        ("refused", report.refused, "links or unsafe archive members, not followed"),
    ):
        if names:
            shown = "; ".join(names[:_MAX_LISTED]) + ("; ..." if len(names) > _MAX_LISTED else "")
            logger.warning(
                "%d annotated images left out as %s (%s): %s", len(names), kind, why, shown
            )
