"""One training run from a validated ``Config``: data, network, module, trainer, run folder.

Every run gets ``<output_path>/<architecture>_<YYYYmmddHHMMSS>/`` with ``config.yml`` (secrets
redacted), ``metrics.csv`` (one row per epoch), ``checkpoints/best.ckpt`` (lowest valid_loss),
``checkpoints/last.ckpt`` and ``summary.json``.
"""

from __future__ import annotations

import copy
import csv
import importlib.util
import io
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, EarlyStopping, ModelCheckpoint
from pytorch_lightning.utilities.exceptions import MisconfigurationException

from datasets.stanford_data_module import StanfordCarsDataModule
from models.arch_dict import build_network
from models.checkpoint import CheckpointMeta
from models.net_module import NetModule
from utils.configuration import Config, available_cpus, build_loss, default_num_workers
from utils.errors import UserError
from utils.files import write_json_atomic, write_text_atomic, write_yaml_atomic
from utils.logger import quiet_lightning

log = logging.getLogger(__name__)

METRIC_COLUMNS = ("epoch", "train_loss", "train_acc", "valid_loss", "valid_acc", "lr")
RUN_TIME_FORMAT = "%Y%m%d%H%M%S"
RUN_DIR_ENV = "CARS_RUN_DIR"


@dataclass
class RunResult:
    """Where a finished run's files are, and its summary."""

    run_dir: Path
    summary: dict[str, Any]
    is_main: bool = True  # False in the other processes of a multi-GPU (DDP) run

    @property
    def best_checkpoint(self) -> Path:
        return self.run_dir / "checkpoints" / "best.ckpt"

    @property
    def last_checkpoint(self) -> Path:
        return self.run_dir / "checkpoints" / "last.ckpt"

    @property
    def metrics_csv(self) -> Path:
        return self.run_dir / "metrics.csv"


