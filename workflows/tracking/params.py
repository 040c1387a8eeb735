"""The parameters every tracker gets: the thesis's, under its names."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from configuration import Config
from models.arch_dict import ARCHITECTURES


def thesis_params(config: Config, num_params: int, runtime: str) -> dict[str, Any]:
    """The parameters the thesis sent to its tracker, under its names and with its values: the
    architecture by the original's builder name (``GhostNet`` for ``ghost``), a weight decay
    not set as 0.0 (whatever the optimizer's own default), any other setting that is off as
    None. Never holds a secret."""
    optimizer_params = dict(config.optimizer_params or {})
    normalize_rgb = config.normalize and not config.convert_to_grayscale
    normalize_gray = config.normalize and config.convert_to_grayscale

    def norm(params):
        return params.model_dump() if params is not None else None

    return {
        "runtime": runtime,
        "architecture": ARCHITECTURES[config.architecture].original_name,
        "num_params": num_params,
        "img_size": list(config.image_size),
        "grayscale": config.convert_to_grayscale,
        "normalize": config.normalize,
        "norm_params_rgb": norm(config.normalization_params_rgb) if normalize_rgb else None,
        "norm_params_gray": norm(config.normalization_params_grayscale) if normalize_gray else None,
        "crop_to_bboxes": config.crop_to_bboxes,
        "erase_background": config.erase_background,
        "augment_images": config.augment_images,
        "image_augmentations": config.image_augmentations if config.augment_images else None,
        "augment_tensors": config.augment_tensors,
        "tensor_augmentations": config.tensor_augmentations if config.augment_tensors else None,
        "batch_size": config.batch_size,
        "max_num_epochs": config.num_epochs,
        "dropout": config.dropout,
        "out_channels": config.out_channels,
        "loss_function": config.loss_function,
        "loss_params": config.loss_params or None,
        "optimizer": config.optimizer,
        "learning_rate": optimizer_params.get("lr"),
        "weight_decay": optimizer_params.get("weight_decay") or 0.0,
        "all_optimizer_params": optimizer_params or None,
        "lr_scheduler": config.lr_scheduler,
        "lr_scheduler_params": (config.lr_scheduler_params or None)
        if config.lr_scheduler
        else None,
    }


def as_text_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Numbers and flags as they are, everything else (None, lists, mappings) as text."""
    return {k: v if isinstance(v, bool | int | float | str) else str(v) for k, v in params.items()}
