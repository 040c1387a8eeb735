"""Fine-tuning: a run that starts from a trained checkpoint (``init_from``), optionally training
only the classifier head for its first epochs (``freeze_epochs``).

The checkpoint decides the architecture and its options; a config that sets them to something
else is an error naming the keys. ``image_size``, grayscale and normalization default to the
checkpoint's: a key left at its default value takes the checkpoint's (the template writes every
key, so whether a key was written cannot tell), and a key set to another value wins, with a
warning. The network is built for the new data's classes and receives every checkpoint weight
whose name and shape match; the output layer keeps its fresh initialisation when the class
names differ (see ``models.transfer``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pydantic import ValidationError
from pytorch_lightning.callbacks import BaseFinetuning
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim import Optimizer

from configuration import Config
from datasets.preprocessing import Preprocessing
from models.arch_dict import architecture_options
from models.checkpoint import CheckpointMeta, network_from, read_checkpoint
from models.transfer import Transfer, class_dependent_names, transfer_weights
from utils.errors import UserError
from workflows.runs.run_folder import RunFolder

log = logging.getLogger(__name__)

# torch.optim.lr_scheduler attributes that hold one entry per parameter group.
_PER_GROUP_LISTS = (
    "base_lrs",
    "lr_lambdas",
    "min_lrs",
    "max_lrs",
    "base_momentums",
    "max_momentums",
    "_last_lr",
)


@dataclass
class StartingPoint:
    """The checkpoint a run starts from: where it is, what it holds, its network's weights."""

    path: Path
    meta: CheckpointMeta
    weights: dict[str, torch.Tensor]

    def initialise(self, net: nn.Module, class_names: list[str], head: set[str]) -> Transfer:
        """Copy the checkpoint's weights into ``net`` (built for ``class_names``; ``head``: its
        output layer's weights, see ``output_layer``) and log it."""
        same_classes = list(class_names) == list(self.meta.class_names)
        transfer = transfer_weights(net, self.weights, head, keep_head=same_classes)
        log.info(
            "starting from %s: %d of %d weights copied%s",
            self.path,
            len(transfer.copied),
            len(transfer.copied)
            + len(transfer.reinitialised)
            + len(transfer.mismatched)
            + len(transfer.missing),
            "" if same_classes else _new_head(class_names, self.meta.class_names),
        )
        if transfer.mismatched or transfer.missing:
            log.warning(
                "weights not taken from %s (another shape or not in it; e.g. grayscale set "
                "differently): %s",
                self.path,
                ", ".join(transfer.mismatched + transfer.missing),
            )
        return transfer


def resolve_init_from(config: Config) -> tuple[Config, StartingPoint | None]:
    """``config`` completed from its ``init_from`` checkpoint, and that checkpoint; the config
    unchanged and None without ``init_from``."""
    if not config.init_from:
        if config.freeze_epochs:
            raise UserError(
                f"freeze_epochs is {config.freeze_epochs} but init_from is not set: freezing "
                "randomly initialised layers trains nothing useful. Set init_from to a "
                "checkpoint (train.py --init-from PATH), or freeze_epochs to 0."
            )
        return config, None
    path = RunFolder.checkpoint_of(Path(config.init_from).expanduser())  # a run: its best
    net, meta = network_from(read_checkpoint(path))
    updates: dict[str, Any] = {}
    conflicts = _architecture(config, meta, updates)
    if conflicts:
        raise UserError(
            f"the config contradicts the checkpoint it starts from ({path}): "
            f"{'; '.join(conflicts)}. A fine-tuned network keeps the architecture of its "
            "checkpoint: remove these keys from the config (or set them to the checkpoint's "
            "values), or leave init_from out to train from scratch."
        )
    _preprocessing(config, meta, updates, path)
    if updates:
        try:
            config = Config.model_validate({**config.model_dump(), **updates})
        except ValidationError as err:
            raise UserError(
                f"the settings taken from the checkpoint {path} ({', '.join(updates)}) do not "
                f"fit the rest of the config: {err.errors()[0]['msg']}. Set them in the config."
            ) from None
    if config.freeze_epochs >= config.num_epochs:
        log.warning(
            "freeze_epochs (%d) >= num_epochs (%d): only the classifier head is trained",
            config.freeze_epochs,
            config.num_epochs,
        )
    return config, StartingPoint(path, meta, net.state_dict())


def _default(key: str) -> Any:
    return Config.model_fields[key].get_default(call_default_factory=True)


def _architecture(config: Config, meta: CheckpointMeta, updates: dict[str, Any]) -> list[str]:
    """Fill ``updates`` with the checkpoint's architecture and options; the contradictions."""
    conflicts = []
    if config.architecture != meta.architecture:
        if config.architecture == _default("architecture"):
            updates["architecture"] = meta.architecture
        else:
            conflicts.append(
                f"architecture is '{config.architecture}', the checkpoint's is "
                f"'{meta.architecture}'"
            )
    for key in architecture_options(meta.architecture):
        ours, theirs = getattr(config, key), meta.arch_options.get(key)
        if ours == theirs:
            continue
        if ours == _default(key):
            updates[key] = theirs
        else:
            conflicts.append(f"{key} is {ours!r}, the checkpoint's is {theirs!r}")
    return conflicts


