"""Ctrl-C and SIGTERM during a sweep: the sweep stops, the trial it was on is marked failed in
the study (never left RUNNING), and the same command later trains that combination again."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from workflows.training.interruptions import CaughtSignals, StopBySignal


class SweepStopped(StopBySignal, KeyboardInterrupt):
    """A signal stopped the sweep (exit code 130 for Ctrl-C, 143 for SIGTERM, as for one run).
    A KeyboardInterrupt, because Optuna marks the trial it interrupts as failed and then lets a
    KeyboardInterrupt through (any other BaseException would leave the trial RUNNING in the
    study)."""


class SweepSignals(CaughtSignals):
    """While its ``with`` block runs, SIGINT and SIGTERM are this sweep's. Inside
    ``interruptible()`` (a trial's own code, a wait) a signal raises ``SweepStopped`` at once;
    elsewhere (Optuna writing a trial's state to the database) it is held until ``check()``,
    so a stop never cuts a database update short. A run's own handler (training) replaces this
    one while it trains and gives it back after."""

    def __init__(self) -> None:
        super().__init__()
        self.received: int | None = None
        self._at_once = False

    def on_signal(self, signum: int) -> None:
        if self.received is None:
            self.received = signum
        if self._at_once:
            self._at_once = False  # one raise; a second signal waits for check()
            raise SweepStopped(signum)

    def check(self) -> None:
        """Raise the signal held back, if one came."""
        if self.received is not None:
            raise SweepStopped(self.received)

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        self.check()
        self._at_once = True
        try:
            yield
        finally:
            self._at_once = False

    def sleep(self, seconds: float) -> None:
        with self.interruptible():
            time.sleep(seconds)
