"""Logging as in the thesis: ``<logging_dir>/<YYYYmmdd>.log`` plus the console, at ``loglevel``."""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

from utils.errors import UserError

FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(process)d - %(message)s"
_HANDLER_TAG = "_cars_handler"
# A deprecation inside Lightning's own pytree helper, raised by torch 2.14; nothing to fix here.
_PYTREE_DEPRECATION = r".*isinstance\(treespec, LeafSpec\).*"
_LIGHTNING_LOGGERS = (
    "pytorch_lightning",
    "lightning_fabric",
    "lightning.pytorch",
    "lightning.fabric",
)


def setup_logging(logging_dir: str | Path, loglevel: str = "INFO") -> Path:
    """Send log records to the day's log file and the console; returns the file's path.

    Calling it again (a second run in one process) replaces this module's handlers instead of
    stacking duplicates.
    """
    log_dir = Path(logging_dir)
    log_file = log_dir / f"{time.strftime('%Y%m%d')}.log"
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(log_file, encoding="utf-8")
    except OSError as err:
        raise UserError(
            f"key 'logging_dir': cannot write the log file '{log_file}' ({err}). Point "
            "logging_dir at a folder you can write to."
        ) from None
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, _HANDLER_TAG, False)]:
        root.removeHandler(handler)
        handler.close()
    formatter = logging.Formatter(FORMAT)
    for handler in (file_handler, logging.StreamHandler()):
        handler.setFormatter(formatter)
        handler.setLevel(loglevel)
        setattr(handler, _HANDLER_TAG, True)
        root.addHandler(handler)
    root.setLevel(loglevel)
    # Lightning logs through its own handler and does not propagate: route it through ours so
    # its lines follow loglevel and reach the log file too.
    for name in _LIGHTNING_LOGGERS:
        library_logger = logging.getLogger(name)
        for handler in list(library_logger.handlers):
            library_logger.removeHandler(handler)
        library_logger.propagate = True
        library_logger.setLevel(logging.NOTSET)
    # The database migrations under MLflow's store announce each plugin they load.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return log_file


class _DropAdverts(logging.Filter):
    """Lightning prints a cloud-service tip on every run; it is not about this run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith("💡 Tip")


def drop_lightning_noise() -> None:
    """Silence Lightning's messages that say nothing about the run (idempotent)."""
    rank_zero = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    if not any(isinstance(f, _DropAdverts) for f in rank_zero.filters):
        rank_zero.addFilter(_DropAdverts())
    warnings.filterwarnings("ignore", message=_PYTREE_DEPRECATION)
    # Every number is logged once per epoch, so the step-logging interval does not matter;
    # the one folder checkpoints go to that already holds some is a resumed run's own.
    warnings.filterwarnings("ignore", message=r".*smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")


@contextlib.contextmanager
def lightning_info_off() -> Iterator[None]:
    """Lightning's info lines and advice (GPU available, loader workers) off for the block: a
    one-off evaluation prints its own results, not the Trainer's setup."""
    loggers = [logging.getLogger(name) for name in _LIGHTNING_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=_PYTREE_DEPRECATION)
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
