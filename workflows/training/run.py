"""One training run from a validated ``Config``: assemble it (``workflows.training.assembly``),
then fit it; its start and every ending pass through ``workflows.training.lifecycle`` (see
``workflows.runs.run_folder`` for what the run folder holds)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.utilities.exceptions import SIGTERMException

from configuration import Config
from utils.errors import UserError
from workflows.runs.run_folder import RunFolder
from workflows.training.assembly import Assembly, assemble, build_datamodule
from workflows.training.interruptions import RunInterrupted, SignalStop
from workflows.training.resume import ResumePoint

__all__ = ["RunResult", "build_datamodule", "fit", "run_training"]


@dataclass
class RunResult:
    """Where a finished run's files are, and its summary."""

    run: RunFolder
    summary: dict[str, Any]
    is_main: bool = True  # False in the other processes of a multi-GPU (DDP) run
    stopped_by: RunInterrupted | None = None  # the signal that stopped the run, if one did

    @property
    def run_dir(self) -> Path:
        return self.run.path

    @property
    def best_checkpoint(self) -> Path:
        return self.run.best_checkpoint

    @property
    def last_checkpoint(self) -> Path:
        return self.run.last_checkpoint

    @property
    def metrics_csv(self) -> Path:
        return self.run.metrics_csv


def run_training(
    config: Config,
    progress_bar: bool = True,
    resume: ResumePoint | None = None,
    callbacks: list[pl.Callback] | None = None,  # e.g. a sweep's pruning
) -> RunResult:
    """Train the configured network, or continue the run of ``resume`` from its checkpoint;
    returns the run folder and its summary (``stopped_by`` set when a signal stopped it)."""
    # A signal from here on stops the run; before its first epoch, it leaves no run folder.
    with SignalStop() as signals:
        try:
            assembly = assemble(config, signals, progress_bar, resume, callbacks)
        except RunInterrupted as stop:
            raise stop.before_first_epoch() from None
        return fit(assembly)


def fit(assembly: Assembly) -> RunResult:
    """Train an assembled run to its end; a failure a setting explains is a ``UserError``."""
    ending = assembly.lifecycle
    try:
        assembly.trainer.fit(
            assembly.module,
            datamodule=assembly.data,
            ckpt_path=assembly.checkpoint,
            weights_only=True,
        )
    except (RunInterrupted, SIGTERMException):
        pass  # the lifecycle ended the run as interrupted
    except BaseException:
        if ending.failure is None:
            raise  # a bug keeps its traceback; a UserError says what to do already
        raise UserError(ending.failure) from None
    finally:
        assembly.release()
    if ending.stopped_by is not None and not assembly.run.path.is_dir():
        raise ending.stopped_by.before_first_epoch()
    return RunResult(
        run=assembly.run,
        summary=ending.summary,
        is_main=assembly.launch.first,
        stopped_by=ending.stopped_by,
    )
