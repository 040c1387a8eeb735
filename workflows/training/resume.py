"""Continuing a stopped run, all of it: which run and checkpoint ``--resume`` names, the config
it goes on with, the settings that may not change because the checkpoint's weights or training
state depend on them, the learning-rate settings that may (``ResumedSettings``), and the
random-number state that makes a resumed run go on as if never stopped (``RandomState``).

A resume leaves the run folder as it was until training actually starts (the run's
``LifeCycle`` writes its config then); while it trains, the run folder is locked
(``RunFolder.claim``)."""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from configuration import Config, configured_output_path, load_config
from configuration.schema import SECRET_KEYS
from models.checkpoint import META_KEY, CheckpointMeta, read_checkpoint
from models.optimization import changed_settings, group_settings, resume_with
from utils.errors import UserError
from workflows.runs.metrics import read_metric_rows
from workflows.runs.run_folder import LAST, RUN_NAME, RunFolder
from workflows.training.callbacks import EARLY_STOPPING_STATE_KEY
from workflows.training.checkpoint_io import leftover_partials

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
# Settings whose state the checkpoint carries in a form only the same kind can take back
# (freeze_epochs decides the optimizer's parameter groups at each epoch).
_STATEFUL_KEYS = ("optimizer", "lr_scheduler", "freeze_epochs")
# What summary.json says about where a fine-tuned run's weights came from; a resume keeps it.
_ORIGIN_KEYS = ("init_from", "init_from_weights", "freeze_epochs")


@dataclass
class ResumePoint:
    """A run to continue and the checkpoint to continue it from."""

    run: RunFolder
    checkpoint: Path
    meta: CheckpointMeta
    epoch: int  # the last epoch the checkpoint finished
    early_stopping: dict[str, Any] | None = None  # the checkpoint's early-stopping state
    summary: dict[str, Any] | None = None  # the run's summary.json as the resume found it

    @property
    def next_epoch(self) -> int:
        return self.epoch + 1

    @property
    def origin(self) -> dict[str, Any]:
        """Where the run's weights came from (fine-tuning), as its summary recorded it."""
        return {k: v for k, v in (self.summary or {}).items() if k in _ORIGIN_KEYS}


# ---- finding what to resume ----------------------------------------------------------
def resolve_resume(spec: str | Path, output_path: str | Path) -> tuple[RunFolder, Path]:
    """The run and the checkpoint that ``--resume SPEC`` names: ``last`` (the newest run
    under ``output_path`` that has a ``last.ckpt``), a run folder (its ``last.ckpt``) or a
    checkpoint file (in its run's folder)."""
    if str(spec) == LAST:
        run = newest_run(output_path)
        return run, run.last_checkpoint
    path = Path(spec)
    if path.is_dir():
        run = RunFolder(path)
        if not run.last_checkpoint.is_file():
            raise UserError(
                f"--resume '{spec}': the folder has no {RunFolder.CHECKPOINTS}/last.ckpt, so "
                "there is nothing to continue (a run writes it after its first epoch). Pass a "
                f"run folder from '{output_path}' or a .ckpt file."
            )
        return run, run.last_checkpoint
    if path.is_file():
        return RunFolder.of_checkpoint(path), path
    raise UserError(
        f"--resume '{spec}' does not exist. Pass a run folder (e.g. {output_path}/<run>), a "
        f"checkpoint file, or '{LAST}' for the newest run under output_path."
    )


def newest_run(output_path: str | Path) -> RunFolder:
    """The run under ``output_path`` started last (by the time in its name) that has a
    ``last.ckpt``."""
    folder = Path(output_path)
    runs = []
    if folder.is_dir():
        for child in folder.iterdir():
            match = RUN_NAME.fullmatch(child.name)
            if match and child.is_dir() and RunFolder(child).last_checkpoint.is_file():
                runs.append((match.group(1), int(match.group(2) or 1), child))
    if not runs:
        raise UserError(
            f"--resume {LAST}: no run with a checkpoints/last.ckpt in '{folder}' (output_path)."
            " Pass the run folder itself, or set output_path (-c CONFIG or --set "
            "output_path=...) to where the runs are."
        )
    return RunFolder(max(runs)[2])


