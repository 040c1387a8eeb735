"""One training run from a validated ``Config``: data, network, module, trainer, run folder
(see ``workflows.runs.run_folder`` for what the folder holds)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.exceptions import SIGTERMException

from configuration import Config
from datasets.stanford_data_module import StanfordCarsDataModule
from models.arch_dict import build_network, count_parameters
from models.checkpoint import CheckpointMeta
from models.net_module import NetModule
from models.optimization import build_loss
from models.speed import prepare_network
from utils.errors import UserError
from utils.hardware import (
    available_cpus,
    default_num_workers,
    detect_runtime,
    is_first_process,
    usable_workers,
)
from utils.logger import quiet_lightning
from workflows.runs.metrics import MetricsCSV
from workflows.runs.run_folder import RunFolder
from workflows.runs.run_seed import with_run_seed
from workflows.tracking.trackers import (
    build_trackers,
    finish_trackers,
    start_trackers,
)
from workflows.training.callbacks import (
    ConfiguredEarlyStopping,
    checkpoint_callbacks,
    make_trainer,
)
from workflows.training.checkpoint_io import AtomicCheckpointIO, leftover_partials
from workflows.training.epoch_log import EpochLog
from workflows.training.fine_tuning import head_first, resolve_init_from
from workflows.training.interruptions import (
    FiniteLossGuard,
    RandomState,
    RunInterrupted,
    SignalStop,
    StoppedEarly,
    as_interruption,
    failure_message,
)
from workflows.training.preflight import preflight
from workflows.training.resume import ResumedSettings, ResumePoint, check_resumable

log = logging.getLogger(__name__)


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


def build_datamodule(config: Config, data_path: str | Path | None = None) -> StanfordCarsDataModule:
    """The data module a config describes."""
    num_workers = config.num_workers if config.num_workers is not None else default_num_workers()
    num_workers, lowered = usable_workers(num_workers)  # never more than the CPUs
    if lowered:
        log.warning(lowered)
    return StanfordCarsDataModule(
        data_path or config.stanford_data_path,
        config.preprocessing(),
        config.augmentations(),
        batch_size=config.batch_size,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available() and config.accelerator in ("auto", "gpu", "cuda"),
        # speed
        cache_images=config.cache_images,
        augment_on=config.augment_on,
        channels_last=config.channels_last,
        cache_on_device=config.cache_on_device,
        valid_batch_size=config.valid_batch_size,
    )


def run_training(
    config: Config,
    progress_bar: bool = True,
    resume: ResumePoint | None = None,
    callbacks: list[pl.Callback] | None = None,  # e.g. a sweep's pruning
) -> RunResult:
    """Train the configured network, or continue the run of ``resume`` from its checkpoint;
    returns the run folder and its summary (``stopped_by`` set when a signal stopped it)."""
    started = time.time()
    config = with_run_seed(config)  # a fresh seed unless set; recorded in config.yml, summary
    # ---- fine-tuning: architecture and preprocessing from init_from's checkpoint
    config, start = resolve_init_from(config)
    _prepare_process(config)
    data = build_datamodule(config)
    _share_cpu_with_loader_workers(config, data.num_workers)
    net = build_network(
        config.architecture, data.num_classes, config.img_channels, **config.arch_options()
    )
    transfer = start.initialise(net, data.class_names, config) if start else None
    origin: dict[str, Any] = {"num_classes": data.num_classes}  # + where the weights came from
    if start is not None:
        origin |= {
            "init_from": str(start.path),
            "init_from_weights": transfer.as_dict() if transfer else None,
            "freeze_epochs": config.freeze_epochs,
        }
    loss_fn = build_loss(config.loss_function, config.loss_params)
    preflight(data, net, loss_fn, config.loss_function, config.architecture)
    pl.seed_everything(config.seed, workers=True, verbose=False)  # as if preflight never ran
    net = prepare_network(net, config.channels_last, config.compile, config.compile_mode)  # speed

    # ---- resume: go on in the resumed run's folder, else make a new one
    if resume is not None:
        run, created = resume.run, False
        run_config = run.read_config()  # the settings the run trained with until now
        check_resumable(resume, config, _checkpoint_meta(config, data, run), run_config)
        for partial in leftover_partials(run.checkpoints):
            partial.unlink(missing_ok=True)
        run.write_config(config.to_public_dict())
    else:
        run, created = RunFolder.create_or_join(config.output_path, config.architecture)
        if created:
            run.write_config(config.to_public_dict())
    module = NetModule(
        net=net,
        loss_fn=loss_fn,
        num_classes=data.num_classes,
        optimizer=config.optimizer,
        optimizer_params=config.optimizer_params,
        lr_scheduler=config.lr_scheduler,
        lr_scheduler_params=config.lr_scheduler_params,
        meta=_checkpoint_meta(config, data, run).to_dict(),
    )
    num_params = count_parameters(net)
    log.info(
        "run %s: %s with %s trainable parameters, %d classes, %d train / %d validation images",
        run.name,
        config.architecture,
        f"{num_params:,}",
        data.num_classes,
        len(data.annotations["train"]),
        len(data.annotations["test"]),
    )
    metrics_csv = MetricsCSV(run.metrics_csv, resume_at=resume.next_epoch if resume else None)
    # ---- experiment trackers: Lightning loggers, started once the trainer exists
    trackers = build_trackers(config) if is_first_process() else []  # DDP: the first reports
    stopper = ConfiguredEarlyStopping(config.early_stopping_patience())
    signals = SignalStop()
    try:
        trainer = make_trainer(
            max_epochs=config.num_epochs,
            accelerator=config.accelerator,
            devices=config.devices,
            callbacks=[
                signals,  # first: it must see an epoch's end before the writers do
                metrics_csv,
                EpochLog(),  # one line per epoch, with progress bars or without
                *checkpoint_callbacks(run.checkpoints),
                stopper,
                FiniteLossGuard(),
                RandomState(),
                *head_first(config),  # freeze_epochs
                *([ResumedSettings(config, run_config)] if resume else []),
                *(callbacks or []),
            ],
            progress_bar=progress_bar,
            root_dir=run.path,
            plugins=[AtomicCheckpointIO()],
            loggers=trackers,
            precision=config.precision,  # speed
            num_nodes=config.num_nodes,
            strategy=config.strategy,
        )
    except UserError:
        if created:
            run.remove()  # nothing ran: leave no empty run behind
        raise
    # ---- interruptions and failures: a signal stops at once and keeps the
    # finished epochs; a failure a setting explains is a message naming it, not a traceback
    stopped_by: RunInterrupted | None = None
    start_trackers(
        trackers,
        config,
        run,
        num_params,
        detect_runtime(),
        resume_at=resume.next_epoch if resume else None,  # resume: the same tracker runs
    )
    try:
        with signals:
            trainer.fit(
                module,
                datamodule=data,
                ckpt_path=resume.checkpoint if resume else None,
                weights_only=True,
            )
            signals.raise_held()  # a signal during the last epoch's writes
    except (RunInterrupted, SIGTERMException) as signal_stop:
        stopped_by = as_interruption(signal_stop)
        if created and not metrics_csv.rows:
            run.remove()
    except BaseException as err:
        if created and not metrics_csv.rows:  # not one epoch finished: nothing worth keeping
            run.remove()
        if isinstance(err, torch.OutOfMemoryError):
            message = (
                f"the {trainer.strategy.root_device.type.upper()} ran out of memory with "
                f"batch_size {config.batch_size} and image_size {config.image_size}. Lower "
                f"batch_size (e.g. --set batch_size={max(1, config.batch_size // 2)}) or "
                "image_size."
            )
            kept = ""  # the fix is a setting: a resume would run out of memory again
        else:
            message = failure_message(err, trainer.current_epoch)
            kept = _what_was_kept(run, metrics_csv.rows)
        summary = None
        if run.path.is_dir() and trainer.is_global_zero:  # the kept epochs, and why they ended
            summary = summary_of(run, config, num_params, metrics_csv.rows, started, origin)
            summary["failed"] = message or f"{type(err).__name__}: {err}"
            run.write_summary(summary)
        finish_trackers(trackers, run if summary else None, summary, status="FAILED")
        if message is None:
            raise
        raise UserError(message + kept) from None
    if stopped_by is not None and not run.path.is_dir():
        finish_trackers(trackers, status="KILLED")
        raise StoppedEarly(
            f"stopped by {stopped_by.signal_name} before the first epoch finished; no run "
            "folder was kept.",
            exit_code=stopped_by.exit_code,
        )
    summary = summary_of(run, config, num_params, metrics_csv.rows, started, origin)
    summary.update(
        early_stopped=stopper.stopped_epoch > 0,
        interrupted=trainer.interrupted or stopped_by is not None,
    )
    if trainer.is_global_zero:
        run.write_summary(summary)
        finish_trackers(trackers, run, summary, "KILLED" if summary["interrupted"] else "FINISHED")
        _log_finish(run, summary)
    return RunResult(
        run=run, summary=summary, is_main=trainer.is_global_zero, stopped_by=stopped_by
    )


def summary_of(
    run: RunFolder,
    config: Config,
    num_params: int,
    rows: list[dict[str, Any]],
    started: float,
    origin: dict[str, Any],
) -> dict[str, Any]:
    """``summary.json`` of a run that ended normally: the epoch figures, its seed, where its
    weights came from (``origin``), tags and description; ``failed`` is set when it did not."""
    summary = summarize_run(
        run, config.architecture, num_params, rows, False, seconds=time.time() - started
    )
    summary["seed"] = config.seed
    summary.update(origin)
    summary["tags"], summary["description"] = list(config.tags), config.description
    summary["failed"] = None
    return summary


def _what_was_kept(run: RunFolder, rows: list[dict[str, Any]]) -> str:
    if not run.path.is_dir():
        return "; no epoch had finished, so no run folder was kept."
    return (
        f", then continue the run: the {len(rows)} finished epoch(s) and their checkpoints are "
        f"kept in '{run.path}' (python train.py --resume {run.path})."
    )


def _prepare_process(config: Config) -> None:
    quiet_lightning()
    pl.seed_everything(config.seed, workers=True, verbose=False)


def _share_cpu_with_loader_workers(config: Config, num_workers: int) -> None:
    """On the CPU, leave a core to each loader worker: torch's OpenMP threads spin while they
    wait, and competing with busy workers for the same cores slows training many times over."""
    if config.accelerator not in ("cpu", "auto") or torch.cuda.is_available():
        return
    threads = max(1, available_cpus() - num_workers)
    if threads < torch.get_num_threads():
        log.info(
            "training on the CPU with %d thread(s) beside %d loader worker(s)", threads, num_workers
        )
        torch.set_num_threads(threads)


def _checkpoint_meta(
    config: Config, data: StanfordCarsDataModule, run: RunFolder
) -> CheckpointMeta:
    return CheckpointMeta(
        architecture=config.architecture,
        num_classes=data.num_classes,
        class_names=list(data.class_names),
        preprocessing=config.preprocessing().to_dict(),
        arch_options=config.arch_options(),
        loss_function=config.loss_function,
        loss_params=dict(config.loss_params or {}),
        run_name=run.name,
    )


def summarize_run(
    run: RunFolder,
    architecture: str,
    num_params: int,
    rows: list[dict[str, Any]],
    early_stopped: bool,
    interrupted: bool = False,
    seconds: float = 0.0,
) -> dict[str, Any]:
    """The figures the thesis's dashboard showed per run, from the epoch rows."""

    def pick(key: str, fn):
        values = [r[key] for r in rows if r.get(key) not in ("", None)]
        return fn(values) if values else None

    best = min(
        (r for r in rows if r.get("valid_loss") not in ("", None)),
        key=lambda r: r["valid_loss"],
        default=None,
    )
    return {
        "run_name": run.name,
        "architecture": architecture,
        "num_params": num_params,
        "runtime": detect_runtime(),
        "epochs_run": len(rows),
        "early_stopped": bool(early_stopped),
        "interrupted": bool(interrupted),
        "best_epoch": best["epoch"] if best else None,
        "min_train_loss": pick("train_loss", min),
        "min_valid_loss": pick("valid_loss", min),
        "max_train_acc": pick("train_acc", max),
        "max_valid_acc": pick("valid_acc", max),
        "best_checkpoint": str(run.best_checkpoint),
        "duration_s": round(seconds, 1),
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
