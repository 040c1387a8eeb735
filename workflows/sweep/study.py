"""Sweeps: many runs from one command, kept in an Optuna study.

``--sweep KEY=V1,V2,...`` (values as YAML) trains every combination of the given values; with
``--trials N`` and ranges (``KEY=LOW..HIGH`` or ``KEY=LOW..HIGH:log``) Optuna's default sampler
picks N settings instead, and runs whose ``valid_loss`` falls behind the median of earlier runs
at the same epoch are pruned. The study lives in an Optuna storage (``sweeps.db`` in
``output_path`` unless ``--sweep-storage`` names another database), so the same command started
again goes on where it stopped, and several processes or machines on one storage share the
work, each combination trained once. Every run is tagged ``sweep:<name>``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from configuration import Config, load_config
from datasets.labels import SPLITS, labels_csv
from utils.errors import UserError, first_line
from utils.hardware import external_launch_id
from utils.text import without_credentials
from workflows.runs.stores import open_store, sqlite_url
from workflows.sweep.axes import Axis, parse_axes, sweep_name
from workflows.sweep.liveness import Liveness
from workflows.sweep.signals import SweepSignals, SweepStopped
from workflows.sweep.table import COMBINATION, ERROR, RUN_DIR, SKIPPED, params_key, sweep_report
from workflows.training.interruptions import StoppedBeforeFirstEpoch
from workflows.training.run import run_training

log = logging.getLogger(__name__)

SWEEP_DB = "sweeps.db"
# A process that died mid-run frees its combination after twice its heartbeat (four times
# when it died before its first beat, see liveness.py); the environment variable sets another
# heartbeat (seconds), e.g. for a test.
HEARTBEAT_ENV, HEARTBEAT_S = "CARS_SWEEP_HEARTBEAT_S", 60
MAX_FAILURES_IN_A_ROW = 5  # a --trials search stops after this many failed runs in a row
_State = optuna.trial.TrialState


@dataclass
class SweepResult:
    name: str
    storage: str  # without a password
    size: int = 0  # combinations of a grid, or --trials
    trained: int = 0  # runs this process trained
    failed: int = 0  # runs this process started that failed
    table: str = ""
    report: dict[str, Path] = field(default_factory=dict)
    stopped: SweepStopped | None = None  # a signal stopped it; the same command goes on later
    gave_up: str = ""  # why a search stopped before its --trials


def storage_url(config: Config, storage: str | None) -> str:
    """The sweep's database; output_path, where its runs go, is checked first either way."""
    folder = Path(config.output_path).resolve()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        reason = "it is a file" if isinstance(err, FileExistsError) else str(err)
        raise UserError(
            f"key 'output_path': cannot create '{folder}' for the sweep's database and its "
            f"runs ({reason}). Point output_path at a folder you can write to."
        ) from None
    return storage or sqlite_url(folder, SWEEP_DB)


def run_sweep(
    config_path: str | Path | None,
    overrides: list[str],
    data_path: str | None,
    specs: list[str],
    trials: int | None = None,
    storage: str | None = None,
    progress_bar: bool = True,
) -> SweepResult:
    """Train the sweep's remaining runs in this process, then write and return its table."""
    base = load_config(config_path, overrides, data_path)  # a bad base config stops here
    axes = parse_axes(specs)
    if trials is None and any(a.is_range for a in axes):
        raise UserError(
            "a --sweep range (LOW..HIGH) needs --trials N: the number of settings to try."
        )
    if trials is not None and trials < 1:
        raise UserError(f"--trials must be at least 1, got {trials}.")
    for axis in axes:  # a typo in a key or value fails now, not as every run of the sweep
        for value in (axis.low, axis.high) if axis.is_range else axis.values:
            setting = f"{axis.key}={json.dumps(value)}"
            try:
                load_config(config_path, [*overrides, setting], data_path)
            except UserError as err:
                raise UserError(f"--sweep {setting}: {err}") from None
    search = trials is not None
    name = sweep_name(axes, search, base, data=data_identity(base.stanford_data_path))
    overrides = [*overrides, *_one_device(base)]
    url = storage_url(base, storage)
    liveness = Liveness(_heartbeat_s())
    with SweepSignals() as signals:
        study = _open_study(name, url, search, liveness)
        size = trials if search else len(list(itertools.product(*(a.choices for a in axes))))
        result = SweepResult(name=name, storage=without_credentials(url), size=size)
        log.info("sweep %s in %s", name, result.storage)
        run = (name, config_path, overrides, data_path, progress_bar)
        try:
            _train_the_rest(study, axes, trials, result, (signals, liveness), run)
        except SweepStopped as stop:
            result.stopped = stop
        result.report, result.table = sweep_report(study, base, name)
    return result


