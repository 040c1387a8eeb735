"""Run folders as the comparison reads them: each one's config, per-epoch rows and summary, and
the runs found under a list of folders."""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from utils.errors import UserError
from workflows.runs.run_folder import RunFolder

log = logging.getLogger(__name__)

# Folders an output folder holds beside its runs.
_KNOWN_NON_RUNS = ("reports", "mlartifacts", "mlruns", ".neptune", ".launches")
DEFAULT_DATA = "input/stanford"


@dataclass
class RunRecord:
    """One run folder as the report reads it."""

    path: Path
    config: dict[str, Any]
    rows: list[dict[str, float]]
    summary: dict[str, Any] | None
    status: str = ""  # set for runs that never left a folder (a failed sweep trial)
    error: str = ""
    settings: dict[str, Any] = field(default_factory=dict)  # what differs, set by the report
    best: bool = False  # set by the report's ranking

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def tags(self) -> list[str]:
        return [str(t) for t in self.config.get("tags") or []]

    @property
    def description(self) -> str:
        return str(self.config.get("description") or "")

    @property
    def header(self) -> str:
        """How tables and legends name the run: its description, else its folder's name."""
        return self.description or self.name

    @property
    def state(self) -> str:
        if self.status:
            return self.status
        if self.summary is None:
            return "unfinished"
        return "interrupted" if self.summary.get("interrupted") else "finished"

    @cached_property  # may count the classes in a labels file: once per record
    def data(self) -> tuple[str, int | None]:
        """The prepared data folder the run trained on and its number of classes (from
        ``summary.json``, else counted in the folder's ``train_labels.csv`` when it is there)."""
        folder = str(self.config.get("stanford_data_path") or DEFAULT_DATA).rstrip("/\\")
        classes = (self.summary or {}).get("num_classes")
        if not isinstance(classes, int):
            classes = _count_classes(Path(folder)) if self.config else None
        return folder, classes

    def series(self, key: str, from_epoch: int = 0) -> list[tuple[int, float]]:
        """(epoch, value) of ``key`` for the epochs from ``from_epoch`` on."""
        return [
            (int(r["epoch"]), r[key]) for r in self.rows if key in r and r["epoch"] >= from_epoch
        ]

    @property
    def best_epoch(self) -> int | None:
        """The epoch of the lowest valid_loss (the run's ``best.ckpt``)."""
        points = self.series("valid_loss")
        return min(points, key=lambda p: p[1])[0] if points else None

    def figures(self) -> dict[str, Any]:
        """Epochs run, minimum losses and maximum accuracies, from the epoch rows."""

        def pick(key: str, fn):
            values = [value for _, value in self.series(key)]
            return fn(values) if values else None

        return {
            "epochs": len(self.rows),
            "min_train_loss": pick("train_loss", min),
            "min_valid_loss": pick("valid_loss", min),
            "max_train_acc": pick("train_acc", max),
            "max_valid_acc": pick("valid_acc", max),
        }


def read_metrics(path: Path) -> list[dict[str, float]]:
    """The epoch rows of a ``metrics.csv``; empty or unreadable cells are left out."""
    rows = []
    with open(path, newline="", encoding="utf-8") as handle:
        for raw in csv.DictReader(handle):
            row = {}
            for key, value in raw.items():
                try:
                    number = float(value)
                except (TypeError, ValueError):
                    continue
                if not math.isnan(number):
                    row[key] = number
            if "epoch" in row:
                rows.append(row)
    return rows


def load_run(folder: Path, notes: list[str] | None = None) -> RunRecord | None:
    """The run in ``folder``; None when it holds no ``metrics.csv`` (not a run), or when its
    metrics.csv or config.yml (past the config loader's limits, e.g. an alias bomb) cannot be
    read: a note in ``notes`` then says why (a warning when no list is given)."""
    run = RunFolder(folder)
    if not run.metrics_csv.is_file():
        return None
    try:
        rows = read_metrics(run.metrics_csv)
        config = run.checked_config()
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        return _skipped(f"skipped '{folder}': its metrics.csv cannot be read ({err})", notes)
    except UserError as err:
        return _skipped(f"skipped '{folder}': {err}", notes)
    summary = None
    if run.summary_json.is_file():
        try:
            data = json.loads(run.summary_json.read_text(encoding="utf-8"))
            summary = data if isinstance(data, dict) else None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            summary = None
    return RunRecord(path=run.path, config=config, rows=rows, summary=summary)


def _skipped(note: str, notes: list[str] | None) -> None:
    if notes is None:
        log.warning("%s", note)
    else:
        notes.append(note)


def find_runs(paths: list[Path], notes: list[str] | None = None) -> list[RunRecord]:
    """The runs among ``paths``: each a run folder or a folder of run folders, sorted by name.
    What is neither, or cannot be read, is skipped with a note in ``notes``."""
    notes = notes if notes is not None else []
    found: dict[Path, RunRecord] = {}
    for path in map(Path, paths):
        if RunFolder(path).metrics_csv.is_file():
            record = load_run(path, notes)
            if record is not None:
                found[record.path.resolve()] = record
            continue
        if not path.is_dir():
            notes.append(f"skipped '{path}': not a folder")
            continue
        children = 0
        for child in sorted(p for p in path.iterdir() if p.is_dir()):
            if RunFolder(child).metrics_csv.is_file():
                children += 1
                child_record = load_run(child, notes)
                if child_record is not None:
                    found[child_record.path.resolve()] = child_record
            elif child.name not in _KNOWN_NON_RUNS and not child.name.startswith("."):
                notes.append(f"skipped '{child}': not a run folder (no metrics.csv)")
        if not children:
            notes.append(f"skipped '{path}': no run folders in it")
    return sorted(found.values(), key=lambda r: r.name)


def _count_classes(folder: Path) -> int | None:
    """Distinct classes in ``<folder>/train_labels.csv``; None when it cannot be read."""
    try:
        with open(folder / "train_labels.csv", newline="", encoding="utf-8") as handle:
            return len({row["class"] for row in csv.DictReader(handle)}) or None
    except (OSError, UnicodeDecodeError, csv.Error, KeyError):
        return None
