"""What watches a training run: the best and last checkpoints, early stopping, the progress
bar; and the Trainer that runs them (``metrics.csv`` is written by ``workflows.runs.metrics``,
the line per epoch by ``workflows.training.epoch_log``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, EarlyStopping, ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.callbacks.early_stopping import EarlyStoppingReason
from pytorch_lightning.loggers import Logger
from pytorch_lightning.utilities.exceptions import MisconfigurationException

from utils.errors import UserError


# ---- the progress bar counts epochs as people do -----------------------------------
class EpochProgressBar(TQDMProgressBar):
    """Lightning's bar, reading ``Epoch 3/3`` in the last of 3 epochs (Lightning's own reads
    ``Epoch 2``: the 0-based index that metrics.csv keeps)."""

    def on_train_epoch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
        self.train_progress_bar.set_description(f"Epoch {trainer.current_epoch + 1}/{total}")


def on_terminal() -> bool:
    """Whether the bars' stream is a terminal: redirected to a file or a pipe (nohup, SLURM,
    ``> log``) every redraw would be a line of its own."""
    stream = sys.stderr
    return bool(getattr(stream, "isatty", None) and stream.isatty())


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


# ---- early stopping, and resuming a run it stopped ---------------------------------
EARLY_STOPPING_MONITOR = {"monitor": "valid_loss", "mode": "min"}
# Where a checkpoint keeps the early-stopping state (Lightning's key for its EarlyStopping).
EARLY_STOPPING_STATE_KEY = f"EarlyStopping{EARLY_STOPPING_MONITOR!r}"


class ConfiguredEarlyStopping(EarlyStopping):
    """Lightning's early stopping, but a resumed run keeps the configured patience (Lightning's
    takes the checkpoint's) and counts only a stop of its own; it decides at the end of
    validation, before the epoch's checkpoints are written, so they record a stop."""

    def __init__(self, patience: int) -> None:
        super().__init__(
            **EARLY_STOPPING_MONITOR,
            min_delta=0.0,
            patience=patience,
            check_on_train_epoch_end=False,
        )

    @property
    def state_key(self) -> str:
        return EARLY_STOPPING_STATE_KEY  # checkpoints of plain EarlyStopping load as well

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        patience = self.patience
        super().load_state_dict(state_dict)
        self.patience = patience
        self.stopped_epoch = 0
        self.stopping_reason = EarlyStoppingReason.NOT_STOPPED
        self.stopping_reason_message = None


def make_trainer(
    *,
    max_epochs: int | None,
    accelerator: str,
    devices: Any,
    callbacks: list[Callback],
    progress_bar: bool,
    root_dir: Path | None = None,
    loggers: list[Logger] | None = None,
    plugins: list[Any] | None = None,
    precision: str = "32-true",
    num_nodes: int = 1,
    strategy: str = "auto",
) -> pl.Trainer:
    """A Trainer with the given experiment trackers (none by default: the run folder keeps
    every figure) and progress bars when asked for and the output is a terminal; an accelerator
    or device setting this machine cannot honour is a ``UserError``."""
    progress_bar = progress_bar and on_terminal()
    try:
        return pl.Trainer(
            max_epochs=max_epochs,
            accelerator=accelerator,
            devices=devices,
            num_nodes=num_nodes,
            strategy=strategy,
            callbacks=[*callbacks, EpochProgressBar()] if progress_bar else callbacks,
            logger=loggers or False,
            enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
            num_sanity_val_steps=0,
            enable_progress_bar=progress_bar,
            enable_model_summary=False,
            default_root_dir=root_dir,
            plugins=plugins,
            precision=precision,
        )
    except (MisconfigurationException, ValueError, RuntimeError, TypeError) as err:
        raise UserError(
            f"accelerator '{accelerator}' with devices {devices!r}, num_nodes {num_nodes}, "
            f"strategy '{strategy}' and precision '{precision}' cannot be used here ({err}). Set "
            "accelerator: auto (a GPU when there is one, else the CPU), devices: auto, "
            "num_nodes: 1, strategy: auto and precision: 32-true, or name devices this machine "
            "has; under torchrun or SLURM, devices x num_nodes must equal the processes started."
        ) from None