def _train_the_rest(study, axes, trials, result, watch, run) -> None:
    """Until every combination (or --trials runs) is done: fail the runs of processes that
    died, queue what is missing, train one, or wait for the runs of other processes."""
    signals, liveness = watch
    failures_in_a_row = 0

    def train(trial: optuna.trial.Trial) -> float:
        nonlocal failures_in_a_row
        try:
            liveness.started(trial)
            with signals.interruptible():
                return _objective(trial, axes, *run)
        finally:
            result.trained += int(RUN_DIR in trial.user_attrs)
            result.failed += int(ERROR in trial.user_attrs)
            failures_in_a_row = failures_in_a_row + 1 if ERROR in trial.user_attrs else 0

    waited = False
    first_new = len(study.get_trials(deepcopy=False))  # trials made from now on are this start's
    while True:
        signals.check()
        _fail_stale(study, liveness)
        if trials is None:
            _enqueue_missing(study, axes, first_new)
            left = _waiting(study)
        else:
            left = _counted(study) < trials
        if left:
            liveness.before_run()
            study.optimize(train, n_trials=1, catch=(Exception,))
            if trials is not None and failures_in_a_row >= MAX_FAILURES_IN_A_ROW:
                result.gave_up = f"{failures_in_a_row} runs in a row failed"
                return
        elif _running(study):  # other processes' runs, or a dead one's until it goes stale
            if not waited:
                log.info("sweep %s: waiting for the runs of other processes", run[0])
                waited = True
            signals.sleep(min(5.0, _heartbeat_s()))
        else:
            return


class PruneBehindMedian(Callback):
    """Reports each epoch's valid_loss to the trial and stops the run when Optuna's pruner
    says it falls behind."""

    def __init__(self, trial: optuna.trial.Trial) -> None:
        self.trial = trial
        self.pruned_at: int | None = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = getattr(pl_module, "epoch_metrics", None) or {}
        if trainer.sanity_checking or "valid_loss" not in metrics:
            return
        epoch = int(metrics["epoch"])
        self.trial.report(float(metrics["valid_loss"]), epoch)
        if self.trial.should_prune():
            self.pruned_at = epoch
            trainer.should_stop = True


# ---- the study ---------------------------------------------------------------------------------
def _open_study(name: str, url: str, search: bool, liveness: Liveness) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failed run: our own warning

    def rdb_storage() -> optuna.storages.RDBStorage:
        with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.9
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return liveness.storage(url)

    try:
        storage = open_store(url, rdb_storage)
    except ImportError as err:  # SQLAlchemy imports the database's driver first
        raise UserError(
            f"--sweep-storage '{without_credentials(url)}' needs a database driver that is not "
            f"installed ({err}). For PostgreSQL: pip install -r postgres_requirements.txt "
            "(psycopg[binary]); for another database, its SQLAlchemy driver."
        ) from None
    except Exception as err:  # any failure to reach the database is the same advice
        raise UserError(
            f"--sweep-storage '{without_credentials(url)}' cannot be opened "
            f"({type(err).__name__}: {without_credentials(first_line(err))}). Give a database URL "
            "Optuna supports (sqlite:///path.db, postgresql://user:password@host/db, "
            "mysql://...) that this machine can reach, with the right user and password, and "
            "its driver installed."
        ) from None
    return optuna.create_study(
        study_name=name,
        storage=storage,
        load_if_exists=True,
        direction="minimize",
        # MedianPruner compares each epoch's valid_loss with earlier runs at the same epoch.
        pruner=optuna.pruners.MedianPruner(n_warmup_steps=1)
        if search
        else optuna.pruners.NopPruner(),
    )


