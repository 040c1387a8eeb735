"""Resolve names from the config to the one kind of object each must be.

Nothing from the config is run as code: a name is looked up as an attribute of one module and
accepted only when it is a class of the expected kind (an optimizer, a scheduler, a loss, a
torchvision transform). Errors carry the closest valid name.
"""

from __future__ import annotations

import difflib
import enum
import inspect
from functools import cache

import torch
import torchvision.transforms as T

# Transforms whose parameters are other transforms, callables, tensors or dtypes: they cannot
# come from YAML.
_NON_CONFIGURABLE_TRANSFORMS = {
    "Compose",
    "RandomApply",
    "RandomChoice",
    "RandomOrder",
    "Lambda",
    "LinearTransformation",
    "ConvertImageDtype",
}
# Schedulers that wrap other schedulers.
_NON_CONFIGURABLE_SCHEDULERS = {"SequentialLR", "ChainedScheduler", "LRScheduler", "_LRScheduler"}


class NameError_(ValueError):
    """A config name that does not resolve; the message lists the closest valid name."""


def closest(name: str, options) -> str:
    """A hint like " (did you mean 'AdamW'?)", or a short list of valid names."""
    options = sorted(options)
    lowered = {o.lower(): o for o in options}
    if str(name).lower() in lowered:  # a wrong case is the likeliest typo
        match = [lowered[str(name).lower()]]
    else:
        match = difflib.get_close_matches(str(name), options, n=1, cutoff=0.5)
    if match:
        return f"did you mean '{match[0]}'?"
    return "valid names: " + ", ".join(options)


def _classes(module, base: type, exclude=()) -> dict[str, type]:
    found = {}
    for attr in dir(module):
        if attr.startswith("_") or attr in exclude:
            continue
        obj = getattr(module, attr)
        if inspect.isclass(obj) and issubclass(obj, base) and obj is not base:
            found[attr] = obj
    return found


@cache
def optimizers() -> dict[str, type]:
    return _classes(torch.optim, torch.optim.Optimizer)


@cache
def schedulers() -> dict[str, type]:
    found = _classes(
        torch.optim.lr_scheduler, torch.optim.lr_scheduler.LRScheduler, _NON_CONFIGURABLE_SCHEDULERS
    )
    found["ReduceLROnPlateau"] = torch.optim.lr_scheduler.ReduceLROnPlateau
    return found


@cache
def losses() -> dict[str, type]:
    from models.label_smoothing_ce import LabelSmoothingCrossEntropy

    found = _classes(torch.nn, torch.nn.modules.loss._Loss)
    found["LabelSmoothingCrossEntropy"] = LabelSmoothingCrossEntropy
    return found


@cache
def transforms() -> dict[str, type]:
    found = {}
    for attr in getattr(T, "__all__", dir(T)):
        obj = getattr(T, attr, None)
        if (
            inspect.isclass(obj)
            and not attr.startswith("_")
            and attr not in _NON_CONFIGURABLE_TRANSFORMS
            and not issubclass(obj, enum.Enum)
            and callable(obj)
            and (issubclass(obj, torch.nn.Module) or "__call__" in vars(obj))
        ):
            found[attr] = obj
    return found


def _resolve(name, table: dict[str, type], what: str) -> type:
    if not isinstance(name, str) or name not in table:
        raise NameError_(f"'{name}' is not {what}; {closest(name, table)}")
    return table[name]


def resolve_optimizer(name: str) -> type:
    """A class from torch.optim."""
    return _resolve(name, optimizers(), "an optimizer in torch.optim")


def resolve_scheduler(name: str) -> type:
    """A class from torch.optim.lr_scheduler."""
    return _resolve(name, schedulers(), "a scheduler in torch.optim.lr_scheduler")


def resolve_loss(name: str) -> type:
    """A loss class from torch.nn, or LabelSmoothingCrossEntropy."""
    return _resolve(name, losses(), "a loss in torch.nn (or LabelSmoothingCrossEntropy)")


def resolve_transform(name: str) -> type:
    """A transform class from torchvision.transforms."""
    return _resolve(name, transforms(), "a transform class in torchvision.transforms")
