"""Everything one training run needs, built from a validated ``Config`` in one pass: the
launch, the data module, the network (fine-tuned from ``init_from``, or to be resumed), the
``NetModule``, the run folder (locked), the trackers, the callbacks and the Trainer."""

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
from models.speed import prepare_network
from utils.hardware import available_cpus, detect_runtime, usable_workers
from utils.logger import drop_lightning_noise
from workflows.runs.launch import Launch
from workflows.runs.metrics import MetricsCSV
from workflows.runs.run_folder import RunFolder, RunLock
from workflows.tracking.trackers import build_trackers
from workflows.training.callbacks import ConfiguredEarlyStopping, checkpoint_callbacks, make_trainer
from workflows.training.checkpoint_io import AtomicCheckpointIO
from workflows.training.epoch_log import EpochLog
from workflows.training.failures import FiniteLossGuard
from workflows.training.fine_tuning import head_first, output_layer, resolve_init_from
from workflows.training.interruptions import SignalStop
from workflows.training.lifecycle import LifeCycle
from workflows.training.preflight import preflight
from workflows.training.resume import RandomState, ResumedSettings, ResumePoint, check_resumable

log = logging.getLogger(__name__)


@dataclass
class Assembly:
    """A run ready to fit."""

    launch: Launch
    data: StanfordCarsDataModule
    module: NetModule
    trainer: pl.Trainer
    run: RunFolder
    lifecycle: LifeCycle
    checkpoint: Path | None  # the checkpoint a resumed run goes on from
    lock: RunLock | None  # the run folder's, held by the first process

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()


def assemble(
    config: Config,
    signals: SignalStop,
    progress_bar: bool = True,
    resume: ResumePoint | None = None,
    callbacks: list[pl.Callback] | None = None,
) -> Assembly:
    """Build the run ``config`` describes, or the continuation of ``resume``; nothing is
    written before the run folder is made (a resume writes nothing before training starts)."""
    started = time.time()
    launch = Launch.resolve()
    config = config.model_copy(update={"seed": launch.seed(config)})  # recorded in config.yml
    parts = _parts(config, resume)
    config, data = parts.config, parts.data
    # ---- the run folder: the resumed run's (checked first), else a new one
    if resume is not None:
        run, created = resume.run, False
    else:
        run, created = launch.run_folder(config.output_path, config.architecture)
    meta = _checkpoint_meta(config, data, run)
    if resume is not None:
        check_resumable(resume, config, meta, run.read_config())
    lock = None
    try:
        lock = run.claim() if launch.first else None
        module = NetModule(
            net=parts.net,
            loss_fn=parts.loss_fn,
            num_classes=data.num_classes,
            optimizer=config.optimizer,
            optimizer_params=config.optimizer_params,
            lr_scheduler=config.lr_scheduler,
            lr_scheduler_params=config.lr_scheduler_params,
            meta=meta.to_dict(),
        )
        _log_start(run, config, data, parts.facts["num_params"])
        lifecycle = LifeCycle(
            config,
            launch,
            run,
            created,
            MetricsCSV(
                run.metrics_csv, resume_at=resume.next_epoch if resume else None, write=launch.first
            ),
            build_trackers(config) if launch.first else [],  # DDP: the first process reports
            parts.facts,
            previous=resume.summary if resume else None,
            resume_at=resume.next_epoch if resume else None,
            started=started,
        )
        extra = [*head_first(config, parts.head), *(callbacks or [])]  # freeze_epochs
        if resume is not None:
            extra.insert(0, ResumedSettings(config, run.read_config(), resume))
        trainer = _trainer(config, run, signals, lifecycle, extra, progress_bar)
    except BaseException:
        if lock is not None:
            lock.release()
        if created:
            run.remove()  # nothing ran: leave no empty run behind
        raise
    checkpoint = resume.checkpoint if resume else None
    return Assembly(launch, data, module, trainer, run, lifecycle, checkpoint, lock)


@dataclass
class _Parts:
    config: Config  # completed from init_from's checkpoint when fine-tuning
    data: StanfordCarsDataModule
    net: torch.nn.Module
    loss_fn: torch.nn.Module
    head: set[str]  # the output layer's weights, when fine-tuning
    facts: dict[str, Any]  # what summary.json says of the run besides its epochs


def _parts(config: Config, resume: ResumePoint | None) -> _Parts:
    """The data, the network (its weights from init_from's checkpoint when fine-tuning; a
    resumed run's come from its own checkpoint), the loss, checked by one dry run."""
    start = None
    if resume is None:  # fine-tuning: the architecture and preprocessing of init_from's
        config, start = resolve_init_from(config)
    drop_lightning_noise()
    pl.seed_everything(config.seed, workers=True, verbose=False)
    data = build_datamodule(config)
    _share_cpu_with_loader_workers(config, data.num_workers)
    net = build_network(
        config.architecture, data.num_classes, config.img_channels, **config.arch_options()
    )
    head = output_layer(config) if start or config.freeze_epochs else set()
    # the number of classes tells runs on other data apart in a comparison
    origin = {"num_classes": data.num_classes} | (resume.origin if resume else {})
    if start is not None:
        transfer = start.initialise(net, data.class_names, head)
        origin |= {
            "init_from": str(start.path),
            "init_from_weights": transfer.as_dict(),
            "freeze_epochs": config.freeze_epochs,
        }
    loss_fn = build_loss(config.loss_function, config.loss_params)
    preflight(data, net, loss_fn, config.loss_function, config.architecture)
    facts = {
        "architecture": config.architecture,
        "num_params": count_parameters(net),
        "runtime": detect_runtime(),
        "seed": config.seed,
        "origin": origin,
        "tags": list(config.tags),
        "description": config.description,
    }
    net = prepare_network(net, config.channels_last, config.compile, config.compile_mode)  # speed
    return _Parts(config, data, net, loss_fn, head, facts)


def _trainer(
    config: Config,
    run: RunFolder,
    signals: SignalStop,
    lifecycle: LifeCycle,
    extra: list[pl.Callback],
    progress_bar: bool,
) -> pl.Trainer:
    return make_trainer(
        max_epochs=config.num_epochs,
        accelerator=config.accelerator,
        devices=config.devices,
        callbacks=[
            signals,  # first: it must see an epoch's end before the writers do
            lifecycle.metrics,
            *checkpoint_callbacks(run.checkpoints),
            ConfiguredEarlyStopping(config.early_stopping_patience()),
            FiniteLossGuard(),
            lifecycle.loading,
            RandomState(),
            # one line per epoch, with progress bars or without
            EpochLog(write=lifecycle.launch.first),
            *extra,
            lifecycle,  # last: it ends the run once the others are done
        ],
        progress_bar=progress_bar,
        root_dir=run.path,
        plugins=[AtomicCheckpointIO()],
        loggers=lifecycle.trackers,
        precision=config.precision,  # speed
        num_nodes=config.num_nodes,
        strategy=config.strategy,
    )


def build_datamodule(config: Config, data_path: str | Path | None = None) -> StanfordCarsDataModule:
    """The data module a config describes."""
    num_workers, lowered = usable_workers(config.num_workers)  # never more than the CPUs
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


def _log_start(run: RunFolder, config: Config, data: StanfordCarsDataModule, params: int) -> None:
    log.info(
        "run %s: %s with %s trainable parameters, %d classes, %d train / %d validation images",
        run.name,
        config.architecture,
        f"{params:,}",
        data.num_classes,
        len(data.annotations["train"]),
        len(data.annotations["test"]),
    )
