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
