"""Ctrl-C and SIGTERM during a sweep: the sweep stops, the trial it was on is marked failed in
the study (never left RUNNING), and the same command later trains that combination again."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from workflows.training.interruptions import give_back_signals, signal_name, take_signals


class SweepStopped(KeyboardInterrupt):
    """A signal stopped the sweep. A KeyboardInterrupt, because Optuna marks the trial it
    interrupts as failed and then lets a KeyboardInterrupt through (any other BaseException
    would leave the trial RUNNING in the study)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = int(signum)

    @property
    def signal_name(self) -> str:
        return signal_name(self.signum)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # 130 for Ctrl-C, 143 for SIGTERM, as for one run


class SweepSignals:
    """While its ``with`` block runs, SIGINT and SIGTERM are this sweep's. Inside
    ``interruptible()`` (a trial's own code, a wait) a signal raises ``SweepStopped`` at once;
    elsewhere (Optuna writing a trial's state to the database) it is held until ``check()``,
    so a stop never cuts a database update short. A run's own handler (training) replaces this
    one while it trains and gives it back after."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._at_once = False
        self._owner = os.getpid()
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> SweepSignals:
        self._owner = os.getpid()
        self._previous = take_signals(self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        give_back_signals(self._previous)
        self._previous = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if os.getpid() != self._owner:  # a forked DataLoader worker: end quietly
            raise KeyboardInterrupt
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
