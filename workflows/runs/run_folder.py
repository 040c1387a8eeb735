"""One run, one folder: ``<output_path>/<architecture>_<YYYYmmddHHMMSS>/``.

Its layout, in one place::

    config.yml                 the resolved config, secrets redacted
    metrics.csv                one row per epoch
    summary.json               the run's figures, written when it ends
    trackers.json              the tracker runs it logs to (MLflow run id, Neptune ids), so a
                               resumed run goes on in the same ones; never a token
    checkpoints/best.ckpt      lowest valid_loss
    checkpoints/last.ckpt      the latest epoch
    evaluation/<ckpt>-<split>/ evaluate.py's reports, e.g. evaluation/best-test/
    export/                    export_model.py's files

In a multi-GPU (DDP) run the first process creates the folder and the other processes join it
(under torchrun and SLURM through ``<output_path>/.launches/<launch id>.json``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from configuration import read_yaml_file
from utils.errors import UserError
from utils.files import write_json_atomic, write_yaml_atomic
from utils.hardware import external_launch_id, is_first_process

log = logging.getLogger(__name__)

RUN_TIME_FORMAT = "%Y%m%d%H%M%S"
# Lightning's DDP launcher starts the other ranks by running the same command again; they find
# the launcher's run folder in this variable instead of making one of their own.
RUN_DIR_ENV = "CARS_RUN_DIR"
# Under torchrun and SLURM every process starts on its own: the first one names the run folder
# in <output_path>/.launches/<launch id>.json and the others wait for it: up to half an hour,
# since the first process reads the data (and may build the image cache) before it makes it.
LAUNCHES_DIR = ".launches"
LAUNCH_WAIT_ENV = "CARS_LAUNCH_WAIT_S"
LAUNCH_WAIT_S = 1800.0
# A pointer older than this process (less a margin for nodes that start a little apart) is
# left from an earlier launch that had the same id, e.g. torchrun's --rdzv-id used again.
_STARTED = time.time()
_LAUNCH_START_MARGIN_S = 120.0
LAST = "last"
# Trackers start on helper threads; one at a time rewrites trackers.json.
_TRACKERS_LOCK = threading.Lock()
_RUN_NAME = re.compile(r".+_(\d{14})(?:_(\d+))?")


class RunFolder:
    """The paths of one run folder, and the operations on it as a whole."""

    CONFIG = "config.yml"
    METRICS = "metrics.csv"
    SUMMARY = "summary.json"
    CHECKPOINTS = "checkpoints"
    EVALUATION = "evaluation"
    EXPORT = "export"
    TRACKERS = "trackers.json"

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
        """A new run folder in the first process of a run; in the other processes of a
        multi-process (DDP) run, the first one's folder. The flag says whether it was created
        here (only then does this process own it)."""
        launch = external_launch_id()
        if launch is not None:  # torchrun or SLURM: every process started on its own
            return cls._create_or_join_launch(output_path, architecture, launch)
        if not is_first_process():  # Lightning's launcher: the first process's environment
            inherited = os.environ.get(RUN_DIR_ENV)
            if not inherited or not Path(inherited).is_dir():
                raise UserError(
                    "this process belongs to a multi-process run (NODE_RANK / LOCAL_RANK are "
                    "set) but was not started by the run's first process, so it cannot find the "
                    "run folder. Start runs on several nodes with torchrun or SLURM (README, "
                    "'Several GPUs and nodes')."
                )
            return cls(inherited), False
        run = cls.create(output_path, architecture)
        os.environ[RUN_DIR_ENV] = str(run.path)
        return run, True

    @classmethod
    def _create_or_join_launch(
        cls, output_path: str | Path, architecture: str, launch: str
    ) -> tuple[RunFolder, bool]:
        # The first process names the run folder in a small file under output_path, which the
        # others (on this node or others sharing the folder) wait for.
        pointer = Path(output_path) / LAUNCHES_DIR / f"{_safe_name(launch)}.json"
        if is_first_process():
            run = cls.create(output_path, architecture)
            write_json_atomic(pointer, {"run_dir": str(run.path.resolve()), "created": time.time()})
            return run, True
        wait_s = float(os.environ.get(LAUNCH_WAIT_ENV, LAUNCH_WAIT_S))
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                named = json.loads(pointer.read_text(encoding="utf-8"))
                run_dir, created = Path(named["run_dir"]), float(named["created"])
            except (OSError, ValueError, KeyError, TypeError):
                time.sleep(0.2)
                continue
            if created >= _STARTED - _LAUNCH_START_MARGIN_S and run_dir.is_dir():
                return cls(run_dir), False
            time.sleep(0.2)
        raise UserError(
            f"this process of launch '{launch}' waited {wait_s:.0f} s for the first process to "
            f"name the run folder in '{pointer}'. Put output_path on a folder that every node "
            "shares, and check that the first process (rank 0) started without an error."
        )

    @classmethod
    def of_checkpoint(cls, checkpoint: str | Path) -> RunFolder:
        """The run of ``<run>/checkpoints/x.ckpt``; else the folder holding the checkpoint."""
        parent = Path(checkpoint).resolve().parent
        return cls(parent.parent if parent.name == cls.CHECKPOINTS else parent)

    # ---- resuming (a run folder, a checkpoint, or "last") ------------------------------------
    @classmethod
    def resolve_resume(cls, spec: str | Path, output_path: str | Path) -> tuple[RunFolder, Path]:
        """The run and the checkpoint that ``--resume SPEC`` names: ``last`` (the newest run
        under ``output_path`` that has a ``last.ckpt``), a run folder (its ``last.ckpt``) or a
        checkpoint file (in its run's folder)."""
        if str(spec) == LAST:
            run = cls.newest(output_path)
            return run, run.last_checkpoint
        path = Path(spec)
        if path.is_dir():
            run = cls(path)
            if not run.last_checkpoint.is_file():
                raise UserError(
                    f"--resume '{spec}': the folder has no {cls.CHECKPOINTS}/last.ckpt, so there "
                    "is nothing to continue (a run writes it after its first epoch). Pass a run "
                    f"folder from '{output_path}' or a .ckpt file."
                )
            return run, run.last_checkpoint
        if path.is_file():
            return cls.of_checkpoint(path), path
        raise UserError(
            f"--resume '{spec}' does not exist. Pass a run folder (e.g. {output_path}/<run>), a "
            f"checkpoint file, or '{LAST}' for the newest run under output_path."
        )

    @classmethod
    def newest(cls, output_path: str | Path) -> RunFolder:
        """The run under ``output_path`` started last (by the time in its name) that has a
        ``last.ckpt``."""
        folder = Path(output_path)
        runs = []
        if folder.is_dir():
            for child in folder.iterdir():
                match = _RUN_NAME.fullmatch(child.name)
                if match and child.is_dir() and cls(child).last_checkpoint.is_file():
                    runs.append((match.group(1), int(match.group(2) or 1), child))
        if not runs:
            raise UserError(
                f"--resume {LAST}: no run with a checkpoints/last.ckpt in '{folder}' (output_path)."
                " Pass the run folder itself, or set output_path (-c CONFIG or --set "
                "output_path=...) to where the runs are."
            )
        return cls(max(runs)[2])

    # ---- a run folder where a checkpoint is asked for -------------------------------
    @classmethod
    def checkpoint_of(cls, path: str | Path) -> Path:
        """``path`` when it is a checkpoint file; for a run folder (or its ``checkpoints/``)
        its ``best.ckpt``. Anything else is returned unchanged, for the reader to refuse."""
        path = Path(path)
        if not path.is_dir():
            return path
        for candidate in (cls(path).best_checkpoint, path / "best.ckpt"):
            if candidate.is_file():
                return candidate
        raise UserError(
            f"'{path}' is a folder without {cls.CHECKPOINTS}/best.ckpt, so it is not a finished "
            "run folder. Pass a run folder that trained for at least one epoch, or a .ckpt file "
            "(e.g. output/<run>/checkpoints/best.ckpt)."
        )

    def evaluation_for(self, checkpoint: str | Path, split: str) -> Path:
        """``evaluation/<checkpoint name>-<split>/``: evaluating another checkpoint or split
        does not overwrite the reports of the first."""
        return self.evaluation / f"{Path(checkpoint).stem}-{split}"

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

    @property
    def trackers_json(self) -> Path:
        return self.path / self.TRACKERS

    # ---- contents ----------------------------------------------------------------------------
    def write_config(self, public_config: dict[str, Any]) -> None:
        write_yaml_atomic(self.config_yml, public_config)

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json_atomic(self.summary_json, summary)

    def read_config(self) -> dict[str, Any]:
        """The run's ``config.yml`` as a plain mapping; ``{}`` (and a warning) when missing or
        unreadable."""
        try:
            return self.checked_config()
        except UserError as err:
            log.warning("ignoring the run's config: %s", err)
            return {}

    def checked_config(self) -> dict[str, Any]:
        """The run's ``config.yml`` as a plain mapping, ``{}`` when there is none; a UserError
        when it cannot be read, through the config loader's limits (size, alias expansion)."""
        if not self.config_yml.is_file():
            return {}
        raw = read_yaml_file(self.config_yml, f"the run's config '{self.config_yml}'")
        if raw is not None and not isinstance(raw, dict):
            raise UserError(
                f"the run's config '{self.config_yml}' is a {type(raw).__name__}, not a mapping "
                "of keys to values; the run's settings are unknown."
            )
        return raw or {}

    # ---- resume: the tracker runs this run logs to --------------------------------------------
    def read_trackers(self) -> dict[str, dict[str, Any]]:
        """``trackers.json``: each tracker's identity of this run; ``{}`` when there is none."""
        try:
            data = json.loads(self.trackers_json.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {k: v for k, v in data.items() if isinstance(v, dict)}

    def record_tracker(self, tracker: str, identity: dict[str, Any]) -> None:
        """Store one tracker's identity of this run in ``trackers.json`` (atomically)."""
        with _TRACKERS_LOCK:
            write_json_atomic(self.trackers_json, {**self.read_trackers(), tracker: identity})

    def remove(self) -> None:
        """Delete the folder: a run that never finished an epoch leaves nothing behind."""
        shutil.rmtree(self.path, ignore_errors=True)


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def _unwritable_output(folder: Path, reason: str) -> None:
    raise UserError(
        f"key 'output_path': cannot create a run folder in '{folder}' ({reason}). Point "
        "output_path at a folder you can write to."
    )
