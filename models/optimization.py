"""What trains a network, by config name: optimizers, learning-rate schedulers and losses.

Each name resolves through a table of the classes of one kind (``torch.optim``,
``torch.optim.lr_scheduler``, the ``torch.nn`` losses plus ``LabelSmoothingCrossEntropy``);
``lr_lambda`` strings go through the arithmetic-only parser, never through ``eval``.
"""

from __future__ import annotations

import inspect
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


# ---- resuming with other learning-rate settings -----------------------------------------
# Scheduler entries that record progress or are set from the learning rate, which
# ``carry_over_settings`` scales instead of replacing.
_SCHEDULER_PROGRESS = {
    "base_lrs",
    "_last_lr",
    "last_epoch",
    "_step_count",
    "_is_initial",
    "_get_lr_called_within_step",
}
_SCALED_WITH_LR = ("lr", "initial_lr")


def carry_over_settings(
    optimizer_state: dict[str, Any],
    scheduler_state: dict[str, Any] | None,
    optimizer: str,
    old_params: dict[str, Any] | None,
    new_params: dict[str, Any] | None,
    scheduler: str | None = None,
    old_scheduler_params: dict[str, Any] | None = None,
    new_scheduler_params: dict[str, Any] | None = None,
) -> list[str]:
    """Make a saved optimizer (and scheduler) state go on with the new settings, in place.

    What differs between the optimizer built with ``old_params`` and with ``new_params``
    replaces the saved value, except the learning rate: the saved one, which the scheduler
    may have lowered since, is scaled by new / old, so a schedule goes on from where it was at
    the new rate. Scheduler settings that differ (a gamma, milestones, a patience) replace
    the saved ones the same way; its progress is kept. Returns the names that changed.
    """
    groups = optimizer_state["param_groups"]
    old_opt = _fresh_optimizer(optimizer, old_params, len(groups))
    new_opt = _fresh_optimizer(optimizer, new_params, len(groups))
    changed: list[str] = []
    old_lr, new_lr = old_opt.param_groups[0]["lr"], new_opt.param_groups[0]["lr"]
    if old_lr != new_lr:
        changed.append("lr")
        for group in groups:
            for key in _SCALED_WITH_LR:
                if key in group:
                    group[key] = _rescaled(group[key], old_lr, new_lr)
        if scheduler_state is not None:
            for key in ("base_lrs", "_last_lr"):
                if key in scheduler_state:
                    scheduler_state[key] = [
                        _rescaled(lr, old_lr, new_lr) for lr in scheduler_state[key]
                    ]
    for key, value in new_opt.param_groups[0].items():
        if key in ("params", *_SCALED_WITH_LR) or old_opt.param_groups[0].get(key) == value:
            continue
        changed.append(key)
        for group in groups:
            group[key] = value
    if scheduler is None or scheduler_state is None:
        return changed
    old_sched = build_scheduler(old_opt, scheduler, old_scheduler_params).state_dict()
    new_sched = build_scheduler(new_opt, scheduler, new_scheduler_params).state_dict()
    for key, value in new_sched.items():
        if key not in _SCHEDULER_PROGRESS and not _same(old_sched.get(key), value):
            changed.append(key)
            scheduler_state[key] = value
    return changed


def _fresh_optimizer(name: str, params: dict[str, Any] | None, groups: int):
    dummies = [{"params": [nn.Parameter(torch.zeros(1))]} for _ in range(groups)]
    return build_optimizer(dummies, name, params)


def _rescaled(lr: float, old: float, new: float) -> float:
    return new if old == 0 else lr * new / old


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except (RuntimeError, TypeError, ValueError):  # e.g. tensors of other shapes
        return False
