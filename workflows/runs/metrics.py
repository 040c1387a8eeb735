"""A run's per-epoch ``metrics.csv``: its columns, the callback that rewrites it after every
epoch, and the reader every other part uses."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from models.net_module import NetModule
from utils.files import write_text_atomic

METRIC_COLUMNS = ("epoch", "train_loss", "train_acc", "valid_loss", "valid_acc", "lr")


class MetricsCSV(Callback):
    """Rewrites ``metrics.csv`` atomically after every epoch's validation (``write``: in the
    first process of the run only, see ``workflows.runs.launch``)."""

    def __init__(self, path: Path, resume_at: int | None = None, write: bool = True) -> None:
        self.path = path
        self.write = write
        self.rows: list[dict[str, Any]] = []
        # ---- resume: the rows of the epochs before ``resume_at`` carry over, later ones
        # (written after the checkpoint being resumed) are dropped
        if resume_at is not None:
            self.rows = [r for r in read_metric_rows(path) if r["epoch"] < resume_at]

    def on_validation_end(self, trainer: pl.Trainer, pl_module: NetModule) -> None:
        if trainer.sanity_checking or not pl_module.epoch_metrics or not self.write:
            return
        row = {key: pl_module.epoch_metrics.get(key, "") for key in METRIC_COLUMNS}
        self.rows = [r for r in self.rows if r["epoch"] != row["epoch"]] + [row]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=METRIC_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        write_text_atomic(self.path, buffer.getvalue())


def read_metric_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of an existing ``metrics.csv``, numbers as numbers; [] when there is none."""
    if not path.is_file():
        return []
    rows = []
    with path.open(newline="", encoding="utf-8") as handle:
        for raw in csv.DictReader(handle):
            try:
                row: dict[str, Any] = {"epoch": int(raw["epoch"])}
                for key in METRIC_COLUMNS[1:]:
                    value = raw.get(key) or ""
                    row[key] = float(value) if value != "" else ""
            except (KeyError, TypeError, ValueError):
                continue  # a row that is not ours: the resumed run rewrites the file without it
            rows.append(row)
    return rows
