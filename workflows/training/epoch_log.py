"""One INFO line per finished epoch, in the console and the log file, with progress bars or
without (``--no-progress``, nohup, SLURM, a redirected output)::

    epoch 3/129  train_loss 1.234  train_acc 55.1%  valid_loss 1.456  valid_acc 48.2%  lr 1.0e-03  12.3 s  best

``best`` marks an epoch whose valid_loss is the lowest so far (it becomes ``best.ckpt``)."""

from __future__ import annotations

import logging
import time

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, ModelCheckpoint

from models.net_module import NetModule

log = logging.getLogger(__name__)


class EpochLog(Callback):
    """Logs each epoch's metrics once validation has computed them (``write``: in the first
    process of the run only, see ``workflows.runs.launch``)."""

    def __init__(self, write: bool = True) -> None:
        self.write = write
        self._started = time.monotonic()
        self._best: float | None = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: NetModule) -> None:
        self._started = time.monotonic()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: NetModule) -> None:
        if trainer.sanity_checking or not pl_module.epoch_metrics or not self.write:
            return
        metrics = pl_module.epoch_metrics
        valid_loss = metrics.get("valid_loss")
        best = self._best_before(trainer)
        is_best = valid_loss is not None and (best is None or valid_loss < best)
        if is_best:
            self._best = valid_loss
        total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
        log.info(
            "%s%s",
            epoch_line(metrics, total, time.monotonic() - self._started),
            "  best" if is_best else "",
        )

    def _best_before(self, trainer: pl.Trainer) -> float | None:
        """The lowest valid_loss of the epochs before this one: the best checkpoint's score
        (it carries over a resume; checkpoint callbacks run after this one), else our own."""
        scores = [
            float(c.best_model_score)
            for c in trainer.callbacks
            if isinstance(c, ModelCheckpoint)
            and c.monitor == "valid_loss"
            and c.best_model_score is not None
        ]
        known = scores + ([self._best] if self._best is not None else [])
        return min(known) if known else None


def epoch_line(metrics: dict[str, float], total: int | str, seconds: float) -> str:
    """``epoch 3/129  train_loss 1.234  train_acc 55.1%  ...  12.3 s``; a missing value is -."""

    def number(key: str, text: str) -> str:
        value = metrics.get(key)
        return "-" if value is None else text.format(value)

    return "  ".join(
        (
            f"epoch {int(metrics['epoch']) + 1}/{total}",
            f"train_loss {number('train_loss', '{:.3f}')}",
            f"train_acc {number('train_acc', '{:.1%}')}",
            f"valid_loss {number('valid_loss', '{:.3f}')}",
            f"valid_acc {number('valid_acc', '{:.1%}')}",
            f"lr {number('lr', '{:.1e}')}",
            f"{seconds:.1f} s",
        )
    )
