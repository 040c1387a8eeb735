"""Checks that span several keys of a config: normalization params against the colour mode,
architecture options against the architecture, and the optimizer, scheduler and loss tried with
their params on a dummy parameter, so that a bad param fails at load time, not mid-run."""

from __future__ import annotations

from typing import Any

import torch

from models.arch_dict import ARCHITECTURES, architecture_options
from models.optimization import build_loss, build_optimizer, build_scheduler


def cross_key_problems(config: Any) -> list[str]:
    """Every problem across keys of a ``Config`` (which calls this while it validates, hence
    no import of it here), one message each; empty when the config is consistent."""
    return [
        *_normalization_problems(config),
        *_plateau_problems(config),
        *_arch_option_problems(config),
        *_callable_param_problems(config),
    ]


def _normalization_problems(config: Any) -> list[str]:
    problems = []
    for key, params, expected in (
        ("normalization_params_rgb", config.normalization_params_rgb, 3),
        ("normalization_params_grayscale", config.normalization_params_grayscale, 1),
    ):
        if params is not None and len(params.mean) != expected:
            problems.append(
                f"key '{key}': expected mean and std of {expected} value(s) "
                f"(one per channel), got {len(params.mean)}"
            )
    if config.normalize and config.active_norm_params() is None:
        key = (
            "normalization_params_grayscale"
            if config.convert_to_grayscale
            else "normalization_params_rgb"
        )
        problems.append(f"key '{key}': required when normalize is True, but it is empty")
    return problems


def _plateau_problems(config: Any) -> list[str]:
    if config.lr_scheduler != "ReduceLROnPlateau":
        return []
    patience = (config.lr_scheduler_params or {}).get("patience", 10)
    if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
        return [
            f"key 'lr_scheduler_params.patience': expected a whole number of epochs >= 0, "
            f"got {patience!r}"
        ]
    return []


def _arch_option_problems(config: Any) -> list[str]:
    accepted = architecture_options(config.architecture)
    return [
        f"key '{key}': applies only to architectures that take it ({_takers(key)}), "
        f"not to '{config.architecture}'; remove it from the config"
        for key in config.arch_options()
        if key not in accepted
    ]


def _takers(option: str) -> str:
    return ", ".join(name for name in ARCHITECTURES if option in architecture_options(name))


def _callable_param_problems(config: Any) -> list[str]:
    problems = []
    optimizer = None
    try:
        optimizer = build_optimizer(
            [torch.nn.Parameter(torch.zeros(1))], config.optimizer, config.optimizer_params
        )
    except (TypeError, ValueError) as err:
        problems.append(f"key 'optimizer_params': invalid for {config.optimizer}: {err}")
    if config.lr_scheduler is not None and optimizer is not None:
        try:
            build_scheduler(optimizer, config.lr_scheduler, config.lr_scheduler_params)
        except (TypeError, ValueError, KeyError, ArithmeticError) as err:
            problems.append(f"key 'lr_scheduler_params': invalid for {config.lr_scheduler}: {err}")
    try:
        build_loss(config.loss_function, config.loss_params)
    except (TypeError, ValueError) as err:
        problems.append(f"key 'loss_params': invalid for {config.loss_function}: {err}")
    return problems
