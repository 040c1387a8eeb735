"""A run's start and its end, as one Lightning callback: every ending - finished, early-stopped,
interrupted by a signal, failed - passes through ``LifeCycle._end``, which writes
``summary.json`` (``run_summary``), closes the trackers and removes a new run folder in which
no epoch finished."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, EarlyStopping
from pytorch_lightning.utilities.exceptions import SIGTERMException

from configuration import Config
from workflows.runs.launch import Launch
from workflows.runs.metrics import MetricsCSV
from workflows.runs.run_folder import RunFolder
from workflows.tracking.base import Tracker
from workflows.tracking.trackers import finish_trackers, start_trackers
from workflows.training.failures import BatchLoading, failure_message
from workflows.training.interruptions import RunInterrupted, as_interruption

log = logging.getLogger(__name__)


class LifeCycle(Callback):
    """Starts the run when training starts (after a resumed checkpoint is restored, so that a
    resume that cannot start leaves the run folder as it was): writes ``config.yml``, opens
    the trackers. Ends it once, however it ends. ``facts``: what the summary says of the
    run besides its epochs (architecture, num_params, runtime, seed, origin, ...)."""

    def __init__(
        self,
        config: Config,
        launch: Launch,
        run: RunFolder,
        created: bool,
        metrics: MetricsCSV,
        trackers: list[Tracker],
        facts: dict[str, Any],
        previous: dict[str, Any] | None = None,  # a resumed run's summary.json
        resume_at: int | None = None,
        started: float | None = None,  # when this process began the run (time.time())
    ) -> None:
        self.config, self.launch, self.run, self.created = config, launch, run, created
        self.metrics, self.trackers, self.facts = metrics, trackers, facts
        self.previous, self.resume_at = previous or {}, resume_at
        self.loading = BatchLoading()  # in the trainer's callbacks too
        self.started = time.time() if started is None else started
        self.training = False
        self.summary: dict[str, Any] | None = None
        self.stopped_by: RunInterrupted | None = None
        self.failure: str | None = None  # the message a failure a setting explains ends in

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.training = True
        if not self.launch.first:
            return
        self.run.write_config(self.config.to_public_dict())
        if self.resume_at is not None:
            log.info("resuming %s at epoch %d", self.run.name, self.resume_at)
        start_trackers(
            self.trackers,
            self.config,
            self.run,
            self.facts["num_params"],
            self.facts["runtime"],
            resume_at=self.resume_at,  # resume: the same tracker runs
        )

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        stopper = next((c for c in trainer.callbacks if isinstance(c, EarlyStopping)), None)
        self._end(early_stopped=stopper is not None and stopper.stopped_epoch > 0)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, err: BaseException
    ) -> None:
        if isinstance(err, (RunInterrupted, SIGTERMException)):
            self.stopped_by = as_interruption(err)
            self._end()
            return
        kept = self.metrics.rows or not self.created
        explained = failure_message(
            err,
            trainer.current_epoch,
            self.config,
            trainer.strategy.root_device.type,
            self.loading.loading,
            (self.run.path, len(self.metrics.rows)) if kept else None,
        )
        problem, self.failure = explained or (f"{type(err).__name__}: {err}", None)
        self._end(failed=problem)

    def _end(self, early_stopped: bool = False, failed: str | None = None) -> None:
        if self.summary is not None:
            return  # ended already
        rows = self.metrics.rows
        self.summary = run_summary(
            self.run,
            rows,
            self.facts,
            early_stopped=early_stopped,
            interrupted=self.stopped_by is not None,
            failed=failed,
            segments=self._segments(rows),
        )
        if not self.launch.first:
            return
        if self.created and not rows:  # not one epoch finished: nothing worth keeping
            self.run.remove()
        kept = self.run.path.is_dir() and self.training
        if kept:
            self.run.write_summary(self.summary)
        status = "FAILED" if failed else "KILLED" if self.stopped_by else "FINISHED"
        if self.training:  # the trackers start with the training
            finish_trackers(self.trackers, self.run if kept else None, self.summary, status)
        if status == "FINISHED":
            _log_finish(self.run, self.summary)

    def _segments(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The processes that trained the run: the resumed run's earlier ones, then this."""
        before = self.previous.get("segments")
        if not isinstance(before, list):  # a summary from before segments were recorded
            before = []
            if isinstance(self.previous.get("duration_s"), (int, float)):
                epochs = self.previous.get("epochs_run")
                before = [
                    {"first_epoch": 0, "epochs": epochs, "duration_s": self.previous["duration_s"]}
                ]
        first = self.resume_at or 0
        now = {
            "first_epoch": first,
            "epochs": max(0, len(rows) - first),
            "duration_s": round(time.time() - self.started, 1),
        }
        return [*before, now]


def run_summary(
    run: RunFolder,
    rows: list[dict[str, Any]],
    facts: dict[str, Any],
    early_stopped: bool,
    interrupted: bool,
    failed: str | None,
    segments: list[dict[str, Any]],
) -> dict[str, Any]:
    """``summary.json``: the figures the thesis's dashboard showed per run, from the epoch
    rows; ``facts`` (architecture, num_params, runtime, seed, origin, tags, description); how
    it ended; and the processes that trained it (``segments``), whose times add up to
    ``duration_s``."""

    def pick(key: str, fn):
        values = [r[key] for r in rows if r.get(key) not in ("", None)]
        return fn(values) if values else None

    best = min(
        (r for r in rows if r.get("valid_loss") not in ("", None)),
        key=lambda r: r["valid_loss"],
        default=None,
    )
    facts = dict(facts)
    tail = {k: facts.pop(k) for k in ("seed", "origin", "tags", "description")}
    return {
        "run_name": run.name,
        **facts,  # architecture, num_params, runtime
        "epochs_run": len(rows),
        "early_stopped": bool(early_stopped),
        "interrupted": bool(interrupted),
        "best_epoch": best["epoch"] if best else None,
        "min_train_loss": pick("train_loss", min),
        "min_valid_loss": pick("valid_loss", min),
        "max_train_acc": pick("train_acc", max),
        "max_valid_acc": pick("valid_acc", max),
        "best_checkpoint": str(run.best_checkpoint),
        "duration_s": round(sum(s["duration_s"] for s in segments), 1),
        "segments": segments,
        "seed": tail["seed"],
        **tail["origin"],
        "tags": tail["tags"],
        "description": tail["description"],
        "failed": failed,
    }


def _log_finish(run: RunFolder, summary: dict[str, Any]) -> None:
    log.info(
        "run %s finished after %d epoch(s): best valid_loss %.4f at epoch %s, max valid_acc %.4f; "
        "files in %s",
        run.name,
        summary["epochs_run"],
        _or_nan(summary["min_valid_loss"]),
        summary["best_epoch"],
        _or_nan(summary["max_valid_acc"]),
        run.path,
    )


def _or_nan(value: float | None) -> float:
    """``value``, NaN when there is none (0.0 is a value: ``or`` would hide it)."""
    return float("nan") if value is None else value
