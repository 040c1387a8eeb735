"""One run, one folder: ``<output_path>/<architecture>_<YYYYmmddHHMMSS>/``.

Its layout, in one place::

    config.yml                 the resolved config, secrets redacted
    metrics.csv                one row per epoch
    summary.json               the run's figures, written when it ends
    checkpoints/best.ckpt      lowest valid_loss
    checkpoints/last.ckpt      the latest epoch
    evaluation/                evaluate.py's reports
    export/                    export_model.py's files

In a multi-GPU (DDP) run the launcher creates the folder and the other processes join it.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from utils.errors import UserError
from utils.files import write_json_atomic, write_yaml_atomic

log = logging.getLogger(__name__)

RUN_TIME_FORMAT = "%Y%m%d%H%M%S"
# Lightning's DDP launcher starts the other ranks by running the same command again; they find
# the launcher's run folder in this variable instead of making one of their own.
RUN_DIR_ENV = "CARS_RUN_DIR"


class RunFolder:
    """The paths of one run folder, and the operations on it as a whole."""

    CONFIG = "config.yml"
    METRICS = "metrics.csv"
    SUMMARY = "summary.json"
    CHECKPOINTS = "checkpoints"
    EVALUATION = "evaluation"
    EXPORT = "export"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # ---- making and finding one ---------------------------------------------------------------
    @classmethod
    def create(
        cls, output_path: str | Path, architecture: str, now: float | None = None
    ) -> RunFolder:
        """Make a new run folder; a second run in the same second gets a ``_2`` (``_3``, ...)
        suffix instead of sharing the folder."""
        stamp = time.strftime(RUN_TIME_FORMAT, time.localtime(now))
        base = Path(output_path) / f"{architecture}_{stamp}"
        candidate, n = base, 1
        while True:
            try:
                base.parent.mkdir(parents=True, exist_ok=True)
                candidate.mkdir()
                return cls(candidate)
            except FileExistsError:
                if not base.parent.is_dir():
                    _unwritable_output(base.parent, "it is a file")
                n += 1
                candidate = base.with_name(f"{base.name}_{n}")
            except OSError as err:
                _unwritable_output(base.parent, str(err))

    @classmethod
    def create_or_join(cls, output_path: str | Path, architecture: str) -> tuple[RunFolder, bool]:
        """The launcher's folder in a DDP worker process, else a new one; the flag says
        whether it was created here (only then does this process own it)."""
        inherited = os.environ.get(RUN_DIR_ENV)
        if inherited and os.environ.get("LOCAL_RANK", "0") != "0" and Path(inherited).is_dir():
            return cls(inherited), False
        run = cls.create(output_path, architecture)
        os.environ[RUN_DIR_ENV] = str(run.path)
        return run, True

    @classmethod
    def of_checkpoint(cls, checkpoint: str | Path) -> RunFolder:
        """The run of ``<run>/checkpoints/x.ckpt``; else the folder holding the checkpoint."""
        parent = Path(checkpoint).resolve().parent
        return cls(parent.parent if parent.name == cls.CHECKPOINTS else parent)

    # ---- paths -------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config_yml(self) -> Path:
        return self.path / self.CONFIG

    @property
    def metrics_csv(self) -> Path:
        return self.path / self.METRICS

    @property
    def summary_json(self) -> Path:
        return self.path / self.SUMMARY

    @property
    def checkpoints(self) -> Path:
        return self.path / self.CHECKPOINTS

    @property
    def best_checkpoint(self) -> Path:
        return self.checkpoints / "best.ckpt"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.ckpt"

    @property
    def evaluation(self) -> Path:
        return self.path / self.EVALUATION

    @property
    def export(self) -> Path:
        return self.path / self.EXPORT

    # ---- contents ----------------------------------------------------------------------------
    def write_config(self, public_config: dict[str, Any]) -> None:
        write_yaml_atomic(self.config_yml, public_config)

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json_atomic(self.summary_json, summary)

    def read_config(self) -> dict[str, Any]:
        """The run's ``config.yml`` as a plain mapping; ``{}`` when missing or unreadable."""
        if not self.config_yml.is_file():
            return {}
        try:
            raw = yaml.safe_load(self.config_yml.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
            log.warning("ignoring the run's config '%s': %s", self.config_yml, err)
            return {}
        return raw if isinstance(raw, dict) else {}

    def remove(self) -> None:
        """Delete the folder: a run that never finished an epoch leaves nothing behind."""
        shutil.rmtree(self.path, ignore_errors=True)


def _unwritable_output(folder: Path, reason: str) -> None:
    raise UserError(
        f"key 'output_path': cannot create a run folder in '{folder}' ({reason}). Point "
        "output_path at a folder you can write to."
    )
