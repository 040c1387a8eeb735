"""What every experiment tracker shares: a Lightning logger whose every call to the tracker's
service runs guarded, so that a tracker that fails or does not answer in time warns once,
naming the fix, and is off for the rest of the run; trackers never stop or stall training."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from pytorch_lightning.loggers import Logger

from utils.errors import first_line
from utils.text import without_credentials
from workflows.runs.run_folder import RunFolder

log = logging.getLogger(__name__)

# How long one tracker call may take before the tracker is given up; a new SQLite store builds
# its tables on the first call, hence the longer start.
CALL_TIMEOUT_S = 10.0
START_TIMEOUT_S = 60.0
END_TIMEOUT_S = 20.0


class Tracker(Logger):
    """One tracker inside a run. Lightning hands it each epoch's logged values (the epoch is
    the step); the training workflow calls ``finish`` with the run's summary. Every call runs
    guarded: an error or no answer within the time limit warns once and turns the tracker off.
    Only the run's first process builds trackers (``workflows.training.assembly``), so no call
    here needs a rank guard."""

    label = "tracker"
    fix = ""

    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.active = True
        self.closed = False
        self._secrets = tuple(s for s in secrets if s)
        self._status = "FINISHED"
        self.resume_at: int | None = None  # resume: the first epoch this process trains

    # ---- what subclasses implement ---------------------------------------------------------
    def _begin(self, run: RunFolder, params: dict[str, Any], tags: list[str], description: str):
        raise NotImplementedError

    def _log(self, values: dict[str, float], epoch: int) -> None:
        raise NotImplementedError

    def _end(self, run: RunFolder, summary: dict[str, Any]) -> None:
        """Send the summary (and files); the default sends nothing more."""

    def _close(self, status: str) -> None:
        raise NotImplementedError

    # ---- Lightning's Logger ----------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.label

    @property
    def version(self) -> None:
        return None  # nothing to add to the progress bar

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Lightning's own hyperparameters are not sent: ``begin`` sent the thesis's."""

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        # Lightning hands over float32 values: 1e-05 arrives as 9.99999974737875e-06. Seven
        # significant digits are all float32 holds, and read as the number that was meant.
        values = {k: float(f"{float(v):.7g}") for k, v in metrics.items() if k != "epoch"}
        epoch = int(metrics.get("epoch", step or 0))
        if values:
            self.call("logging the metrics", lambda: self._log(values, epoch))

    def finalize(self, status: str) -> None:
        # The run's end comes later, in ``finish``, with the summary; only remember how it ended.
        if status != "success":
            self._status = "FAILED"

    # ---- the run's start and end -----------------------------------------------------------
    def begin(
        self,
        run: RunFolder,
        params: dict[str, Any],
        tags: list[str],
        description: str,
        resume_at: int | None = None,
    ):
        """Open the tracker's run; with ``resume_at`` (the first epoch trained now) go on in
        the run this run folder logged to before (``workflows.tracking.continuation``)."""
        self.resume_at = resume_at
        self.call("starting", lambda: self._begin(run, params, tags, description), START_TIMEOUT_S)
        return self

    def finish(self, run: RunFolder | None, summary: dict[str, Any] | None, status: str) -> None:
        """Send the summary (when there is one) and close the tracker's run."""
        if self.closed:
            return
        self.closed = True
        if run is not None and summary is not None:
            self.call("sending the summary", lambda: self._end(run, summary), END_TIMEOUT_S)
        final = status if status != "FINISHED" else self._status
        self.call("closing", lambda: self._close(final), END_TIMEOUT_S)

    def call(self, what: str, fn: Callable[[], Any], timeout: float | None = None) -> bool:
        """Run ``fn`` on a helper thread, waiting at most ``timeout`` seconds (default
        ``CALL_TIMEOUT_S``); any failure turns this tracker off with one warning."""
        if not self.active:
            return False
        timeout = CALL_TIMEOUT_S if timeout is None else timeout
        outcome: dict[str, BaseException] = {}

        def target() -> None:
            try:
                fn()
            except BaseException as err:  # any failure of a tracker is only a warning
                outcome["error"] = err

        thread = threading.Thread(target=target, name=f"{self.label} tracker", daemon=True)
        thread.start()
        thread.join(timeout)
        if thread.is_alive():
            reason = f"no answer within {timeout:.0f} s"
        elif "error" in outcome:
            err = outcome["error"]
            reason = f"{type(err).__name__}: {first_line(err)}"
        else:
            return True
        self.active = False
        log.warning(
            "%s tracker: %s failed (%s); training goes on without it. %s",
            self.label,
            what,
            self._redact(reason[:300]),
            self.fix,
        )
        return False

    def _redact(self, text: str) -> str:
        text = without_credentials(text)  # a URL's password, e.g. in the server's address
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text
