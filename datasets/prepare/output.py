"""The output folder: what may be replaced, building beside it, and the swap into place.

The dataset is built inside a work folder ``.<name>.partial-<random>`` beside ``out_dir`` and
renamed into place only when complete, so an interrupted run never leaves a folder that looks
prepared; a replaced dataset waits in ``.<name>.old-<random>`` until the swap is done. Each work
folder holds its owner's process id in ``.owner-pid``, so that a later run removes the folders
of runs that died and leaves those of runs still going.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

from datasets.labels import SPLITS, Annotation, labels_csv, write_labels_csv
from datasets.prepare.annotations import RawAnnotation
from datasets.prepare.images import write_fix
from utils.errors import UserError

logger = logging.getLogger(__name__)

MARKER_NAME = ".prepared.json"
MARKER_FORMAT = 1
OWNER_FILE = ".owner-pid"
PARTIAL_TAG = ".partial-"
OLD_TAG = ".old-"
# A work folder without a readable owner is left to a run that may have just created it.
UNOWNED_STALE_AFTER_S = 3600


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


def existing_dataset(out_dir: Path, force: bool) -> dict | None:
    """The marker of the complete dataset already in ``out_dir`` when there is nothing to do;
    None when a new one may be built there. A UserError when ``out_dir`` must be left alone."""
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
    if not (out_dir / MARKER_NAME).exists():
        if force and prepared_without_marker(out_dir):
            logger.info(
                "Replacing the dataset in %s, prepared without %s (by the original code), "
                "once the new one is complete (--force)",
                out_dir,
                MARKER_NAME,
            )
            return None
        if prepared_without_marker(out_dir):
            raise UserError(
                f"The output folder {out_dir} holds a dataset prepared without {MARKER_NAME} "
                "(by the original code?), so it is left alone. Run again with --force to "
                "replace it, or choose another output folder (--out-dir or stanford_data_path "
                "in config.yml)."
            )
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
    if marker is None or marker.get("format") != MARKER_FORMAT or not _well_typed(marker):
        raise UserError(
            f"The prepared dataset in {out_dir} has an unreadable {MARKER_NAME}. Run again "
            "with --force to rebuild it."
        )
    expected = (*SPLITS, *(labels_csv(out_dir, split).name for split in SPLITS))
    damaged = [name for name in expected if not (out_dir / name).exists()]
    if damaged:
        raise UserError(
            f"The prepared dataset in {out_dir} is damaged ({', '.join(damaged)} missing). Run "
            "again with --force to rebuild it."
        )
    logger.debug(  # the caller says it once, in its summary
        "%s already holds a prepared dataset (from %s); nothing to do. Use --force to rebuild.",
        out_dir,
        marker.get("raw_dir", "?"),
    )
    return marker


# Files a desktop leaves in any folder; they do not make a prepared dataset someone else's.
_DESKTOP_FILES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})


def prepared_without_marker(out_dir: Path) -> bool:
    """Whether ``out_dir`` holds exactly a prepared dataset's entries (``train/``, ``test/`` and
    their labels CSVs), as the original code wrote them, and nothing of anyone else's."""
    expected = {*SPLITS, *(labels_csv(out_dir, split).name for split in SPLITS)}
    try:
        names = {path.name for path in out_dir.iterdir()} - _DESKTOP_FILES
    except OSError:
        return False
    return names == expected and all((out_dir / split).is_dir() for split in SPLITS)


# ---- a marker of the wrong types, a linked output folder ------------------------------
_MARKER_TYPES = {
    "num_train": int,
    "num_test": int,
    "num_classes": int,
    "missing": list,
    "broken": list,
    "refused": list,
    "details": dict,
    "layout": str,
}


def _well_typed(marker: dict) -> bool:
    """Whether the marker's fields that are present have the types this code writes."""
    for key, kind in _MARKER_TYPES.items():
        value = marker.get(key)
        if value is None:
            continue
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return False
        if kind is list and not all(isinstance(item, str) for item in value):
            return False
    return True


def follow_output_link(out_dir: Path) -> Path:
    """The folder a symbolic link ``out_dir`` points to (the dataset is built beside it and
    renamed onto it, so the link keeps pointing at the new dataset); ``out_dir`` itself when it
    is no link. A broken link stays as it is, for ``existing_dataset`` to refuse."""
    if out_dir.is_symlink() and out_dir.exists():
        target = Path(os.path.realpath(out_dir))
        logger.info("%s is a link to %s; preparing the dataset there", out_dir, target)
        return target
    return out_dir


