"""What can stop a run after its start-up checks, and how each ends: a signal (Ctrl-C,
SIGTERM) stops at once and keeps the finished epochs; a non-finite loss, a full disk or a setting
that fails only at a later epoch ends in one message naming the key and the epoch, never a
traceback. Also the random-number state that makes a resumed run continue as if never stopped."""

from __future__ import annotations

import errno
import os
import random
import signal
import threading
import traceback
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from utils.errors import UserError
from utils.lr_lambda import LambdaSyntaxError

_SIGNAL_NAMES = {signal.SIGINT: "Ctrl-C (SIGINT)", signal.SIGTERM: "SIGTERM"}
_FULL_DISK = (errno.ENOSPC, errno.EDQUOT)


class RunInterrupted(BaseException):
    """Raised in the main thread when the run gets SIGINT or SIGTERM. Not a KeyboardInterrupt,
    which Lightning answers with ``sys.exit(1)`` before the run folder is brought up to date."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = int(signum)

    @property
    def signal_name(self) -> str:
        return _SIGNAL_NAMES.get(self.signum, f"signal {self.signum}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for Ctrl-C, 143 for SIGTERM


def as_interruption(err: BaseException) -> RunInterrupted:
    """Ours, or Lightning's SIGTERMException (raised when SIGTERM came while the epoch's files
    were being written, after them)."""
    return err if isinstance(err, RunInterrupted) else RunInterrupted(signal.SIGTERM)


class StoppedEarly(UserError):
    """A signal stopped the run before anything worth keeping was written."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def resume_hint(run_path: Any, signal_name: str, epochs: int) -> str:
    """What train.py prints when a signal stopped a run that kept its finished epochs."""
    return (
        f"stopped by {signal_name} after {epochs} finished epoch(s); the run folder keeps them "
        f"and summary.json says interrupted. Continue with:\n  python train.py --resume {run_path}"
    )


class SignalStop(Callback):
    """While its ``with`` block runs, SIGINT and SIGTERM raise ``RunInterrupted`` in this process,
    once (a second Ctrl-C does not cut short the writing of the summary). As a callback (put it
    first) it holds a signal back while an epoch's metrics and checkpoints are being written, so
    that a stop never leaves an epoch in metrics.csv without its checkpoint. Forked DataLoader
    workers inherit the handler; in them it raises KeyboardInterrupt, on which PyTorch's worker
    loop ends quietly."""

    def __init__(self) -> None:
        self._owner = os.getpid()
        self._received: int | None = None
        self._holding = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> SignalStop:
        if threading.current_thread() is threading.main_thread():
            self._owner = os.getpid()
            self._previous = {signum: signal.getsignal(signum) for signum in _SIGNAL_NAMES}
            for signum in _SIGNAL_NAMES:
                signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, old in self._previous.items():
            signal.signal(signum, old if old is not None else signal.SIG_DFL)
        self._previous = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if os.getpid() != self._owner:
            raise KeyboardInterrupt
        if self._received is not None:
            return
        self._received = signum
        if not self._holding:
            raise RunInterrupted(signum)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self._holding = True  # the epoch's metrics.csv row and checkpoints come next

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning saves checkpoints in the monitoring callbacks of on_train_epoch_end, after
        # every other hook of that epoch: the next epoch's start is the first moment after them.
        self._holding = False
        self.raise_held()

    def raise_held(self) -> None:
        """Raise the signal held back while the last epoch's files were being written."""
        self._holding = False
        if self._received is not None:
            raise RunInterrupted(self._received)


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


class RandomState(Callback):
    """Keeps Python's, NumPy's and torch's random-number state in every checkpoint and restores
    it on resume: the shuffling and the augmentations of the epochs after a resume are those of
    a run that was never stopped. Stored as plain numbers and tensors (``weights_only`` loads)."""

    def state_dict(self) -> dict[str, Any]:
        version, internal, gauss = random.getstate()
        name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
        state = {
            "python": [version, list(internal), gauss],
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            cuda_states = state["cuda"]
            if len(cuda_states) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(cuda_states)


def failure_message(err: BaseException, epoch: int) -> str | None:
    """What went wrong and how to fix it, for a failure during training that a setting or the
    machine explains; None for anything else (a bug, which keeps its traceback)."""
    detail = _first_line(err)
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
    frames = _frame_files(err)
    if isinstance(err, LambdaSyntaxError) or "utils/lr_lambda.py" in frames:
        return (
            f"key 'lr_scheduler_params.lr_lambda' fails after epoch {epoch} ({detail}). Make the "
            "expression finite and >= 0 for every epoch up to num_epochs (e.g. "
            "'lambda epoch: 0.955**epoch')"
        )
    if "torch/optim/lr_scheduler.py" in frames:
        return (
            f"the scheduler (key 'lr_scheduler' with 'lr_scheduler_params') fails after epoch "
            f"{epoch} ({detail}). Give it parameters that cover the whole run: num_epochs epochs "
            "(OneCycleLR: total_steps, or epochs and steps_per_epoch, that count every batch)"
        )
    if "torchvision/transforms" in frames or "datasets/transforms.py" in frames:
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


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    if "Original Traceback" in text:  # raised in a DataLoader worker: keep the worker's last line
        text = [line for line in text.splitlines() if line.strip()][-1]
    line = (text.splitlines() or [""])[0]
    return f"{type(err).__name__}: {line[:200]}"


def _frame_files(err: BaseException) -> str:
    """Every source file in the traceback, and the worker's traceback text when a DataLoader
    worker raised it, as one string to search."""
    files = [
        frame.filename.replace(os.sep, "/") for frame in traceback.extract_tb(err.__traceback__)
    ]
    text = str(err) if "Original Traceback" in str(err) else ""
    return "\n".join(files) + "\n" + text.replace(os.sep, "/")
