"""Checks that span several keys of a config: normalization params against the colour mode,
the plateau scheduler's patience, the optimizer, scheduler and loss tried with their params on
a dummy parameter, and the training augmentations tried on a blank image, so that a bad param
fails at load time, not mid-run."""

from __future__ import annotations

import dataclasses
import math
import random
import warnings
from typing import Any

import torch
from PIL import Image

from datasets.device_augment import UnsupportedOnDevice, device_transform
from datasets.transforms import build_after_resize
from models.optimization import build_loss, build_optimizer, build_scheduler
from utils.hardware import physical_memory_bytes


def cross_key_problems(config: Any) -> list[str]:
    """Every problem across keys of a ``Config`` (which calls this while it validates, hence
    no import of it here), one message each; empty when the config is consistent."""
    return [
        *_normalization_problems(config),
        *_plateau_problems(config),
        *_callable_param_problems(config),
        *_memory_problems(config),
        *_augmentation_problems(config),
        *_device_augmentation_problems(config),
        *_speed_key_problems(config),
    ]


# ---- the training augmentations, tried on a blank image ---------------------------------
_AUGMENTATION_KEYS = "keys 'image_augmentations' / 'tensor_augmentations'"


def _augmentation_problems(config: Any) -> list[str]:
    """The CPU pipeline (what ``augment_on: cpu`` runs) on one blank image of the run's size
    and colour mode: it must work and keep the channels the network takes. ``augment_on:
    device`` runs the same transforms, so both paths accept the same configs (a Grayscale to
    1 channel in an RGB run trained on the device before: Normalize's 3-channel mean broadcast
    the image back to 3 channels, while validation stayed in colour)."""
    augmentations = config.augmentations()
    if not augmentations or _memory_problems(config):
        return []
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
            f"{_AUGMENTATION_KEYS}: the training transforms fail on {shown} {height}x{width} "
            f"image ({type(err).__name__}: {str(err)[:300]}); image augmentations get PIL images "
            "(before ToTensor), tensor augmentations get tensors (after it)"
        ]
    finally:
        random.setstate(state)
    got = out.shape[0] if isinstance(out, torch.Tensor) and out.dim() == 3 else None
    if got != channels:
        made = f"{got} channel(s)" if got is not None else f"a {type(out).__name__}"
        return [
            f"{_AUGMENTATION_KEYS}: the training transforms turn {shown} image into {made}, "
            f"but the network and validation take {channels} (convert_to_grayscale: "
            f"{config.convert_to_grayscale}); keep {channels} channel(s) (e.g. Grayscale with "
            f"num_output_channels={channels}) or change convert_to_grayscale"
        ]
    return []


# ---- augment_on: device ------------------------------------------------------------
def _device_augmentation_problems(config: Any) -> list[str]:
    if config.augment_on != "device":
        return []
    problems = []
    for augmentation in config.augmentations():
        try:
            device_transform(augmentation)
        except UnsupportedOnDevice as err:
            problems.append(f"key 'augment_on': {err}")
    return problems


# ---- cache_on_device, compile_mode: keys that act only with others -----------------
def _speed_key_problems(config: Any) -> list[str]:
    problems = []
    if config.cache_on_device is True and not (
        config.cache_images and config.augment_on == "device"
    ):
        problems.append(
            "key 'cache_on_device': true needs cache_images: true and augment_on: device (it "
            "gathers batches from the image cache on the device); set those too, or set "
            "cache_on_device: auto"
        )
    if config.compile_mode != "default" and not config.compile:
        problems.append(
            f"key 'compile_mode': {config.compile_mode} applies only with compile: true; set "
            "compile: true too, or leave compile_mode at default"
        )
    return problems


# ---- what a setting costs in memory ------------------------------------------------
# Checked before anything is allocated: an image size of [100000, 100000] would otherwise take
# every byte of memory and be killed by the system without a word.
MAX_IMAGE_SIDE = 4096
# Training GhostNet holds about 100 bytes of activations and gradients per byte of input (measured
# at 128x128 on the CPU); 32 keeps the estimate a floor, so only settings that cannot fit fail.
TRAINING_BYTES_PER_INPUT_BYTE = 32


def _memory_problems(config: Any) -> list[str]:
    height, width = config.image_size
    if max(height, width) > MAX_IMAGE_SIDE:
        return [
            f"key 'image_size': at most {MAX_IMAGE_SIDE} pixels a side, got {[height, width]} "
            "(Stanford Cars images are at most a few thousand pixels; the thesis used 227x227)"
        ]
    memory = physical_memory_bytes()
    input_bytes = config.batch_size * config.img_channels * height * width * 4  # float32
    needed = input_bytes * TRAINING_BYTES_PER_INPUT_BYTE
    if memory is not None and needed > memory:
        fitting = max(1, memory // (needed // config.batch_size))
        return [
            f"keys 'batch_size' x 'image_size': a batch of {config.batch_size} images of "
            f"{height}x{width} needs at least {needed / 2**30:,.1f} GiB to train, more than this "
            f"machine's {memory / 2**30:,.1f} GiB; lower batch_size (at most {fitting} at this "
            "image size) or image_size"
        ]
    return []


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


# The schedule is stepped through the run's epochs at load time (milliseconds), so that a
# lambda dividing by zero at epoch 67, or a OneCycleLR with too few steps, fails now rather
# than after hours of training; beyond this many epochs the rest is left to the run.
MAX_CHECKED_EPOCHS = 10_000


def _schedule_problems(config: Any, optimizer: Any, scheduler: Any) -> list[str]:
    """The first epoch after which the scheduler fails or its rate stops being a number >= 0."""
    key = "lr_scheduler_params"
    milestones = (config.lr_scheduler_params or {}).get("milestones")
    if milestones is not None and not (
        isinstance(milestones, list)
        and all(isinstance(m, int) and not isinstance(m, bool) and m >= 0 for m in milestones)
    ):  # MultiStepLR would take 'abc' as three milestones that never come
        return [f"key '{key}.milestones': expected a list of epochs, got {milestones!r}"]
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
            f"key '{key}': {config.lr_scheduler} fails after epoch {epoch} ({problem}), within "
            f"num_epochs {config.num_epochs}; it must hold for every epoch"
        ]
    return []


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
            scheduler = build_scheduler(optimizer, config.lr_scheduler, config.lr_scheduler_params)
        except (TypeError, ValueError, KeyError, ArithmeticError) as err:
            problems.append(f"key 'lr_scheduler_params': invalid for {config.lr_scheduler}: {err}")
        else:
            problems.extend(_schedule_problems(config, optimizer, scheduler))
    try:
        build_loss(config.loss_function, config.loss_params)
    except (TypeError, ValueError) as err:
        problems.append(f"key 'loss_params': invalid for {config.loss_function}: {err}")
    return problems
