"""The ``epoch/*`` rows of benchmarks/run.py (CUDA only): one epoch of training + validation
through Lightning, the thesis's input path vs the fast ones."""

from __future__ import annotations

import time
from pathlib import Path

import pytorch_lightning as pl
import torch

from benchmarks.common import Rows, sync
from datasets.stanford_data_module import StanfordCarsDataModule
from models.arch_dict import build_network
from models.net_module import NetModule
from models.optimization import build_loss
from models.speed import prepare_network


class EpochTimer(pl.Callback):
    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        sync(pl_module.device)
        self._start = time.perf_counter()

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            sync(pl_module.device)
            self.seconds.append(time.perf_counter() - self._start)


# The fast input path: the image cache, augmentation on the device.
FAST = {"cache": True, "device_augment": True}


def epoch_seconds(
    data: Path,
    config,
    workers: int,
    epochs: int,
    cache: bool = False,
    device_augment: bool = False,
    channels_last: bool = False,
    cache_on_device: bool = False,
    compile_mode: str | None = None,
    valid_batch_size: int | None = None,
) -> float:
    """The last of ``epochs`` epochs (training + validation), after worker start-up, the
    cache's copy to the device and any compilation in the first one. ``compile_mode`` None:
    no torch.compile."""
    module = StanfordCarsDataModule(
        data,
        config.preprocessing(),
        config.augmentations(),
        batch_size=config.batch_size,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        cache_images=cache,
        augment_on="device" if device_augment else "cpu",
        channels_last=channels_last,
        progress=False,
        cache_on_device=cache_on_device,
        valid_batch_size=valid_batch_size,
    )
    if compile_mode is not None:
        torch.compiler.reset()
    net = build_network("ghost", module.num_classes, 3, **config.arch_options())
    net = prepare_network(net, channels_last, compile_mode is not None, compile_mode or "default")
    model = NetModule(
        net=net,
        loss_fn=build_loss(config.loss_function, config.loss_params),
        num_classes=module.num_classes,
        optimizer=config.optimizer,
        optimizer_params=config.optimizer_params,
        lr_scheduler=None,
    )
    timer = EpochTimer()
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="gpu" if torch.cuda.is_available() else "cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[timer],
    )
    trainer.fit(model, datamodule=module)
    torch.backends.cudnn.benchmark = False
    return timer.seconds[-1]


def bench_epoch(rows: Rows, data: Path, config, workers: int, compile: bool, images: int) -> None:
    """The thesis's path vs fast paths (cache + device augmentation, with or without
    channels_last, cache_on_device, a larger validation batch and compile), most telling
    first. The thesis's path has nothing to amortise: one epoch, worker start-up included; the
    fast ones are timed on their second epoch (the first builds the cache, copies it to the
    device, compiles)."""
    unit = f"s/epoch ({images} img)"

    def row(name: str, baseline: float, epochs: int = 2, workers: int = workers, **options):
        try:
            value = epoch_seconds(data, config, workers, epochs, **options)
        except Exception as err:  # e.g. CUDA graphs refusing the step: the other rows go on
            print(f"epoch/{name}: failed ({type(err).__name__}: {err})", flush=True)
            return None
        rows.add(f"epoch/{name}", baseline, value, unit, False)
        return value

    thesis = epoch_seconds(data, config, workers, 1)
    fast = row(f"fast vs thesis ({workers} workers)", thesis, **FAST, channels_last=True)
    row(f"fast without channels_last vs thesis ({workers} workers)", thesis, **FAST)
    gathered = {**FAST, "cache_on_device": True}
    row("fast + cache_on_device (no workers) vs thesis", thesis, **gathered)
    row(
        "fast + cache_on_device + valid_batch_size 256 vs thesis",
        thesis,
        **gathered,
        valid_batch_size=256,
    )
    if compile:
        row(
            "fast + cache_on_device + compile reduce-overhead vs thesis",
            thesis,
            **gathered,
            compile_mode="reduce-overhead",
        )
    if fast is not None:
        fast2 = row(
            f"fast, 2 workers vs {workers} workers", fast, workers=2, **FAST, channels_last=True
        )
        if fast2 is not None:
            thesis2 = epoch_seconds(data, config, 2, 1)
            rows.add("epoch/fast vs thesis (2 workers)", thesis2, fast2, unit, False)
    if compile:
        row(
            f"fast+compile vs thesis ({workers} workers)",
            thesis,
            **FAST,
            channels_last=True,
            compile_mode="default",
        )