class MetricsCSV(Callback):
    """Rewrites ``metrics.csv`` atomically after every epoch's validation."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[dict[str, Any]] = []

    def on_validation_end(self, trainer: pl.Trainer, pl_module: NetModule) -> None:
        if trainer.sanity_checking or not pl_module.epoch_metrics or trainer.global_rank != 0:
            return
        row = {key: pl_module.epoch_metrics.get(key, "") for key in METRIC_COLUMNS}
        self.rows = [r for r in self.rows if r["epoch"] != row["epoch"]] + [row]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=METRIC_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        write_text_atomic(self.path, buffer.getvalue())


def _joined_run_dir() -> Path | None:
    """In a DDP worker process (LOCAL_RANK > 0), the run folder its launcher made."""
    inherited = os.environ.get(RUN_DIR_ENV)
    if inherited and os.environ.get("LOCAL_RANK", "0") != "0" and Path(inherited).is_dir():
        return Path(inherited)
    return None


def detect_runtime() -> str:
    """``colab`` when running inside Google Colab, else ``local`` (as the thesis recorded it)."""
    try:
        return "colab" if importlib.util.find_spec("google.colab") is not None else "local"
    except (ImportError, ValueError):
        return "local"


def create_run_dir(output_path: str | Path, architecture: str, now: float | None = None) -> Path:
    """Make ``<output_path>/<architecture>_<YYYYmmddHHMMSS>``; a second run in the same second
    gets a ``_2`` (``_3``, ...) suffix instead of sharing the folder."""
    stamp = time.strftime(RUN_TIME_FORMAT, time.localtime(now))
    base = Path(output_path) / f"{architecture}_{stamp}"
    candidate, n = base, 1
    while True:
        try:
            base.parent.mkdir(parents=True, exist_ok=True)
            candidate.mkdir()
            return candidate
        except FileExistsError:
            if not base.parent.is_dir():
                _unwritable_output(base.parent, "it is a file")
            n += 1
            candidate = base.with_name(f"{base.name}_{n}")
        except OSError as err:
            _unwritable_output(base.parent, str(err))


def _unwritable_output(folder: Path, reason: str) -> None:
    raise UserError(
        f"key 'output_path': cannot create a run folder in '{folder}' ({reason}). Point "
        "output_path at a folder you can write to."
    )


def build_datamodule(config: Config, data_path: str | Path | None = None) -> StanfordCarsDataModule:
    """The data module a config describes."""
    norm = config.active_norm_params()
    num_workers = config.num_workers if config.num_workers is not None else default_num_workers()
    return StanfordCarsDataModule(
        data_path=data_path or config.stanford_data_path,
        batch_size=config.batch_size,
        num_workers=num_workers,
        image_size=config.image_size,
        convert_to_grayscale=config.convert_to_grayscale,
        normalize=config.normalize,
        normalization_params=norm.model_dump() if norm is not None else None,
        crop_to_bboxes=config.crop_to_bboxes,
        erase_background=config.erase_background,
        augment_images=config.augment_images,
        image_augmentations=config.image_augmentation_list(),
        augment_tensors=config.augment_tensors,
        tensor_augmentations=config.tensor_augmentation_list(),
        pin_memory=torch.cuda.is_available() and config.accelerator in ("auto", "gpu", "cuda"),
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


def _make_trainer(
    config: Config, callbacks: list, progress_bar: bool, root_dir: Path
) -> pl.Trainer:
    try:
        return pl.Trainer(
            max_epochs=config.num_epochs,
            accelerator=config.accelerator,
            devices=config.devices,
            callbacks=callbacks,
            logger=False,
            num_sanity_val_steps=0,
            enable_progress_bar=progress_bar,
            enable_model_summary=False,
            default_root_dir=root_dir,
        )
    except (MisconfigurationException, ValueError, RuntimeError, TypeError) as err:
        raise UserError(
            f"accelerator '{config.accelerator}' with devices {config.devices!r} cannot be used "
            f"on this machine ({err}). Set accelerator: auto (a GPU when there is one, else the "
            "CPU) and devices: auto, or name devices this machine has."
        ) from None


def preflight(config: Config, data: StanfordCarsDataModule, net: torch.nn.Module, loss_fn) -> None:
    """Run two training images and one validation image through their transforms, and one
    training step on a copy of the network, so that a setting that cannot work (a tensor
    transform among the image augmentations, an image too small for the architecture, a loss
    that does not take class labels) stops the run at once with a message, before any folder
    is made."""
    data.setup("fit")
    train_set, valid_set = data.train_dataset, data.valid_dataset
    samples = []
    for dataset, index, keys in (
        (train_set, 0, "image_augmentations / tensor_augmentations / crop_to_bboxes"),
        (
            train_set,
            len(train_set) - 1,
            "image_augmentations / tensor_augmentations / crop_to_bboxes",
        ),
        (valid_set, 0, "image_size / normalization"),
    ):
        try:
            samples.append(dataset[index])
        except UserError:
            raise
        except Exception as err:
            raise UserError(
                f"the {dataset.split} transforms fail on '{dataset.samples[index].fname}' "
                f"({type(err).__name__}: {err}). Check {keys}: image augmentations get PIL "
                "images (before ToTensor), tensor augmentations get tensors (after it)."
            ) from None
    images = torch.stack([image for image, _ in samples[:2]])
    labels = torch.tensor([label for _, label in samples[:2]])
    probe = copy.deepcopy(net).train()
    try:
        loss = loss_fn(probe(images), labels)
        loss.backward()
    except Exception as err:
        raise UserError(
            f"one training step of '{config.architecture}' on {list(images.shape[-2:])} images "
            f"with {config.loss_function} fails ({type(err).__name__}: {err}). Check image_size "
            "(227x227 suits every architecture) and loss_function (it must take logits and "
            "class indices, like CrossEntropyLoss or LabelSmoothingCrossEntropy)."
        ) from None


def count_parameters(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def run_training(config: Config, progress_bar: bool = True) -> RunResult:
    """Train the configured network; returns the run folder and its summary."""
    started = time.time()
    quiet_lightning()
    pl.seed_everything(config.seed, workers=True, verbose=False)
    if config.log_to_neptune:
        log.warning(
            "log_to_neptune is set, but Neptune's hosted service shut down on 2026-03-05; "
            "nothing is sent there. Every metric is kept in the run folder's metrics.csv."
        )
    data = build_datamodule(config)
    _share_cpu_with_loader_workers(config, data.num_workers)
    net = build_network(
        config.architecture, data.num_classes, config.img_channels, **config.arch_options()
    )
    loss_fn = build_loss(config.loss_function, config.loss_params)
    preflight(config, data, net, loss_fn)
    pl.seed_everything(config.seed, workers=True, verbose=False)  # as if preflight never ran
    num_params = count_parameters(net)
    norm = config.active_norm_params()
    meta = CheckpointMeta(
        architecture=config.architecture,
        num_classes=data.num_classes,
        class_names=list(data.class_names),
        image_size=list(config.image_size),
        grayscale=config.convert_to_grayscale,
        normalize=config.normalize,
        mean=list(norm.mean) if (norm and config.normalize) else [0.0] * config.img_channels,
        std=list(norm.std) if (norm and config.normalize) else [1.0] * config.img_channels,
        arch_options=config.arch_options(),
    )
    run_dir = _joined_run_dir()
    if run_dir is None:
        run_dir = create_run_dir(config.output_path, config.architecture)
        write_yaml_atomic(run_dir / "config.yml", config.to_public_dict())
        # Lightning's DDP launcher starts the other ranks by running the same command again;
        # they find the run folder here instead of making one of their own.
        os.environ[RUN_DIR_ENV] = str(run_dir)
    meta.run_name = run_dir.name
    module = NetModule(
        net=net,
        loss_fn=loss_fn,
        num_classes=data.num_classes,
        optimizer=config.optimizer,
        optimizer_params=config.optimizer_params,
        lr_scheduler=config.lr_scheduler,
        lr_scheduler_params=config.lr_scheduler_params,
        meta=meta.to_dict(),
    )
    log.info(
        "run %s: %s with %s trainable parameters, %d classes, %d train / %d validation images",
        run_dir.name,
        config.architecture,
        f"{num_params:,}",
        data.num_classes,
        len(data.annotations["train"]),
        len(data.annotations["test"]),
    )
    checkpoint = ModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="best",
        monitor="valid_loss",
        mode="min",
        save_top_k=1,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    # Lightning's save_last only follows saves of the best; this one writes every epoch.
    last = ModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="last",
        monitor=None,
        save_top_k=1,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    patience = config.early_stopping_patience()
    early_stopping = EarlyStopping(
        monitor="valid_loss", mode="min", min_delta=0.0, patience=patience
    )
    metrics_csv = MetricsCSV(run_dir / "metrics.csv")
    try:
        trainer = _make_trainer(
            config,
            callbacks=[metrics_csv, checkpoint, last, early_stopping],
            progress_bar=progress_bar,
            root_dir=run_dir,
        )
    except UserError:
        shutil.rmtree(run_dir, ignore_errors=True)  # nothing ran: leave no empty run behind
        raise
    try:
        trainer.fit(module, datamodule=data)
    except BaseException as err:
        if not metrics_csv.rows:  # not one epoch finished: nothing worth keeping
            shutil.rmtree(run_dir, ignore_errors=True)
        if isinstance(err, torch.OutOfMemoryError):
            raise UserError(
                f"the {trainer.strategy.root_device.type.upper()} ran out of memory with "
                f"batch_size {config.batch_size} and image_size {config.image_size}. Lower "
                f"batch_size (e.g. --set batch_size={max(1, config.batch_size // 2)}) or "
                "image_size."
            ) from None
        raise
    summary = summarize_run(
        run_dir,
        config,
        num_params,
        metrics_csv.rows,
        early_stopping.stopped_epoch > 0,
        interrupted=trainer.interrupted,
        seconds=time.time() - started,
    )
    if trainer.is_global_zero:
        write_json_atomic(run_dir / "summary.json", summary)
        log.info(
            "run %s finished after %d epoch(s): best valid_loss %.4f at epoch %s, max valid_acc %.4f; "
            "files in %s",
            run_dir.name,
            summary["epochs_run"],
            summary["min_valid_loss"] or float("nan"),
            summary["best_epoch"],
            summary["max_valid_acc"] or float("nan"),
            run_dir,
        )
    return RunResult(run_dir=run_dir, summary=summary, is_main=trainer.is_global_zero)


def summarize_run(
    run_dir: Path,
    config: Config,
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
        "run_name": run_dir.name,
        "architecture": config.architecture,
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
        "best_checkpoint": str(run_dir / "checkpoints" / "best.ckpt"),
        "duration_s": round(seconds, 1),
    }
