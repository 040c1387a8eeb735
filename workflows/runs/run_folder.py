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
(``workflows.runs.launch``). While a run trains, its first process holds the folder's lock
(``.lock``, its holder named in ``.lock.owner``): a second process cannot resume it meanwhile.
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

from filelock import FileLock, Timeout

from configuration import read_yaml_file
from utils.errors import UserError
from utils.files import write_json_atomic, write_yaml_atomic

log = logging.getLogger(__name__)

RUN_TIME_FORMAT = "%Y%m%d%H%M%S"
LAST = "last"
# Trackers start on helper threads; one at a time rewrites trackers.json.
_TRACKERS_LOCK = threading.Lock()
# A run folder's name: <architecture>_<YYYYmmddHHMMSS>[_<n>].
RUN_NAME = re.compile(r".+_(\d{14})(?:_(\d+))?")


class RunFolder:
    """The paths of one run folder, and the operations on it as a whole."""

    CONFIG = "config.yml"
    METRICS = "metrics.csv"
    SUMMARY = "summary.json"
    CHECKPOINTS = "checkpoints"
    EVALUATION = "evaluation"
    EXPORT = "export"
    TRACKERS = "trackers.json"
    LOCK, LOCK_OWNER = ".lock", ".lock.owner"

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
    def of_checkpoint(cls, checkpoint: str | Path) -> RunFolder:
        """The run of ``<run>/checkpoints/x.ckpt``; else the folder holding the checkpoint."""
        parent = Path(checkpoint).resolve().parent
        return cls(parent.parent if parent.name == cls.CHECKPOINTS else parent)

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

    def data_path(self, given: str | Path | None, why: str) -> Path:
        """``given``, else the prepared data this run trained on (its config's
        ``stanford_data_path``); ``why`` the data is needed ends the message when neither names
        one."""
        if given is None:
            given = self.read_config().get("stanford_data_path")
            if not given:
                raise UserError(
                    f"no data folder given and no run config ('{self.config_yml}') naming "
                    "stanford_data_path was found. Pass the prepared data folder with -d "
                    f"DATA_PATH ({why})."
                )
        return Path(given)

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

    # ---- one process at a time --------------------------------------------------------------
    def claim(self) -> RunLock:
        """Lock the folder for this process (release the returned lock when the run ends); a
        folder another live process holds is a ``UserError`` naming that process. The lock
        dies with its process, so a folder a killed run left is simply taken over."""
        lock = FileLock(self.path / self.LOCK, timeout=0)
        try:
            lock.acquire()
        except Timeout:
            try:
                holder = json.loads((self.path / self.LOCK_OWNER).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                holder = {}
            raise UserError(
                f"run '{self.path}' is in use by another process (pid {holder.get('pid', '?')} "
                f"on {holder.get('host', '?')}, since {holder.get('since', '?')}): two "
                "processes training one run would overwrite each other's epochs. Wait for it to "
                "end (or stop it), then resume again."
            ) from None
        owner = {"pid": os.getpid(), "host": os.uname().nodename, "since": time.strftime("%c")}
        write_json_atomic(self.path / self.LOCK_OWNER, owner)
        return RunLock(lock, self.path / self.LOCK_OWNER)

    def remove(self) -> None:
        """Delete the folder: a run that never finished an epoch leaves nothing behind."""
        shutil.rmtree(self.path, ignore_errors=True)


class RunLock:
    """A run folder's lock, held by this process (``RunFolder.claim``)."""

    def __init__(self, lock: FileLock, owner: Path) -> None:
        self._lock, self._owner = lock, owner

    def release(self) -> None:
        self._owner.unlink(missing_ok=True)  # while still held: never another process's
        self._lock.release()


def _unwritable_output(folder: Path, reason: str) -> None:
    raise UserError(
        f"key 'output_path': cannot create a run folder in '{folder}' ({reason}). Point "
        "output_path at a folder you can write to."
    )
