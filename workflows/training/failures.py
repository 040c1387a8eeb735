"""Failures after the start-up checks, each recognised by its exception type or by the stage it
was raised in, never by where its code lives: a non-finite loss, a full disk, the scheduler
(``ScheduleFailed``, raised where the module steps it), an augmentation (a failure while the
loop loads a training batch, ``BatchLoading``), running out of memory. Each becomes one message
naming the setting and the epoch; anything else is a bug and keeps its traceback."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from configuration import Config
from models.optimization import ScheduleFailed
from utils.errors import UserError, first_line

_FULL_DISK = (errno.ENOSPC, errno.EDQUOT)


class NonFiniteLoss(Exception):
    """The training loss of a batch was NaN or infinite."""

    def __init__(self, epoch: int, batch: int, value: float) -> None:
        super().__init__(f"training loss {value} at epoch {epoch}, batch {batch}")
        self.epoch, self.batch, self.value = epoch, batch, value


class FiniteLossGuard(Callback):
    """Stops the run at the first non-finite training loss, before the epoch's checkpoints are
    written, so that best.ckpt and last.ckpt keep the last good weights.

    Reading the loss back every step would make the CPU wait for the GPU, so the device keeps
    the first bad batch's index and loss, and they are read every ``CHECK_EVERY`` batches and
    at the epoch's last batch (before validation and the checkpoints)."""

    CHECK_EVERY = 50

    def __init__(self) -> None:
        self._first_bad: torch.Tensor | None = None  # [batch index, loss]; index -1: none yet

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._first_bad = None

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        loss = loss.detach().float().mean()
        if self._first_bad is None:
            self._first_bad = torch.full((2,), -1.0, device=loss.device)
        # torch.full passes the index to the kernel: no copy from the host, no waiting.
        record = torch.stack([torch.full((), float(idx), device=loss.device), loss])
        first = ~torch.isfinite(loss) & (self._first_bad[0] < 0)
        self._first_bad = torch.where(first, record, self._first_bad)
        last = idx + 1 >= trainer.num_training_batches
        if last or (idx + 1) % self.CHECK_EVERY == 0:
            bad_index, value = self._first_bad.tolist()
            if bad_index >= 0:
                raise NonFiniteLoss(trainer.current_epoch, int(bad_index), value)


class BatchLoading(Callback):
    """Knows whether the training loop is loading (reading, transforming, augmenting) a
    training batch: from an epoch's start, and after each batch, until the next batch starts;
    Lightning fetches (and moves to the device) each batch in that stretch."""

    def __init__(self) -> None:
        self.loading = False

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.loading = True

    def on_train_batch_start(self, *args: Any) -> None:
        self.loading = False

    def on_train_batch_end(self, *args: Any) -> None:
        self.loading = True

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.loading = False


def failure_message(
    err: BaseException,
    epoch: int,
    config: Config,
    device: str,
    loading_batch: bool,
    kept: tuple[Path, int] | None,
) -> tuple[str, str] | None:
    """For a failure during training that a setting or the machine explains: what went wrong
    (for summary.json) and the whole message, with what was kept (``kept``: the run folder and
    its finished epochs; None when nothing was) and how to go on. None for anything else (a
    bug, which keeps its traceback)."""
    if isinstance(err, UserError):
        return None  # says what to do already
    if isinstance(err, torch.OutOfMemoryError):  # a resume would run out of memory again
        problem = (
            f"the {device.upper()} ran out of memory with batch_size {config.batch_size} and "
            f"image_size {config.image_size}. Lower batch_size (e.g. --set "
            f"batch_size={max(1, config.batch_size // 2)}) or image_size."
        )
        return problem, problem
    problem = _problem(err, epoch, config, loading_batch)
    if problem is None:
        return None
    if kept is None:
        return problem, problem + "; no epoch had finished, so no run folder was kept."
    run_path, epochs = kept
    return problem, (
        f"{problem}, then continue the run: the {epochs} finished epoch(s) and their checkpoints "
        f"are kept in '{run_path}' (python train.py --resume {run_path})."
    )


def _problem(err: BaseException, epoch: int, config: Config, loading_batch: bool) -> str | None:
    detail = f"{type(err).__name__}: {first_line(err)[:200]}"
    if isinstance(err, NonFiniteLoss):
        return (
            f"the training loss became {err.value} (not a finite number) at epoch {err.epoch}, "
            f"batch {err.batch}, so training stopped. Usual causes: a learning rate "
            "too high (optimizer_params.lr, or a scheduler that raises it), too much "
            "optimizer_params.weight_decay, or normalization params that do not fit the images "
            "(normalization_params_rgb / _grayscale; normalization_coeffs.py "
            "computes them). Lower the learning rate"
        )
    if isinstance(err, OSError) and err.errno in _FULL_DISK:
        return (
            f"the disk is full: writing the run's files failed in epoch {epoch} ({detail}); the "
            "files written before are intact. Free some space"
        )
    if isinstance(err, ScheduleFailed):
        detail = str(err)
        if "lr_lambda" in (config.lr_scheduler_params or {}):
            return (
                f"key 'lr_scheduler_params.lr_lambda' fails after epoch {err.epoch} ({detail}). "
                "Make the expression finite and >= 0 for every epoch up to num_epochs (e.g. "
                "'lambda epoch: 0.955**epoch')"
            )
        return (
            f"the scheduler (key 'lr_scheduler' with 'lr_scheduler_params') fails after epoch "
            f"{err.epoch} ({detail}). Give it parameters that cover the whole run: num_epochs "
            "epochs (OneCycleLR: total_steps, or epochs and steps_per_epoch, that count every "
            "batch)"
        )
    if loading_batch and (config.augment_images or config.augment_tensors):
        return (
            f"an augmentation failed on an image in epoch {epoch} ({detail}). Check the "
            "parameters in image_augmentations / tensor_augmentations (a random transform can "
            "fail only now and then)"
        )
    if "Expected more than 1 value per channel" in str(err):
        return (
            f"a batch of one image reached a BatchNorm layer in epoch {epoch}. Use a batch_size "
            "of 2 or more"
        )
    return None
