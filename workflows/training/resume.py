"""Continuing a stopped run: which run and checkpoint ``--resume`` names, the config it goes on
with, and the settings that may not change because the checkpoint's weights depend on them."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from configuration import Config, load_config
from configuration.loading import DEFAULT_CONFIG
from configuration.schema import SECRET_KEYS
from models.checkpoint import META_KEY, CheckpointMeta, read_checkpoint
from models.optimization import carry_over_settings
from utils.errors import UserError
from workflows.runs.run_folder import RunFolder
from workflows.training.callbacks import EARLY_STOPPING_STATE_KEY

log = logging.getLogger(__name__)

# Preprocessing entries of a checkpoint, by the config key that sets them.
_PREPROCESSING_KEYS = {
    "image_size": "image_size",
    "grayscale": "convert_to_grayscale",
    "normalize": "normalize",
    "mean": "normalization_params_rgb / normalization_params_grayscale",
    "std": "normalization_params_rgb / normalization_params_grayscale",
    "crop_to_bboxes": "crop_to_bboxes",
    "erase_background": "erase_background",
}
# Settings whose state the checkpoint carries in a form only the same kind can take back.
_STATEFUL_KEYS = ("optimizer", "lr_scheduler")


@dataclass
class ResumePoint:
    """A run to continue and the checkpoint to continue it from."""

    run: RunFolder
    checkpoint: Path
    meta: CheckpointMeta
    epoch: int  # the last epoch the checkpoint finished
    early_stopping: dict[str, Any] | None = None  # the checkpoint's early-stopping state

    @property
    def next_epoch(self) -> int:
        return self.epoch + 1


def resume_point(spec: str | Path, output_path: str | Path) -> ResumePoint:
    """Find and read the checkpoint ``--resume SPEC`` names; a foreign or truncated file is a
    ``UserError``."""
    run, checkpoint = RunFolder.resolve_resume(spec, output_path)
    ckpt = read_checkpoint(checkpoint)
    epoch = ckpt.get("epoch")
    if not isinstance(epoch, int) or "optimizer_states" not in ckpt or "loops" not in ckpt:
        raise UserError(
            f"checkpoint '{checkpoint}' holds weights but not the training state (epoch, "
            "optimizer, loops) that a resume needs. Resume from a run folder or its "
            "checkpoints/last.ckpt as train.py wrote them."
        )
    try:
        meta = CheckpointMeta.from_dict(ckpt[META_KEY])
    except TypeError as err:
        raise UserError(
            f"checkpoint '{checkpoint}' has an unreadable '{META_KEY}' section ({err}). Resume "
            "from a checkpoint written by train.py."
        ) from None
    stopper = (ckpt.get("callbacks") or {}).get(EARLY_STOPPING_STATE_KEY)
    return ResumePoint(
        run=run,
        checkpoint=Path(checkpoint),
        meta=meta,
        epoch=epoch,
        early_stopping=stopper if isinstance(stopper, dict) else None,
    )


def load_resume_config(
    spec: str, config_path: str | None, overrides: list[str], data_path: str | None
) -> tuple[Config, ResumePoint]:
    """The config a resumed run goes on with: ``config_path`` when given, else the run's own
    ``config.yml``, whose redacted secrets are dropped (a token comes from the environment or
    ``--set``, never from the run folder); then ``overrides`` and ``data_path``."""
    if config_path is not None:
        config = load_config(config_path, overrides, data_path)
        return config, resume_point(spec, config.output_path)
    point = resume_point(spec, _default_output_path())
    if not point.run.config_yml.is_file():
        raise UserError(
            f"run '{point.run.path}' has no {RunFolder.CONFIG}, so its settings are unknown. "
            "Pass the config it was trained with: --resume ... -c CONFIG."
        )
    no_secrets = [f"{key}=" for key in SECRET_KEYS]
    config = load_config(point.run.config_yml, [*no_secrets, *overrides], data_path)
    return config, point


def _default_output_path() -> str:
    """Where ``last`` looks without -c: output_path of ./config.yml when it loads, else the
    default (a broken config.yml is no reason to refuse a resume that does not need it)."""
    if Path(DEFAULT_CONFIG).is_file():
        try:
            return load_config(DEFAULT_CONFIG).output_path
        except UserError:
            pass
    return Config.model_fields["output_path"].default


def check_resumable(
    point: ResumePoint, config: Config, new_meta: CheckpointMeta, run_config: dict[str, Any]
) -> None:
    """Refuse a resume whose config changes what the checkpoint's weights and training state
    depend on (``new_meta`` is what this config would store; ``run_config`` the run's own
    ``config.yml``), or that has no epoch left to train."""
    old = point.meta
    changed: list[str] = []
    if old.architecture != new_meta.architecture:
        changed.append("architecture")
    for key in sorted(set(old.arch_options) | set(new_meta.arch_options)):
        if old.arch_options.get(key) != new_meta.arch_options.get(key):
            changed.append(key)
    for entry, key in _PREPROCESSING_KEYS.items():
        if entry in old.preprocessing and _plain(old.preprocessing[entry]) != _plain(
            new_meta.preprocessing.get(entry)
        ):
            changed.append(key)
    if list(old.class_names) != list(new_meta.class_names):
        changed.append("stanford_data_path (its classes differ from the checkpoint's)")
    for key in _STATEFUL_KEYS:
        if key in run_config and run_config[key] != getattr(config, key):
            changed.append(key)
    if changed:
        keys = list(dict.fromkeys(changed))
        raise UserError(
            f"cannot resume run '{point.run.name}': the config changes {', '.join(keys)}, which "
            "the checkpoint's weights or training state depend on. Resume with the run's own "
            "settings (leave out -c, or set these keys back). Everything else may change: "
            "num_epochs, the learning-rate settings (optimizer_params, lr_scheduler_params), "
            "num_workers, accelerator, devices, num_nodes, strategy, the loggers."
        )
    if point.next_epoch >= config.num_epochs:
        raise UserError(
            f"run '{point.run.name}' has already trained {point.next_epoch} epoch(s) and "
            f"num_epochs is {config.num_epochs}: nothing is left to train. To train longer, "
            f"raise it, e.g. --set num_epochs={point.next_epoch + 10}."
        )
    _check_early_stop(point, config)


# ---- resuming with other learning-rate settings ------------------------------------
class ResumedSettings(Callback):
    """Lets a resumed run go on with the config's optimizer and scheduler settings where they
    differ from the run's own (``run_config``): they replace the checkpoint's before Lightning
    restores its optimizer and scheduler (see ``models.optimization.carry_over_settings``)."""

    def __init__(self, config: Config, run_config: dict[str, Any]) -> None:
        self.optimizer = config.optimizer
        self.scheduler = config.lr_scheduler
        self.new = (config.optimizer_params, config.lr_scheduler_params)
        # A run config without these keys cannot say what changed: nothing is carried over.
        self.old = tuple(
            run_config.get(key, new)
            for key, new in zip(("optimizer_params", "lr_scheduler_params"), self.new)
        )

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        schedulers = checkpoint.get("lr_schedulers") or [None]
        for optimizer_state in checkpoint.get("optimizer_states") or []:
            changed = carry_over_settings(
                optimizer_state,
                schedulers[0],
                self.optimizer,
                self.old[0],
                self.new[0],
                self.scheduler,
                self.old[1],
                self.new[1],
            )
            if changed:
                log.info("resumed with new optimizer/scheduler settings: %s", ", ".join(changed))


# ---- resuming an early-stopped run ---------------------------------------------------
def _check_early_stop(point: ResumePoint, config: Config) -> None:
    """Refuse to resume a run that early stopping ended unless the patience is now higher:
    with the same patience it would stop again after the next epoch without improvement."""
    state = point.early_stopping or {}
    stopped_at = _early_stop_epoch(point, state)
    before = state.get("patience")
    if stopped_at is None or not isinstance(before, int):
        return
    patience = config.early_stopping_patience()
    if patience > before:
        return
    raise UserError(
        f"run '{point.run.name}' was stopped early after epoch {stopped_at}: valid_loss had not "
        f"improved for {before} epoch(s), its early-stopping patience, and with patience "
        f"{patience} it would stop again after one more such epoch. To train on, raise the "
        f"patience above {before}, e.g. --set early_stop_patience={before + 10} (without it, "
        "the patience is 15, or 3x lr_scheduler_params.patience with ReduceLROnPlateau), and "
        "num_epochs if needed."
    )


def _early_stop_epoch(point: ResumePoint, state: dict[str, Any]) -> int | None:
    """The epoch early stopping ended the run at, None if it did not: from the checkpoint's
    state, else (checkpoints that record the stop only in the run's summary) from
    ``summary.json`` when the checkpoint is the run's last epoch."""
    stopped = state.get("stopped_epoch")
    if isinstance(stopped, int) and stopped > 0:
        return stopped
    try:
        summary = json.loads(point.run.summary_json.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (
        isinstance(summary, dict)
        and summary.get("early_stopped") is True
        and summary.get("epochs_run") == point.next_epoch
    ):
        return point.epoch
    return None


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [round(float(v), 6) if isinstance(v, float) else v for v in value]
    return value
