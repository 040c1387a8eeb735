"""The LightningModule: it receives a built network and trains it with the configured
loss, optimizer and scheduler; metrics are torchmetrics objects per stage."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from models.checkpoint import META_KEY
from utils import names
from utils.configuration import build_scheduler

STAGES = ("train", "valid")


class NetModule(pl.LightningModule):
    """Trains ``net``; logs ``train_loss``, ``train_acc``, ``valid_loss``, ``valid_acc`` and ``lr``
    once per epoch. ``meta`` (see ``models.checkpoint.CheckpointMeta``) goes into every
    checkpoint so that it can be used alone later."""

    def __init__(
        self,
        net: nn.Module,
        loss_fn: nn.Module,
        num_classes: int,
        optimizer: str = "Adam",
        optimizer_params: dict[str, Any] | None = None,
        lr_scheduler: str | None = None,
        lr_scheduler_params: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.loss_fn = loss_fn
        self.optimizer_name = optimizer
        self.optimizer_params = dict(optimizer_params or {})
        self.scheduler_name = lr_scheduler
        self.scheduler_params = dict(lr_scheduler_params or {})
        self.meta = dict(meta or {})
        # ModuleDict keys may not shadow Module attributes such as ``train``.
        self.losses = nn.ModuleDict({_key(stage): MeanMetric() for stage in STAGES})
        self.accuracies = nn.ModuleDict(
            {
                _key(stage): MulticlassAccuracy(num_classes=num_classes, average="micro")
                for stage in STAGES
            }
        )
        # The last finished epoch's values, as plain floats, for the run's metrics.csv.
        self.epoch_metrics: dict[str, float] = {}
        self._epoch_lr: float | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _shared_step(self, batch, stage: str) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        loss = self.loss_fn(logits, labels)
        self.losses[_key(stage)].update(loss.detach(), weight=labels.shape[0])
        self.accuracies[_key(stage)].update(logits.detach(), labels)
        return loss

    def on_train_epoch_start(self) -> None:
        # Epoch-interval schedulers step before validation ends, so read this epoch's rate now.
        self._epoch_lr = float(self.trainer.optimizers[0].param_groups[0]["lr"])

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._shared_step(batch, "valid")

    def on_validation_epoch_end(self) -> None:
        # Validation runs at the end of every training epoch, after its last batch, so both
        # stages' values for this epoch are complete here.
        values: dict[str, float] = {}
        for stage in STAGES:
            loss_metric, acc_metric = self.losses[_key(stage)], self.accuracies[_key(stage)]
            if loss_metric.update_called:
                values[f"{stage}_loss"] = float(loss_metric.compute())
                values[f"{stage}_acc"] = float(acc_metric.compute())
                loss_metric.reset()
                acc_metric.reset()
        if self._epoch_lr is not None and self.trainer.state.fn == "fit":
            values["lr"] = self._epoch_lr
        # The values are already reduced over all processes by torchmetrics; sync_dist only
        # keeps Lightning's DDP bookkeeping quiet (a mean of equal numbers).
        self.log_dict(values, prog_bar=True, sync_dist=True)
        self.epoch_metrics = {"epoch": self.current_epoch, **values}

    def configure_optimizers(self):
        optimizer = names.resolve_optimizer(self.optimizer_name)(
            self.parameters(), **self.optimizer_params
        )
        if self.scheduler_name is None:
            return {"optimizer": optimizer}
        scheduler = build_scheduler(optimizer, self.scheduler_name, self.scheduler_params)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch", "monitor": "valid_loss"},
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[META_KEY] = dict(self.meta)


def _key(stage: str) -> str:
    return f"{stage}_stage"
