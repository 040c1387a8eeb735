"""One training run from a validated ``Config``: data, network, module, trainer, run folder
(see ``workflows.run_folder`` for what the folder holds)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from configuration import Config
from datasets.stanford_data_module import StanfordCarsDataModule
from models.arch_dict import build_network, count_parameters
from models.checkpoint import CheckpointMeta
from models.net_module import NetModule
from models.optimization import build_loss
from utils.errors import UserError
from utils.hardware import available_cpus, default_num_workers, detect_runtime
from utils.logger import quiet_lightning
from workflows.callbacks import MetricsCSV, checkpoint_callbacks, early_stopping, make_trainer
from workflows.preflight import preflight
from workflows.run_folder import RunFolder

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """Where a finished run's files are, and its summary."""

    run: RunFolder
    summary: dict[str, Any]
    is_main: bool = True  # False in the other processes of a multi-GPU (DDP) run

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
    return StanfordCarsDataModule(
        data_path or config.stanford_data_path,
        config.preprocessing(),
        config.augmentations(),
        batch_size=config.batch_size,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available() and config.accelerator in ("auto", "gpu", "cuda"),
    )


def run_training(config: Config, progress_bar: bool = True) -> RunResult:
    """Train the configured network; returns the run folder and its summary."""
    started = time.time()
    _prepare_process(config)
    data = build_datamodule(config)
    _share_cpu_with_loader_workers(config, data.num_workers)
    net = build_network(
        config.architecture, data.num_classes, config.img_channels, **config.arch_options()
    )
    loss_fn = build_loss(config.loss_function, config.loss_params)
    preflight(data, net, loss_fn, config.loss_function, config.architecture)
    pl.seed_everything(config.seed, workers=True, verbose=False)  # as if preflight never ran

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
    metrics_csv = MetricsCSV(run.metrics_csv)
    stopper = early_stopping(config.early_stopping_patience())
    try:
        trainer = make_trainer(
            max_epochs=config.num_epochs,
            accelerator=config.accelerator,
            devices=config.devices,
            callbacks=[metrics_csv, *checkpoint_callbacks(run.checkpoints), stopper],
            progress_bar=progress_bar,
            root_dir=run.path,
        )
    except UserError:
        run.remove()  # nothing ran: leave no empty run behind
        raise
    try:
        trainer.fit(module, datamodule=data)
    except BaseException as err:
        if not metrics_csv.rows:  # not one epoch finished: nothing worth keeping
            run.remove()
        if isinstance(err, torch.OutOfMemoryError):
            raise UserError(
                f"the {trainer.strategy.root_device.type.upper()} ran out of memory with "
                f"batch_size {config.batch_size} and image_size {config.image_size}. Lower "
                f"batch_size (e.g. --set batch_size={max(1, config.batch_size // 2)}) or "
                "image_size."
            ) from None
        raise
    summary = summarize_run(
        run,
        config.architecture,
        num_params,
        metrics_csv.rows,
        early_stopped=stopper.stopped_epoch > 0,
        interrupted=trainer.interrupted,
        seconds=time.time() - started,
    )
    if trainer.is_global_zero:
        run.write_summary(summary)
        _log_finish(run, summary)
    return RunResult(run=run, summary=summary, is_main=trainer.is_global_zero)


def _prepare_process(config: Config) -> None:
    quiet_lightning()
    pl.seed_everything(config.seed, workers=True, verbose=False)
    if config.log_to_neptune:
        log.warning(
            "log_to_neptune is set, but Neptune's hosted service shut down on 2026-03-05; "
            "nothing is sent there. Every metric is kept in the run folder's metrics.csv."
        )


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
        summary["min_valid_loss"] or float("nan"),
        summary["best_epoch"],
        summary["max_valid_acc"] or float("nan"),
        run.path,
    )
