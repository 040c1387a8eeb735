"""Runs whose process died before Optuna's heartbeat thread wrote its first beat.

Optuna fails a RUNNING trial whose heartbeat went silent, but it never fails one that has no
heartbeat at all: a process killed between ``study.ask()`` and its first beat would leave a
trial that blocks its combination, and every waiting process, for good. Here a run's first act
is to wait for its first beat and then mark the trial ``STARTED``; a RUNNING trial that a
process keeps seeing without that mark for ``bound_s`` never got going and is failed, so its
combination is queued again.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import optuna

STARTED = "started"  # trial attribute: its process had written a heartbeat for it
_State = optuna.trial.TrialState


class BeatingStorage(optuna.storages.RDBStorage):
    """An RDBStorage that tells this process when it has written a heartbeat."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.beaten = threading.Event()

    def record_heartbeat(self, trial_id: int) -> None:
        super().record_heartbeat(trial_id)
        self.beaten.set()


class Liveness:
    """Marks this process's runs as started and fails other processes' runs that never were."""

    def __init__(self, heartbeat_s: int) -> None:
        self.heartbeat_s = heartbeat_s
        # Measured on this process's own monotonic clock from when it first saw the trial, never
        # against the trial's datetime_start: that is the naive local time of the machine that
        # started it, which on a shared PostgreSQL study may be minutes or time zones away. The
        # mark follows the first beat within milliseconds; twice Optuna's grace period (four
        # heartbeats) leaves room for a slow database. A new process thus waits up to this long
        # before it takes such a run over.
        self.bound_s = 2 * (2 * heartbeat_s)
        self._unmarked_since: dict[int, float] = {}
        self._beaten: threading.Event | None = None

    def storage(self, url: str) -> BeatingStorage:
        storage = BeatingStorage(
            url, heartbeat_interval=self.heartbeat_s, grace_period=2 * self.heartbeat_s
        )
        self._beaten = storage.beaten
        return storage

    def before_run(self) -> None:
        """Call before ``study.optimize``: the next beat is the new trial's."""
        if self._beaten is not None:
            self._beaten.clear()

    def started(self, trial: optuna.trial.Trial) -> None:
        """The run's first act. Marked only once its heartbeat is in the database (the heartbeat
        thread starts before the run, but writes on its own time), so a marked trial always goes
        stale when its process dies. Should the beat not come, it is marked anyway: it is alive
        and must not be failed under it."""
        if self._beaten is not None:
            self._beaten.wait(timeout=self.heartbeat_s)
        trial.set_user_attr(STARTED, True)

    def fail_never_started(self, study: optuna.Study) -> None:
        """Fail the RUNNING trials this process has seen without the mark for ``bound_s``."""
        now = time.monotonic()
        running = study.get_trials(deepcopy=False, states=(_State.RUNNING,))
        # A trial marked or ended since the last look is forgotten.
        self._unmarked_since = {
            t.number: self._unmarked_since.get(t.number, now)
            for t in running
            if STARTED not in t.user_attrs
        }
        for number, since in self._unmarked_since.items():
            if now - since >= self.bound_s:
                # Another process may fail it too: tell skips a trial it finds ended, and the
                # storage refuses one the other process ended between that check and the write.
                with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                    study.tell(number, state=_State.FAIL, skip_if_finished=True)
