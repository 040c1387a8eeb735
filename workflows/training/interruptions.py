"""Signals: Ctrl-C or SIGTERM stops a run at once, from its set-up on (before the run folder
exists), and keeps the finished epochs; a stop before the first epoch finished keeps nothing."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any, TypeVar

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from utils.errors import UserError

_SIGNAL_NAMES = {signal.SIGINT: "Ctrl-C (SIGINT)", signal.SIGTERM: "SIGTERM"}


def signal_name(signum: int) -> str:
    """How a stop signal is named in messages."""
    return _SIGNAL_NAMES.get(signum, f"signal {signum}")


def take_signals(handler: Any) -> dict[int, Any]:
    """Make ``handler`` answer SIGINT and SIGTERM; the handlers it replaced, for
    ``give_back_signals``. Outside the main thread (where Python allows no handler) nothing."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {signum: signal.getsignal(signum) for signum in _SIGNAL_NAMES}
    for signum in _SIGNAL_NAMES:
        signal.signal(signum, handler)
    return previous


def give_back_signals(previous: dict[int, Any]) -> None:
    """Put back the handlers ``take_signals`` replaced."""
    for signum, old in previous.items():
        signal.signal(signum, old if old is not None else signal.SIG_DFL)


_Caught = TypeVar("_Caught", bound="CaughtSignals")


class CaughtSignals:
    """While its ``with`` block runs, SIGINT and SIGTERM go to ``on_signal`` (the handlers it
    replaced are given back after). Forked DataLoader workers inherit the handler; in them a
    signal raises KeyboardInterrupt, on which PyTorch's worker loop ends quietly."""

    def __init__(self) -> None:
        self._owner = os.getpid()
        self._previous: dict[int, Any] = {}

    def __enter__(self: _Caught) -> _Caught:
        self._owner = os.getpid()
        self._previous = take_signals(self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        give_back_signals(self._previous)
        self._previous = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if os.getpid() != self._owner:
            raise KeyboardInterrupt
        self.on_signal(signum)

    def on_signal(self, signum: int) -> None:
        raise NotImplementedError


class StopBySignal:
    """A stop by signal ``signum`` (mixed into an exception): what it is called in messages
    and the exit code it ends in."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = int(signum)

    @property
    def signal_name(self) -> str:
        return signal_name(self.signum)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for Ctrl-C, 143 for SIGTERM


class RunInterrupted(StopBySignal, BaseException):
    """Raised in the main thread when the run gets SIGINT or SIGTERM. Not a KeyboardInterrupt,
    which Lightning answers with ``sys.exit(1)`` before the run folder is brought up to date."""

    def before_first_epoch(self) -> StoppedBeforeFirstEpoch:
        """The error a stop before any epoch finished ends in (no run folder is kept)."""
        return StoppedBeforeFirstEpoch(
            f"stopped by {self.signal_name} before the first epoch finished; no run folder was "
            "kept.",
            exit_code=self.exit_code,
        )


def as_interruption(err: BaseException) -> RunInterrupted:
    """Ours, or Lightning's SIGTERMException (raised when SIGTERM came while the epoch's files
    were being written, after them)."""
    return err if isinstance(err, RunInterrupted) else RunInterrupted(signal.SIGTERM)


class StoppedBeforeFirstEpoch(UserError):
    """A signal stopped the run before its first epoch finished: nothing was kept (not to be
    confused with early stopping, the summary's ``early_stopped``)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def resume_hint(run_path: Any, signal_name: str, epochs: int) -> str:
    """What train.py prints when a signal stopped a run that kept its finished epochs."""
    return (
        f"stopped by {signal_name} after {epochs} finished epoch(s); the run folder keeps them "
        f"and summary.json says interrupted. Continue with:\n  python train.py --resume {run_path}"
    )


class SignalStop(CaughtSignals, Callback):
    """While its ``with`` block runs, SIGINT and SIGTERM raise ``RunInterrupted`` in this process,
    once (a second Ctrl-C does not cut short the writing of the summary); a signal after the
    last epoch's files are written waits for the run's end and is then ignored: the run is
    done. As a callback (put it first) it holds a signal back while an epoch's metrics and
    checkpoints are being written, so that a stop never leaves an epoch in metrics.csv without
    its checkpoint."""

    def __init__(self) -> None:
        super().__init__()
        self._received: int | None = None
        self._holding = False

    def on_signal(self, signum: int) -> None:
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

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # A signal held during the last epoch's writes stops the run here, before the run's
        # end is recorded (as interrupted); one that comes later waits for the end.
        self.raise_held()
        self._holding = True

    def raise_held(self) -> None:
        """Raise the signal held back while the last epoch's files were being written."""
        self._holding = False
        if self._received is not None:
            raise RunInterrupted(self._received)
