"""Checks that need the libraries the config names, or several keys at once: the augmentations
built with their params and tried on a blank image, normalization params against the colour
mode, the plateau scheduler's patience, and the optimizer, scheduler and loss tried with their
params on a dummy parameter, so that a bad param fails at load time, not mid-run.

They run once every key has validated on its own (``Config``'s last validator), so a mistyped
key is reported without importing torchvision or kornia (see ``_transform_problems``).
"""

from __future__ import annotations

import dataclasses
import math
import random
import warnings
from typing import Any, NamedTuple

import torch
from PIL import Image

from models.optimization import build_loss, build_optimizer, build_scheduler
from utils.hardware import physical_memory_bytes
from utils.image_spec import MAX_IMAGE_SIDE
from utils.names import NameError_
from utils.text import clip, short


class Problem(NamedTuple):
    """One problem of a config: the key(s) to fix (dotted paths; the first is the one a
    ``--set`` would have given) and what is wrong."""

    keys: tuple[str, ...]
    message: str
    joined_by: str = " x "  # keys that act together; " / ": either of them

    def __str__(self) -> str:
        named = self.joined_by.join(f"'{key}'" for key in self.keys)
        return f"key{'s' if len(self.keys) > 1 else ''} {named}: {self.message}"


class ConfigProblems(ValueError):
    """The problems ``Config`` found across its keys; pydantic keeps the exception, so the
    loader reads the problems back as they are."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(map(str, problems)))
        self.problems = problems


def cross_key_problems(config: Any) -> list[Problem]:
    """Every problem across keys of a ``Config`` (which calls this while it validates, hence
    no import of it here); empty when the config is consistent. A transform that does not
    build stops here: the other checks build the augmentations too."""
    named = _transform_problems(config)
    if named:
        return named
    return [
        *_normalization_problems(config),
        *_plateau_problems(config),
        *_callable_param_problems(config),
        *_memory_problems(config),
        *_pipeline_problems(config),
        *_device_augmentation_problems(config),
        *_speed_key_problems(config),
    ]


# ---- augmentations: torchvision's transforms, kornia's on the device ----------------------
# torchvision (about as long to import as torch) and kornia are imported here, on the path
# that checks a config naming them, so that a config mistake is reported without them.
def _transform_problems(config: Any) -> list[Problem]:
    from datasets.transforms import resolve_transform

    problems = []
    for key in ("image_augmentations", "tensor_augmentations"):
        given = getattr(config, key)
        for name, params in (given or {}).items():
            try:
                transform_cls = resolve_transform(name)
                transform_cls(**(params or {}))
            except NameError_ as err:
                problem = str(err)
            except Exception as err:  # any failure of the constructor is a config problem
                problem = f"{name}: invalid parameters {params!r} ({err})"
            else:
                continue
            problems.append(Problem((key,), f"{clip(problem, 1000)} (given: {short(given)})"))
            break  # one problem a key, as for the keys checked on their own
    return problems


def _pipeline_problems(config: Any) -> list[Problem]:
    """The CPU pipeline (what ``augment_on: cpu`` runs) on one blank image of the run's size
    and colour mode: it must work and keep the channels the network takes. ``augment_on:
    device`` runs the same transforms, so both paths accept the same configs (a Grayscale to
    1 channel in an RGB run trained on the device before: Normalize's 3-channel mean broadcast
    the image back to 3 channels, while validation stayed in colour)."""
    from datasets.transforms import build_after_resize

    augmentations = config.augmentations()
    if not augmentations or _memory_problems(config):
        return []
    keys = ("image_augmentations", "tensor_augmentations")
    height, width = config.image_size
    channels = config.img_channels
    mode = "L" if channels == 1 else "RGB"
    shown = "a grayscale" if channels == 1 else "an RGB"
    # Normalize is left out: its mean and std are checked against the colour mode elsewhere,
    # and on a wrong channel count its error would hide the cause.
    plain = dataclasses.replace(config.preprocessing(), normalize=False)
    state = random.getstate()
    try:
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.manual_seed(0)  # the same draws on every load: a config is accepted or not
            random.seed(0)
            out = build_after_resize(plain, augmentations)(Image.new(mode, (width, height), 128))
    except Exception as err:  # whatever a transform raises is the config's problem
        return [
            Problem(
                keys,
                f"the training transforms fail on {shown} {height}x{width} image "
                f"({type(err).__name__}: {str(err)[:300]}); image augmentations get PIL images "
                "(before ToTensor), tensor augmentations get tensors (after it)",
                " / ",
            )
        ]
    finally:
        random.setstate(state)
    got = out.shape[0] if isinstance(out, torch.Tensor) and out.dim() == 3 else None
    if got != channels:
        made = f"{got} channel(s)" if got is not None else f"a {type(out).__name__}"
        return [
            Problem(
                keys,
                f"the training transforms turn {shown} image into {made}, but the network and "
                f"validation take {channels} (convert_to_grayscale: "
                f"{config.convert_to_grayscale}); keep {channels} channel(s) (e.g. Grayscale "
                f"with num_output_channels={channels}) or change convert_to_grayscale",
                " / ",
            )
        ]
    return []


def _device_augmentation_problems(config: Any) -> list[Problem]:
    if config.augment_on != "device":
        return []
    from datasets.device_augment import (
        UnsupportedOnDevice,
        device_transform,
    )

    problems = []
    for augmentation in config.augmentations():
        try:
            device_transform(augmentation)
        except UnsupportedOnDevice as err:
            problems.append(Problem(("augment_on",), str(err)))
    return problems


# ---- cache_on_device, compile_mode: keys that act only with others -----------------
def _speed_key_problems(config: Any) -> list[Problem]:
    problems = []
    if config.cache_on_device is True and not (
        config.cache_images and config.augment_on == "device"
    ):
        problems.append(
            Problem(
                ("cache_on_device",),
                "true needs cache_images: true and augment_on: device (it "
                "gathers batches from the image cache on the device); set those too, or set "
                "cache_on_device: auto",
            )
        )
    if config.compile_mode != "default" and not config.compile:
        problems.append(
            Problem(
                ("compile_mode",),
                f"{config.compile_mode} applies only with compile: true; set compile: true too, "
                "or leave compile_mode at default",
            )
        )
    return problems


# ---- what a setting costs in memory ------------------------------------------------
# Training GhostNet holds about 100 bytes of activations and gradients per byte of input (measured
# at 128x128 on the CPU); 32 keeps the estimate a floor, so only settings that cannot fit fail.
TRAINING_BYTES_PER_INPUT_BYTE = 32


def _memory_problems(config: Any) -> list[Problem]:
    height, width = config.image_size
    if max(height, width) > MAX_IMAGE_SIDE:
        return [
            Problem(
                ("image_size",),
                f"at most {MAX_IMAGE_SIDE} pixels a side, got {[height, width]} (Stanford Cars "
                "images are at most a few thousand pixels; the thesis used 227x227)",
            )
        ]
    memory = physical_memory_bytes()
    input_bytes = config.batch_size * config.img_channels * height * width * 4  # float32
    needed = input_bytes * TRAINING_BYTES_PER_INPUT_BYTE
    if memory is not None and needed > memory:
        fitting = max(1, memory // (needed // config.batch_size))
        return [
            Problem(
                ("batch_size", "image_size"),
                f"a batch of {config.batch_size} images of {height}x{width} needs at least {needed / 2**30:,.1f} GiB to train, more than this "
                f"machine's {memory / 2**30:,.1f} GiB; lower batch_size (at most {fitting} at this "
                "image size) or image_size",
            )
        ]
    return []


def _normalization_problems(config: Any) -> list[Problem]:
    problems = []
    for key, params, expected in (
        ("normalization_params_rgb", config.normalization_params_rgb, 3),
        ("normalization_params_grayscale", config.normalization_params_grayscale, 1),
    ):
        if params is not None and len(params.mean) != expected:
            problems.append(
                Problem(
                    (key,),
                    f"expected mean and std of {expected} value(s) (one per channel), got "
                    f"{len(params.mean)}",
                )
            )
    if config.normalize and config.active_norm_params() is None:
        key = (
            "normalization_params_grayscale"
            if config.convert_to_grayscale
            else "normalization_params_rgb"
        )
        problems.append(Problem((key,), "required when normalize is True, but it is empty"))
    return problems


def _plateau_problems(config: Any) -> list[Problem]:
    if config.lr_scheduler != "ReduceLROnPlateau":
        return []
    patience = (config.lr_scheduler_params or {}).get("patience", 10)
    if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
        return [
            Problem(
                ("lr_scheduler_params.patience",),
                f"expected a whole number of epochs >= 0, got {patience!r}",
            )
        ]
    return []


# The schedule is stepped through the run's epochs at load time (milliseconds), so that a
# lambda dividing by zero at epoch 67, or a OneCycleLR with too few steps, fails now rather
# than after hours of training; beyond this many epochs the rest is left to the run.
MAX_CHECKED_EPOCHS = 10_000


def _schedule_problems(config: Any, optimizer: Any, scheduler: Any) -> list[Problem]:
    """The first epoch after which the scheduler fails or its rate stops being a number >= 0."""
    key = "lr_scheduler_params"
    milestones = (config.lr_scheduler_params or {}).get("milestones")
    if milestones is not None and not (
        isinstance(milestones, list)
        and all(isinstance(m, int) and not isinstance(m, bool) and m >= 0 for m in milestones)
    ):  # MultiStepLR would take 'abc' as three milestones that never come
        return [Problem((f"{key}.milestones",), f"expected a list of epochs, got {milestones!r}")]
    if "lr_lambda" in (config.lr_scheduler_params or {}):
        key += ".lr_lambda"
    plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    for epoch in range(min(config.num_epochs, MAX_CHECKED_EPOCHS)):
        try:
            with warnings.catch_warnings():  # "scheduler stepped before the optimizer"
                warnings.simplefilter("ignore", UserWarning)
                scheduler.step(0.0) if plateau else scheduler.step()
        except (TypeError, ValueError, KeyError, ArithmeticError) as err:
            problem = str(err)
        else:
            rate = optimizer.param_groups[0]["lr"]
            if math.isfinite(rate) and rate >= 0:
                continue
            problem = f"the learning rate becomes {rate}"
        return [
            Problem(
                (key,),
                f"{config.lr_scheduler} fails after epoch {epoch} ({problem}), within "
                f"num_epochs {config.num_epochs}; it must hold for every epoch",
            )
        ]
    return []


def _callable_param_problems(config: Any) -> list[Problem]:
    problems = []
    optimizer = None
    try:
        optimizer = build_optimizer(
            [torch.nn.Parameter(torch.zeros(1))], config.optimizer, config.optimizer_params
        )
    except (TypeError, ValueError) as err:
        problems.append(Problem(("optimizer_params",), f"invalid for {config.optimizer}: {err}"))
    if config.lr_scheduler is not None and optimizer is not None:
        try:
            scheduler = build_scheduler(optimizer, config.lr_scheduler, config.lr_scheduler_params)
        except (TypeError, ValueError, KeyError, ArithmeticError) as err:
            problems.append(
                Problem(("lr_scheduler_params",), f"invalid for {config.lr_scheduler}: {err}")
            )
        else:
            problems.extend(_schedule_problems(config, optimizer, scheduler))
    try:
        build_loss(config.loss_function, config.loss_params)
    except (TypeError, ValueError) as err:
        problems.append(Problem(("loss_params",), f"invalid for {config.loss_function}: {err}"))
    return problems
