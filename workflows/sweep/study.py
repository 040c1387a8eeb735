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

import itertools
import json
import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from configuration import Config, load_config
from utils.errors import UserError
from utils.hardware import external_launch_id
from utils.text import without_credentials
from workflows.runs.comparison import RunRecord, load_run, report
from workflows.sweep.axes import Axis, parse_axes, sweep_name
from workflows.training.interruptions import StoppedEarly
from workflows.training.run import run_training

log = logging.getLogger(__name__)

SWEEP_DB = "sweeps.db"
_OPEN_ATTEMPTS = 4
HEARTBEAT_S = 60  # a process that died mid-run frees its combination after twice this
# Trial attributes: the run folder, why a trial did not train, the error of a failed one, and
# the combination a queued grid trial stands for.
RUN_DIR, SKIPPED, ERROR, COMBINATION = "run_dir", "skipped", "error", "combination"


@dataclass
class SweepResult:
    name: str
    storage: str
    trained: int = 0  # runs this process trained
    failed: int = 0  # runs this process started that failed
    table: str = ""
    report: dict[str, Path] = field(default_factory=dict)
    stopped: bool = False  # a signal stopped it; the same command goes on later


def storage_url(config: Config, storage: str | None) -> str:
    if storage:
        return storage
    path = Path(config.output_path).resolve() / SWEEP_DB
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path.as_posix()}"


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
    name = sweep_name(axes, search=trials is not None, base=base)
    overrides = [*overrides, *_one_device(base)]
    url = storage_url(base, storage)
    study = _open_study(name, url, search=trials is not None)
    result = SweepResult(name=name, storage=without_credentials(url))
    log.info("sweep %s in %s", name, result.storage)

    def train(trial: optuna.trial.Trial) -> float:
        try:
            return _objective(trial, axes, name, config_path, overrides, data_path, progress_bar)
        finally:
            result.trained += int(RUN_DIR in trial.user_attrs)
            result.failed += int(ERROR in trial.user_attrs)

    try:
        if trials is None:
            _enqueue_missing(study, axes)
            while _waiting(study):
                study.optimize(train, n_trials=1, catch=(Exception,))
        else:
            while _counted(study) < trials:
                study.optimize(train, n_trials=1, catch=(Exception,))
    except KeyboardInterrupt:
        result.stopped = True
    result.report, result.table = _report(study, base, name)
    return result


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
def _open_study(name: str, url: str, search: bool) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failed run: our own warning
    for attempt in range(_OPEN_ATTEMPTS):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.9
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = optuna.storages.RDBStorage(
                    url, heartbeat_interval=HEARTBEAT_S, grace_period=2 * HEARTBEAT_S
                )
            break
        except Exception as err:  # any failure to reach the database is the same advice
            # Processes started together race to create a new database's tables; the loser
            # finds them made on its next try.
            if attempt + 1 < _OPEN_ATTEMPTS:
                time.sleep(1 + attempt)
                continue
            raise UserError(
                f"--sweep-storage '{without_credentials(url)}' cannot be opened ({type(err).__name__}: "
                f"{without_credentials(str(err).splitlines()[0]) if str(err) else ''}). Give a database URL Optuna "
                "supports (sqlite:///path.db, postgresql://user@host/db, mysql://...) that this "
                "machine can reach, with its driver installed."
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


def _one_device(base: Config) -> list[str]:
    """Each sweep process trains on one device: several GPUs run several processes (one
    per GPU), never a multi-GPU run whose relaunched workers would pull trials of their own."""
    launch = external_launch_id()
    if launch is not None:
        # The processes of one torchrun/srun launch share one run folder per launch (see
        # RunFolder.create_or_join), while each sweep process trains runs of its own.
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


def _enqueue_missing(study: optuna.Study, axes: list[Axis]) -> None:
    """Queue each combination that is neither done, running nor queued (failed ones again)."""
    taken = {
        t.user_attrs.get(COMBINATION) or _params_key(t.params)
        for t in study.get_trials(deepcopy=False)
        if t.state in _TAKEN and not t.user_attrs.get(SKIPPED)
    }
    for combo in itertools.product(*(a.choices for a in axes)):
        params = dict(zip((a.key for a in axes), combo, strict=True))
        if _params_key(params) not in taken:
            study.enqueue_trial(params, user_attrs={COMBINATION: _params_key(params)})


_TAKEN = (
    optuna.trial.TrialState.COMPLETE,
    optuna.trial.TrialState.RUNNING,
    optuna.trial.TrialState.WAITING,
    optuna.trial.TrialState.PRUNED,
)


def _waiting(study: optuna.Study) -> bool:
    return bool(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)))


def _counted(study: optuna.Study) -> int:
    """Trials that count towards --trials: trained, pruned or running, never the skipped."""
    states = (
        optuna.trial.TrialState.COMPLETE,
        optuna.trial.TrialState.PRUNED,
        optuna.trial.TrialState.RUNNING,
    )
    return sum(
        1 for t in study.get_trials(deepcopy=False, states=states) if not t.user_attrs.get(SKIPPED)
    )


def _params_key(params: dict[str, Any]) -> str:
    return json.dumps({k: str(v) for k, v in params.items()}, sort_keys=True)


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
    except StoppedEarly:  # Ctrl-C before the first epoch ended: stop the sweep, not this run
        raise KeyboardInterrupt from None
    except Exception as err:
        trial.set_user_attr(
            ERROR, str(err).splitlines()[0][:500] if str(err) else type(err).__name__
        )
        log.warning("sweep %s, trial %d failed: %s; the sweep goes on", name, trial.number, err)
        raise
    trial.set_user_attr(RUN_DIR, str(result.run_dir))
    if result.stopped_by is not None:
        raise KeyboardInterrupt  # Optuna marks the trial failed; the next start runs it again
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
    mine = _params_key(trial.params)
    busy = (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.COMPLETE)
    return any(
        t.number < trial.number and not t.user_attrs.get(SKIPPED) and _params_key(t.params) == mine
        for t in trial.study.get_trials(deepcopy=False, states=busy)
    )


def _skip(trial: optuna.trial.Trial, why: str) -> float:
    trial.set_user_attr(SKIPPED, why)
    raise optuna.TrialPruned(why)


# ---- the table ---------------------------------------------------------------------------------
def _report(study: optuna.Study, base: Config, name: str) -> tuple[dict[str, Path], str]:
    records: list[RunRecord] = []
    for trial in study.get_trials(deepcopy=False):
        if trial.user_attrs.get(SKIPPED) or trial.state in (
            optuna.trial.TrialState.WAITING,
            optuna.trial.TrialState.RUNNING,
        ):
            continue
        run_dir = trial.user_attrs.get(RUN_DIR)
        record = load_run(Path(run_dir)) if run_dir else None
        if record is None:  # failed before its first epoch: no folder
            settings = ", ".join(f"{k}={v}" for k, v in trial.params.items())
            records.append(
                RunRecord(
                    path=Path(f"trial {trial.number} ({settings})"),
                    config={},
                    rows=[],
                    summary=None,
                    status="failed",
                    error=str(trial.user_attrs.get(ERROR, "")),
                )
            )
            continue
        if trial.state == optuna.trial.TrialState.PRUNED:
            record.status = "pruned"
        elif trial.state == optuna.trial.TrialState.FAIL and not (record.summary or {}).get(
            "interrupted"
        ):
            record.status, record.error = "failed", str(trial.user_attrs.get(ERROR, ""))
        records.append(record)
    if not records:
        return {}, "No run of this sweep has ended yet.\n"
    return report(records, Path(base.output_path) / "reports" / f"sweep-{name}")