def _heartbeat_s() -> int:
    text = os.environ.get(HEARTBEAT_ENV, "")
    if not text:
        return HEARTBEAT_S
    if not text.isdigit() or int(text) < 1:
        raise UserError(f"{HEARTBEAT_ENV}={text!r}: give a whole number of seconds, 1 or more.")
    return int(text)


def data_identity(data_path: str | Path) -> str:
    """A hash of the data's labels CSVs (its images and classes), not of its path: the same
    prepared data on several machines is one sweep, other data another."""
    digest = hashlib.sha1()
    for split in SPLITS:
        try:
            digest.update(labels_csv(data_path, split).read_bytes())
        except OSError:
            digest.update(b"-")  # no data yet: every run fails and says why
    return digest.hexdigest()[:12]


def _one_device(base: Config) -> list[str]:
    """Each sweep process trains on one device: several GPUs run several processes (one
    per GPU), never a multi-GPU run whose relaunched workers would pull trials of their own."""
    launch = external_launch_id()
    if launch is not None:
        # The processes of one torchrun/srun launch share one run folder per launch (see
        # workflows.runs.launch), while each sweep process trains runs of its own.
        raise UserError(
            f"a sweep cannot run as one launch of several processes ({launch.split('-')[0]}): "
            "each sweep process trains its own runs on one device. Start independent "
            "processes instead: a SLURM job array (sbatch --array=0-3, one task each) or "
            "'CUDA_VISIBLE_DEVICES=N python train.py --sweep ...' per GPU. They share the "
            "sweep through its database: output_path's sweeps.db, or --sweep-storage."
        )
    if base.devices == "auto":
        return ["devices=1"]
    if (isinstance(base.devices, int) and base.devices > 1) or (
        isinstance(base.devices, list) and len(base.devices) > 1
    ):
        raise UserError(
            f"a sweep trains on one device per process, but devices is {base.devices}. Set "
            "devices: 1 and start one sweep process per GPU (CUDA_VISIBLE_DEVICES=0 python "
            "train.py --sweep ..., CUDA_VISIBLE_DEVICES=1 ...)."
        )
    return []