def resume_point(spec: str | Path, output_path: str | Path) -> ResumePoint:
    """Find and read the checkpoint ``--resume SPEC`` names; a foreign or truncated file is a
    ``UserError``."""
    run, checkpoint = resolve_resume(spec, output_path)
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
        summary=_read_summary(run),
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
    output_path = configured_output_path(None) or Config.model_fields["output_path"].default
    point = resume_point(spec, output_path)
    if not point.run.config_yml.is_file():
        raise UserError(
            f"run '{point.run.path}' has no {RunFolder.CONFIG}, so its settings are unknown. "
            "Pass the config it was trained with: --resume ... -c CONFIG."
        )
    no_secrets = [f"{key}=" for key in SECRET_KEYS]
    config = load_config(point.run.config_yml, [*no_secrets, *overrides], data_path)
    return config, point


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


# ---- resuming with other learning-rate settings -------------------------------------
class ResumedSettings(Callback):
    """Lets a resumed run go on with the config's optimizer and scheduler settings where they
    differ from the run's own (``run_config``), timm's way: once Lightning has restored the
    checkpoint's optimizer, its groups take the new settings (keeping their moments) and the
    scheduler is rebuilt from the current arguments and stepped to the resumed epoch. With
    nothing changed it does nothing: the resumed run is bit-identical to one never stopped.
    It also removes the temporary files a killed checkpoint write left."""

    def __init__(self, config: Config, run_config: dict[str, Any], point: ResumePoint) -> None:
        self.config, self.point = config, point
        # A run config without these keys cannot say what changed: nothing is carried over.
        self.changed = [
            *changed_settings(
                run_config.get("optimizer_params", config.optimizer_params),
                config.optimizer_params,
            ),
            *changed_settings(
                run_config.get("lr_scheduler_params", config.lr_scheduler_params),
                config.lr_scheduler_params,
            ),
        ]
        self.settings: dict[str, Any] = {}

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.changed:  # the optimizer as the config builds it, before the restore
            self.settings = group_settings(trainer.optimizers[0])

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for partial in leftover_partials(self.point.run.checkpoints):
            partial.unlink(missing_ok=True)
        if not self.changed:
            return
        rows = read_metric_rows(self.point.run.metrics_csv)
        losses = {r["epoch"]: r["valid_loss"] for r in rows if r["valid_loss"] != ""}
        epochs = self.point.next_epoch
        scheduler = resume_with(
            trainer.optimizers[0],
            self.settings,
            self.config.lr_scheduler,
            self.config.lr_scheduler_params,
            epochs,
            [losses.get(epoch, float("inf")) for epoch in range(epochs)],
        )
        if scheduler is not None:
            trainer.lr_scheduler_configs[0].scheduler = scheduler
        log.info("resumed with new optimizer/scheduler settings: %s", ", ".join(self.changed))


# ---- the random-number state --------------------------------------------------------
class RandomState(Callback):
    """Keeps Python's, NumPy's and torch's random-number state in every checkpoint and restores
    it on resume: the shuffling and the augmentations of the epochs after a resume are those of
    a run that was never stopped. Stored as plain numbers and tensors (``weights_only`` loads)."""

    def state_dict(self) -> dict[str, Any]:
        version, internal, gauss = random.getstate()
        name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
        state = {
            "python": [version, list(internal), gauss],
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            cuda_states = state["cuda"]
            if len(cuda_states) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(cuda_states)


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
    summary = point.summary if point.summary is not None else _read_summary(point.run)
    if summary.get("early_stopped") is True and summary.get("epochs_run") == point.next_epoch:
        return point.epoch
    return None


def _read_summary(run: RunFolder) -> dict[str, Any]:
    try:
        summary = json.loads(run.summary_json.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return summary if isinstance(summary, dict) else {}


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [round(float(v), 6) if isinstance(v, float) else v for v in value]
    return value
