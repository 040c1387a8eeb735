"""What watches a training run: the per-epoch ``metrics.csv``, the best and last checkpoints,
early stopping; and the Trainer that runs them."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, EarlyStopping, ModelCheckpoint
from pytorch_lightning.loggers import Logger
from pytorch_lightning.utilities.exceptions import MisconfigurationException

from models.net_module import NetModule
from utils.errors import UserError
from utils.files import write_text_atomic

METRIC_COLUMNS = ("epoch", "train_loss", "train_acc", "valid_loss", "valid_acc", "lr")


class MetricsCSV(Callback):
    """Rewrites ``metrics.csv`` atomically after every epoch's validation."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[dict[str, Any]] = []

    def on_validation_end(self, trainer: pl.Trainer, pl_module: NetModule) -> None:
        if trainer.sanity_checking or not pl_module.epoch_metrics or trainer.global_rank != 0:
            return
        row = {key: pl_module.epoch_metrics.get(key, "") for key in METRIC_COLUMNS}
        self.rows = [r for r in self.rows if r["epoch"] != row["epoch"]] + [row]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=METRIC_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        write_text_atomic(self.path, buffer.getvalue())


def checkpoint_callbacks(checkpoints: Path) -> list[ModelCheckpoint]:
    """``best.ckpt`` (lowest valid_loss) and ``last.ckpt`` (every epoch) in ``checkpoints``."""
    best = ModelCheckpoint(
        dirpath=checkpoints,
        filename="best",
        monitor="valid_loss",
        mode="min",
        save_top_k=1,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    # Lightning's save_last only follows saves of the best; this one writes every epoch.
    last = ModelCheckpoint(
        dirpath=checkpoints,
        filename="last",
        monitor=None,
        save_top_k=1,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    return [best, last]


def early_stopping(patience: int) -> EarlyStopping:
    return EarlyStopping(monitor="valid_loss", mode="min", min_delta=0.0, patience=patience)


def make_trainer(
    *,
    max_epochs: int | None,
    accelerator: str,
    devices: Any,
    callbacks: list[Callback],
    progress_bar: bool,
    root_dir: Path | None = None,
    loggers: list[Logger] | None = None,
) -> pl.Trainer:
    """A Trainer with the given experiment trackers (none by default: the run folder keeps
    every figure); an accelerator or device setting this machine cannot honour is a
    ``UserError``."""
    try:
        return pl.Trainer(
            max_epochs=max_epochs,
            accelerator=accelerator,
            devices=devices,
            callbacks=callbacks,
            logger=loggers or False,
            enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
            num_sanity_val_steps=0,
            enable_progress_bar=progress_bar,
            enable_model_summary=False,
            default_root_dir=root_dir,
        )
    except (MisconfigurationException, ValueError, RuntimeError, TypeError) as err:
        raise UserError(
            f"accelerator '{accelerator}' with devices {devices!r} cannot be used "
            f"on this machine ({err}). Set accelerator: auto (a GPU when there is one, else the "
            "CPU) and devices: auto, or name devices this machine has."
        ) from None