def _fail_stale(study: optuna.Study, liveness: Liveness) -> None:
    """Mark failed the runs whose process stopped sending heartbeats (killed, machine down), or
    died before its first, so that their combinations are queued again. Optuna does the first
    only inside optimize(), which comes after the queueing, and not at all when nothing is
    queued; the second never."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    liveness.fail_never_started(study)


def _enqueue_missing(study: optuna.Study, axes: list[Axis], first_new: int) -> None:
    """Queue each combination that is neither done, running nor queued. A failed one is queued
    again, once per start: unless it failed with an error since this start (trial number from
    ``first_new`` on); a run stopped by a signal or a dead process is always queued again."""
    taken = {
        t.user_attrs.get(COMBINATION) or params_key(t.params)
        for t in study.get_trials(deepcopy=False)
        if not t.user_attrs.get(SKIPPED)
        and (
            t.state in _TAKEN
            or (t.state == _State.FAIL and ERROR in t.user_attrs and t.number >= first_new)
        )
    }
    for combo in itertools.product(*(a.choices for a in axes)):
        params = dict(zip((a.key for a in axes), combo, strict=True))
        if params_key(params) not in taken:
            study.enqueue_trial(params, user_attrs={COMBINATION: params_key(params)})


_TAKEN = (_State.COMPLETE, _State.RUNNING, _State.WAITING, _State.PRUNED)


def _waiting(study: optuna.Study) -> bool:
    return bool(study.get_trials(deepcopy=False, states=(_State.WAITING,)))


def _running(study: optuna.Study) -> bool:
    return bool(study.get_trials(deepcopy=False, states=(_State.RUNNING,)))


def _counted(study: optuna.Study) -> int:
    """Trials that count towards --trials: trained, pruned, running or failed with an error;
    never the skipped ones, nor those a signal or a dead process ended."""
    return sum(
        1
        for t in study.get_trials(deepcopy=False)
        if not t.user_attrs.get(SKIPPED)
        and (
            t.state in (_State.COMPLETE, _State.PRUNED, _State.RUNNING)
            or (t.state == _State.FAIL and ERROR in t.user_attrs)
        )
    )


# ---- one run -----------------------------------------------------------------------------------
def _objective(trial, axes, name, config_path, overrides, data_path, progress_bar) -> float:
    search = _is_search(trial)
    if not search and COMBINATION not in trial.user_attrs:  # another process took the last
        return _skip(trial, "no combination left")
    values = {a.key: _suggest(trial, a) for a in axes}
    if _duplicate_of_earlier(trial):
        return _skip(trial, "another process trains this combination")
    sets = [f"{key}={json.dumps(value)}" for key, value in values.items()]
    log.info("sweep %s, trial %d: %s", name, trial.number, ", ".join(sets))
    try:
        config = load_config(config_path, [*overrides, *sets], data_path)
        config = config.model_copy(update={"tags": [*config.tags, f"sweep:{name}"]})
        pruning = PruneBehindMedian(trial) if search else None
        result = run_training(
            config, progress_bar=progress_bar, callbacks=[pruning] if pruning else None
        )
    except StoppedBeforeFirstEpoch as err:  # a signal before the first epoch ended: stop the sweep
        raise SweepStopped(err.exit_code - 128) from None
    except Exception as err:
        trial.set_user_attr(ERROR, first_line(err)[:500] or type(err).__name__)
        log.warning("sweep %s, trial %d failed: %s; the sweep goes on", name, trial.number, err)
        raise
    trial.set_user_attr(RUN_DIR, str(result.run_dir))
    if result.stopped_by is not None:  # Optuna marks the trial failed; the next start runs it
        raise SweepStopped(result.stopped_by.signum)
    if pruning is not None and pruning.pruned_at is not None:
        raise optuna.TrialPruned(f"valid_loss behind the median at epoch {pruning.pruned_at}")
    best = result.summary.get("min_valid_loss")
    return float(best) if best is not None else float("inf")


def _is_search(trial: optuna.trial.Trial) -> bool:
    return trial.study.pruner is not None and not isinstance(
        trial.study.pruner, optuna.pruners.NopPruner
    )


def _suggest(trial: optuna.trial.Trial, axis: Axis) -> Any:
    if not axis.is_range:
        return json.loads(trial.suggest_categorical(axis.key, axis.choices))
    if isinstance(axis.low, int) and isinstance(axis.high, int):
        return trial.suggest_int(axis.key, int(axis.low), int(axis.high), log=axis.log)
    return trial.suggest_float(axis.key, float(axis.low), float(axis.high), log=axis.log)


def _duplicate_of_earlier(trial: optuna.trial.Trial) -> bool:
    """Two processes that queued the same combination at once: only the lower trial trains."""
    mine = params_key(trial.params)
    busy = (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.COMPLETE)
    return any(
        t.number < trial.number and not t.user_attrs.get(SKIPPED) and params_key(t.params) == mine
        for t in trial.study.get_trials(deepcopy=False, states=busy)
    )


def _skip(trial: optuna.trial.Trial, why: str) -> float:
    trial.set_user_attr(SKIPPED, why)
    raise optuna.TrialPruned(why)
