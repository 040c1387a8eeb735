"""What trains a network, by config name: optimizers, learning-rate schedulers and losses.

Each name resolves through a table of the classes of one kind (``torch.optim``,
``torch.optim.lr_scheduler``, the ``torch.nn`` losses plus ``LabelSmoothingCrossEntropy``);
``lr_lambda`` strings go through the arithmetic-only parser, never through ``eval``.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Iterable
from functools import cache
from typing import Any

import torch
from torch import nn

from models.label_smoothing_ce import LabelSmoothingCrossEntropy
from utils.lr_lambda import LambdaSyntaxError, parse_lr_lambda
from utils.names import classes_in, resolve

LAMBDA_SCHEDULERS = ("LambdaLR", "MultiplicativeLR")
# Schedulers that wrap other schedulers: their arguments cannot come from YAML.
_NON_CONFIGURABLE_SCHEDULERS = ("SequentialLR", "ChainedScheduler", "LRScheduler")


class ScheduleFailed(Exception):
    """The scheduler failed when stepped after ``epoch`` (``__cause__`` says how)."""

    def __init__(self, epoch: int, err: BaseException) -> None:
        text = (str(err).strip().splitlines() or [""])[0][:200]
        super().__init__(f"{type(err).__name__}: {text}")
        self.epoch = epoch


@cache
def optimizers() -> dict[str, type]:
    return classes_in(torch.optim, torch.optim.Optimizer)


@cache
def schedulers() -> dict[str, type]:
    found = classes_in(
        torch.optim.lr_scheduler, torch.optim.lr_scheduler.LRScheduler, _NON_CONFIGURABLE_SCHEDULERS
    )
    found["ReduceLROnPlateau"] = torch.optim.lr_scheduler.ReduceLROnPlateau
    return found


@cache
def losses() -> dict[str, type]:
    found = classes_in(nn, nn.modules.loss._Loss)
    found["LabelSmoothingCrossEntropy"] = LabelSmoothingCrossEntropy
    return found


def resolve_optimizer(name: str) -> type:
    """A class from torch.optim."""
    return resolve(name, optimizers(), "an optimizer in torch.optim")


def resolve_scheduler(name: str) -> type:
    """A class from torch.optim.lr_scheduler."""
    return resolve(name, schedulers(), "a scheduler in torch.optim.lr_scheduler")


def resolve_loss(name: str) -> type:
    """A loss class from torch.nn, or LabelSmoothingCrossEntropy."""
    return resolve(name, losses(), "a loss in torch.nn (or LabelSmoothingCrossEntropy)")


def build_optimizer(
    parameters: Iterable[nn.Parameter], name: str, params: dict[str, Any] | None
) -> torch.optim.Optimizer:
    """Instantiate an optimizer by name over ``parameters``."""
    return resolve_optimizer(name)(parameters, **dict(params or {}))


def build_scheduler(optimizer: torch.optim.Optimizer, name: str, params: dict[str, Any] | None):
    """Instantiate a scheduler by name; ``lr_lambda`` strings go through the safe parser."""
    params = dict(params or {})
    cls = resolve_scheduler(name)
    if name in LAMBDA_SCHEDULERS and "lr_lambda" in params:
        try:
            params["lr_lambda"] = parse_lr_lambda(params["lr_lambda"])
        except LambdaSyntaxError as err:
            raise ValueError(f"lr_lambda {params['lr_lambda']!r} rejected: {err}") from None
    inspect.signature(cls).bind(optimizer, **params)  # TypeError names a wrong parameter
    return cls(optimizer, **params)


def build_loss(name: str, params: dict[str, Any] | None) -> nn.Module:
    """Instantiate a loss by name with its params."""
    return resolve_loss(name)(**dict(params or {}))


# ---- resuming with other learning-rate settings (timm's way) ------------------------------
def changed_settings(old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
    """The keys whose values differ between two settings mappings, the new one's first."""
    old, new = dict(old or {}), dict(new or {})
    return [key for key in dict.fromkeys([*new, *old]) if old.get(key) != new.get(key)]


def group_settings(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The hyperparameters of the optimizer's first parameter group (lr, weight_decay, ...)."""
    return {k: v for k, v in optimizer.param_groups[0].items() if k not in ("params", "initial_lr")}


def resume_with(
    optimizer: torch.optim.Optimizer,
    settings: dict[str, Any],
    scheduler: str | None,
    scheduler_params: dict[str, Any] | None,
    epochs: int,
    metrics: list[float] = (),
):
    """Go on with other settings: every parameter group takes ``settings`` (see
    ``group_settings``) and keeps its per-weight state (moments, step counts); the scheduler is
    built from the current arguments and stepped through the ``epochs`` epochs already trained
    (``metrics``: their monitored values, for ReduceLROnPlateau), as if the run had had it from
    its start. Returns that scheduler; None without one."""
    for group in optimizer.param_groups:
        group.update(settings)
        group["initial_lr"] = settings["lr"]
    if scheduler is None:
        return None
    built = build_scheduler(optimizer, scheduler, scheduler_params)
    plateau = isinstance(built, torch.optim.lr_scheduler.ReduceLROnPlateau)
    with warnings.catch_warnings():  # "scheduler stepped before the optimizer": on purpose
        warnings.simplefilter("ignore", UserWarning)
        for epoch in range(epochs):
            built.step(metrics[epoch]) if plateau else built.step()
    return built