def check_not_nested(raw_dir: Path, out_dir: Path) -> None:
    """A UserError when replacing ``out_dir`` would replace the raw data too."""
    raw = raw_dir.resolve()
    out = out_dir.resolve()
    if raw == out or out in raw.parents:
        raise UserError(
            f"The output folder {out_dir} contains the raw data folder {raw_dir}; preparing "
            "would replace the raw files. Choose an output folder outside the raw data."
        )


def make_work_folder(out_dir: Path) -> Path:
    """A new work folder beside ``out_dir``; the dataset is built in its ``<name>/``, which
    already holds the empty split folders."""
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        work = _claim_folder(out_dir, PARTIAL_TAG)
    except OSError as err:
        raise _unwritable(out_dir, err) from err
    try:
        for split in SPLITS:
            (work / out_dir.name / split).mkdir(parents=True)
    except BaseException as err:
        shutil.rmtree(work, ignore_errors=True)
        if isinstance(err, OSError):
            raise _unwritable(out_dir, err) from err
        raise
    return work


def _unwritable(out_dir: Path, err: OSError) -> UserError:
    return UserError(
        f"Could not create the output folder next to {out_dir.parent} ({err}). Check that the "
        "path is writable or choose another output folder (--out-dir)."
    )


def _claim_folder(out_dir: Path, tag: str) -> Path:
    """A new, uniquely named folder beside ``out_dir`` recording this process as its owner."""
    folder = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}{tag}", dir=out_dir.parent))
    try:
        (folder / OWNER_FILE).write_text(f"{os.getpid()}\n", encoding="utf-8")
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder


def _owner(folder: Path) -> int | None:
    if folder.is_symlink() or not folder.is_dir():
        return None
    try:
        return int((folder / OWNER_FILE).read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None


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


def _is_stale(path: Path) -> bool:
    owner = _owner(path)
    if owner is None:
        try:
            age = time.time() - path.lstat().st_mtime
        except OSError:
            return False
        if age < UNOWNED_STALE_AFTER_S:
            logger.debug("Leaving %s alone: no owner recorded yet", path)
            return False
        return True
    if owner != os.getpid() and _pid_alive(owner):
        logger.warning("Leaving %s alone: process %s is still running", path, owner)
        return False
    return True


def remove_stale_work_folders(out_dir: Path) -> None:
    """Remove the work folders beside ``out_dir`` left by runs that are no longer running."""
    parent = out_dir.parent
    if not parent.is_dir():
        return
    prefixes = tuple(f".{out_dir.name}{tag}" for tag in (PARTIAL_TAG, OLD_TAG))
    for path in parent.iterdir():
        if not path.name.startswith(prefixes) or not _is_stale(path):
            continue
        logger.info("Removing %s left by an earlier interrupted run", path)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def move_into_place(work: Path, out_dir: Path) -> None:
    """Replace ``out_dir`` by the dataset built in ``work``, then remove ``work``."""
    try:
        if out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()
        if out_dir.exists():
            old = _claim_folder(out_dir, OLD_TAG)
            os.rename(out_dir, old / out_dir.name)
            os.rename(work / out_dir.name, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(work / out_dir.name, out_dir)
    except OSError as err:
        raise UserError(
            f"Could not move the prepared dataset into {out_dir} ({err}). Check that the folder "
            "is writable and not open in another program, then run again."
        ) from err
    shutil.rmtree(work, ignore_errors=True)


def write_labels(
    folder: Path, split: str, rows: Iterable[RawAnnotation], class_names: list[str]
) -> None:
    """Write ``<split>_labels.csv`` in ``folder``; a UserError when that fails."""
    path = labels_csv(folder, split)
    annotations = (
        Annotation(ann.fname, ann.class_id - 1, ann.bbox, class_names[ann.class_id - 1])
        for ann in rows
    )
    try:
        write_labels_csv(path, annotations)
    except OSError as err:
        raise UserError(f"Could not write {path} ({err}). {write_fix(err)}") from err


def write_marker(folder: Path, report: dict, raw_dir: Path, out_dir: Path, found: str) -> None:
    """Write the marker last: the report's fields plus where the data came from and when."""
    marker = {
        **report,
        "format": MARKER_FORMAT,
        "out_dir": str(out_dir),
        "raw_dir": str(raw_dir.resolve()),
        "found": found,
        "prepared_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        (folder / MARKER_NAME).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    except OSError as err:
        raise UserError(f"Could not write {folder / MARKER_NAME} ({err}).") from err