def _preprocessing(
    config: Config, meta: CheckpointMeta, updates: dict[str, Any], path: Path
) -> None:
    """Fill ``updates`` with the checkpoint's image size, colour mode and normalization where
    the config leaves them at their defaults; warn where it sets other values."""
    theirs = Preprocessing.from_dict(meta.preprocessing)
    wanted: dict[str, Any] = {
        "image_size": list(theirs.image_size),
        "convert_to_grayscale": theirs.grayscale,
        "normalize": theirs.normalize,
    }
    grayscale = updates.get("convert_to_grayscale", config.convert_to_grayscale)
    if grayscale == theirs.grayscale and theirs.normalize:
        key = "normalization_params_grayscale" if grayscale else "normalization_params_rgb"
        wanted[key] = {"mean": list(theirs.mean), "std": list(theirs.std)}
    for key, value in wanted.items():
        ours = getattr(config, key)
        comparable = ours.model_dump() if hasattr(ours, "model_dump") else ours
        if comparable == value:
            continue
        default = _default(key)
        if comparable == (default.model_dump() if hasattr(default, "model_dump") else default):
            updates[key] = value
            log.info("%s: %s, as the checkpoint %s was trained with", key, value, path.name)
        else:
            log.warning(
                "%s is %s in the config, but the checkpoint %s was trained with %s; the "
                "config's value is used (leave %s at its default to take the checkpoint's)",
                key,
                comparable,
                path,
                value,
                key,
            )


class HeadFirst(BaseFinetuning):
    """Trains only the classifier head (the weights in ``head``) for the first ``epochs``
    epochs, then every layer. The frozen layers keep their weights and their BatchNorm
    statistics (eval mode), so the head learns on exactly the checkpoint's features; on
    unfreezing they join the optimizer as a new parameter group with the head's learning rate,
    with fresh optimizer state (Lightning's ``BaseFinetuning`` keeps the groups across a
    resumed run)."""

    def __init__(self, head: set[str], epochs: int) -> None:
        super().__init__()
        self.head = set(head)
        self.epochs = epochs
        self._frozen_norms: list[_BatchNorm] = []

    def _features(self, pl_module: pl.LightningModule) -> list[nn.Module]:
        """Every module of the network holding weights or statistics outside the head."""
        modules = []
        for prefix, module in pl_module.net.named_modules():
            own = [
                f"{prefix}.{n}" if prefix else n for n, _ in module.named_parameters(recurse=False)
            ]
            if (own or isinstance(module, _BatchNorm)) and not self.head.intersection(own):
                modules.append(module)
        return modules

    def freeze_before_training(self, pl_module: pl.LightningModule) -> None:
        features = self._features(pl_module)
        self.freeze(features, train_bn=False)
        self._frozen_norms = [m for m in features if isinstance(m, _BatchNorm)]

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        for norm in self._frozen_norms:  # Lightning puts the whole module in train mode
            norm.eval()

    def finetune_function(
        self, pl_module: pl.LightningModule, epoch: int, optimizer: Optimizer
    ) -> None:
        if epoch < self.epochs or (not self._frozen_norms and _all_trainable(pl_module)):
            return
        features = self._features(pl_module)
        frozen = [p for m in features for p in m.parameters(recurse=False) if not p.requires_grad]
        self.make_trainable(features)
        for norm in self._frozen_norms:
            norm.train()
        self._frozen_norms = []
        # By identity: BaseFinetuning.filter_on_optimizer compares values, and two equal
        # tensors (e.g. fresh BatchNorm weights) would pass for one another.
        known = {id(p) for group in optimizer.param_groups for p in group["params"]}
        new = [p for p in frozen if id(p) not in known]
        if not new:
            return  # a resumed run: the group was restored with the optimizer's state
        # The new group copies the head's settings (lr, initial_lr, betas, a scheduler's keys).
        first = optimizer.param_groups[0]
        optimizer.add_param_group(
            {**{k: v for k, v in first.items() if k != "params"}, "params": new}
        )
        for scheduler_config in pl_module.trainer.lr_scheduler_configs:
            _follow_first_group(scheduler_config.scheduler, len(optimizer.param_groups))
        log.info("epoch %d: the whole network trains from now on", epoch)


def _follow_first_group(scheduler: Any, num_groups: int) -> None:
    """Extend a scheduler's per-group lists (``base_lrs``, ``lr_lambdas``, ``min_lrs``, ...)
    with the first group's entry, so that a group added later follows the same schedule."""
    for inner in getattr(scheduler, "_schedulers", None) or []:  # SequentialLR, ChainedScheduler
        _follow_first_group(inner, num_groups)
    for name in _PER_GROUP_LISTS:
        value = getattr(scheduler, name, None)
        if isinstance(value, list) and value and len(value) == num_groups - 1:
            value.append(value[0])


def _all_trainable(pl_module: pl.LightningModule) -> bool:
    return all(p.requires_grad for p in pl_module.net.parameters())


def output_layer(config: Config) -> set[str]:
    """The weights of the configured network's output layer (the fine-tuned run's head)."""
    return class_dependent_names(config.architecture, config.img_channels, **config.arch_options())


def head_first(config: Config, head: set[str]) -> list[HeadFirst]:
    """The callback that freezes all but ``head`` for ``freeze_epochs`` epochs (none for 0)."""
    return [HeadFirst(head, config.freeze_epochs)] if config.freeze_epochs else []


def _new_head(class_names: list[str], before: list[str]) -> str:
    if len(class_names) != len(before):
        why = f"{len(class_names)} classes (the checkpoint has {len(before)})"
    else:
        why = f"{len(class_names)} classes, named otherwise than the checkpoint's"
    return f"; the output layer is new, for {why}"
