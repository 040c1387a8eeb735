"""The prepared dataset's format, in one place: ``<split>/`` image folders and
``<split>_labels.csv`` files, written by the preparation step and read by the datasets.

Columns: ``image_fname,class,bbox_x1,bbox_y1,bbox_x2,bbox_y2,class_name``; ``class`` is 1-based
(0-based ``label`` in memory), rows sorted by ``image_fname``.

Every CSV this project writes goes through ``csv_writer``: text cells are always quoted (a name
holding a comma, a quote or a line break reads back unchanged), and a text cell that a
spreadsheet would run as a formula (starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage
return) gets a leading ``'``, which ``read_annotations`` removes again.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from utils.errors import UserError

SPLITS = ("train", "test")
LABEL_COLUMNS = ("image_fname", "class", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class_name")


@dataclass(frozen=True)
class Annotation:
    """One labelled image; ``label`` is 0-based, the CSV's ``class`` is 1-based."""

    fname: str
    label: int
    bbox: tuple[float, float, float, float]
    class_name: str


def labels_csv(data_path: str | Path, split: str) -> Path:
    """``<data_path>/<split>_labels.csv``."""
    return Path(data_path) / f"{split}_labels.csv"


# ---- one quoting-aware CSV format --------------------------------------------------
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")


def spreadsheet_safe(text: str) -> str:
    """``text`` with a leading ``'`` when a spreadsheet would run it as a formula (and when it
    starts with ``'`` itself, so that ``from_spreadsheet_safe`` restores every text exactly)."""
    return "'" + text if text.startswith(_FORMULA_START) else text


def from_spreadsheet_safe(text: str) -> str:
    """The text ``spreadsheet_safe`` was given."""
    return text[1:] if text.startswith("'") else text


def csv_writer(handle: TextIO) -> CsvWriter:
    """A writer whose rows are safe to read back and to open in a spreadsheet: every text cell
    quoted and made ``spreadsheet_safe``, numbers as they are."""
    return CsvWriter(csv.writer(handle, lineterminator="\n", quoting=csv.QUOTE_NONNUMERIC))


class CsvWriter:
    """``csv.writer`` with text cells made ``spreadsheet_safe``."""

    def __init__(self, writer: Any) -> None:
        self._writer = writer

    def writerow(self, row: Iterable[Any]) -> None:
        self._writer.writerow(
            [spreadsheet_safe(cell) if isinstance(cell, str) else cell for cell in row]
        )

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)


def write_labels_csv(path: str | Path, annotations: Iterable[Annotation]) -> None:
    """Write annotations as a labels CSV, sorted by file name (``OSError`` is the caller's)."""
    rows = sorted(annotations, key=lambda ann: ann.fname)
    with Path(path).open("w", newline="", encoding="utf-8") as handle:
        writer = csv_writer(handle)
        writer.writerow(LABEL_COLUMNS)
        for ann in rows:
            writer.writerow([ann.fname, ann.label + 1, *ann.bbox, ann.class_name])


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
                fname = from_spreadsheet_safe(row["image_fname"])
                if fname in annotations:
                    raise UserError(
                        f"labels file '{path}', line {line}: image '{fname}' is listed twice. "
                        "Keep one row per image (prepare the dataset again)."
                    )
                name = from_spreadsheet_safe(row["class_name"] or "")
                annotations[fname] = Annotation(fname, class_id - 1, bbox, name)
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
    # Ids are checked against the classes present before anything is sized by the largest one:
    # a single id of 10^12 must not allocate 10^12 names.
    count = len(names)
    if max(names) + 1 != count:
        gaps = [i + 1 for i in range(count) if i not in names]
        raise UserError(
            f"class ids must run from 1 to {count} (the number of classes present) without gaps, "
            f"but the largest is {max(names) + 1} and no image has class "
            f"{', '.join(map(str, gaps[:10]))}. Renumber the classes in the labels CSVs."
        )
    return [names[i] for i in range(count)]
