"""The LightningModule: it receives a built network and trains it with the configured
loss, optimizer and scheduler; metrics are torchmetrics objects per stage."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from models.checkpoint import META_KEY
from models.optimization import ScheduleFailed, build_optimizer, build_scheduler

STAGES = ("train", "valid", "test")
TOP_K = 5


class NetModule(pl.LightningModule):
    """Trains ``net``; logs ``train_loss``, ``train_acc``, ``valid_loss``, ``valid_acc`` and ``lr``
    once per epoch. ``meta`` (see ``models.checkpoint.CheckpointMeta``) goes into every
    checkpoint so that it can be used alone later.

    Testing (``trainer.test``) runs the validation step and also collects top-5 accuracy and
    the confusion matrix; ``test_results`` holds them afterwards.
    """

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
        self.top_k = min(TOP_K, num_classes)
        # ModuleDict keys may not shadow Module attributes such as ``train``.
        self.losses = nn.ModuleDict({_key(stage): BatchMean() for stage in STAGES})
        self.scores = nn.ModuleDict(
            {_key(stage): _stage_scores(stage, num_classes, self.top_k) for stage in STAGES}
        )
        # The last finished epoch's values, as plain floats, for the run's metrics.csv.
        self.epoch_metrics: dict[str, float] = {}
        self.test_results: dict[str, Any] = {}
        self._epoch_lr: float | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _shared_step(self, batch, stage: str) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        loss = self.loss_fn(logits, labels)
        self.losses[_key(stage)].update(loss.detach(), labels.shape[0])
        self.scores[_key(stage)].update(logits.detach(), labels)
        return loss

    def on_train_epoch_start(self) -> None:
        # Epoch-interval schedulers step before validation ends, so read this epoch's rate now.
        self._epoch_lr = float(self.trainer.optimizers[0].param_groups[0]["lr"])

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._shared_step(batch, "valid")

    def test_step(self, batch, batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def _compute(self, stage: str) -> dict[str, Any]:
        loss_metric, scores = self.losses[_key(stage)], self.scores[_key(stage)]
        if not loss_metric.update_called:
            return {}
        values = {"loss": float(loss_metric.compute())}
        values.update(scores.compute())
        loss_metric.reset()
        scores.reset()
        return values

    def on_validation_epoch_end(self) -> None:
        # Validation runs at the end of every training epoch, after its last batch, so both
        # stages' values for this epoch are complete here.
        values: dict[str, float] = {}
        for stage in ("train", "valid"):
            computed = self._compute(stage)
            if computed:
                values[f"{stage}_loss"] = computed["loss"]
                values[f"{stage}_acc"] = float(computed["acc"])
        if self._epoch_lr is not None and self.trainer.state.fn == "fit":
            values["lr"] = self._epoch_lr
        # The values are already reduced over all processes by torchmetrics; sync_dist only
        # keeps Lightning's DDP bookkeeping quiet (a mean of equal numbers).
        self.log_dict(values, prog_bar=True, sync_dist=True)
        self.epoch_metrics = {"epoch": self.current_epoch, **values}

    def on_test_epoch_end(self) -> None:
        computed = self._compute("test")
        self.test_results = {
            "loss": computed["loss"],
            "top1": float(computed["acc"]),
            "top5": float(computed["top_k"]),
            "top5_k": self.top_k,
            "confusion": computed["confusion"].cpu().long(),
        }

    def configure_optimizers(self):
        # Frozen weights (fine-tuning's freeze_epochs) join the optimizer when they are unfrozen.
        trainable = [p for p in self.parameters() if p.requires_grad]
        optimizer = build_optimizer(trainable, self.optimizer_name, self.optimizer_params)
        if self.scheduler_name is None:
            return {"optimizer": optimizer}
        scheduler = build_scheduler(optimizer, self.scheduler_name, self.scheduler_params)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch", "monitor": "valid_loss"},
        }

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        """Lightning's step, with a failure raised as ``ScheduleFailed`` (the config check at
        load time steps the schedule already; this names the stage should one slip past it)."""
        try:
            super().lr_scheduler_step(scheduler, metric)
        except Exception as err:
            raise ScheduleFailed(self.current_epoch, err) from err

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[META_KEY] = dict(self.meta)


class BatchMean(Metric):
    """The mean of per-batch mean values weighted by batch size, over all processes.

    Unlike ``MeanMetric``, whose NaN check reads a value back from the device every step, it
    never waits for the GPU: a training step that waits cannot queue the next one's kernels
    while the GPU works, and GhostNet's many small kernels make that wait a large part of a step.
    A NaN stays a NaN (and shows in the logged loss)."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, value: torch.Tensor, n: int) -> None:
        self.total += value.detach().float() * n
        self.count += n

    def compute(self) -> torch.Tensor:
        return self.total / self.count


def _key(stage: str) -> str:
    return f"{stage}_stage"


def _stage_scores(stage: str, num_classes: int, top_k: int) -> MetricCollection:
    # Checking the labels each step waits for the GPU (see BatchMean); the labels CSVs were
    # checked when they were read, and evaluation checks them before testing.
    checked = stage == "test"
    scores = {
        "acc": MulticlassAccuracy(num_classes=num_classes, average="micro", validate_args=checked)
    }
    if stage == "test":
        scores["top_k"] = MulticlassAccuracy(num_classes=num_classes, top_k=top_k, average="micro")
        scores["confusion"] = MulticlassConfusionMatrix(num_classes=num_classes)
    # compute_groups would merge top-1 and top-k whenever their first batches agree.
    return MetricCollection(scores, compute_groups=False)
