"""Every setting of a run as one typed ``Config``; field names are the YAML keys.

The thesis's listing (section 3.3) loads unchanged; ``output_channels`` and ``out_channels`` are
one setting; keys that came later (``num_workers``, ``accelerator``, ``devices``, ``seed``,
``width_mult``) have defaults so old configs keep working. Names are checked against the
registries of what they build (architectures, optimizers, schedulers, losses); the
augmentations, which need torchvision, are built in ``configuration/checks.py`` once the keys
have validated.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from configuration.checks import ConfigProblems, cross_key_problems
from datasets.preprocessing import Augmentation, Preprocessing, augmentations_from
from models.arch_dict import ARCH_OPTIONS, ARCHITECTURES, architecture_options
from models.optimization import resolve_loss, resolve_optimizer, resolve_scheduler
from utils.image_spec import NormParams
from utils.names import closest
from utils.text import without_credentials

SECRET_KEYS = ("neptune_api_token",)
REDACTED = "***"
# A name given without its params must not inherit the default name's params.
_NAMED_WITH_PARAMS = (
    ("optimizer", "optimizer_params"),
    ("lr_scheduler", "lr_scheduler_params"),
    ("loss_function", "loss_params"),
)


class Config(BaseModel):
    """Every setting of a run. Defaults are the thesis's best model (C-50), as in
    config_template.yml."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    # Logging settings
    loglevel: Literal["NOTSET", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    logging_dir: str = "logs"
    log_to_neptune: bool = False
    neptune_username: str | None = None
    neptune_project_name: str | None = None
    neptune_api_token: SecretStr | None = None

    # Experiment trackers, tags and description (not in the thesis's listing)
    neptune_mode: Literal["offline", "async", "sync", "debug"] = "offline"
    log_to_mlflow: bool = True
    mlflow_tracking_uri: str | None = None  # None: sqlite:///<output_path>/mlflow.db
    mlflow_experiment: str = Field("cars", min_length=1)
    log_to_tensorboard: bool = False
    tags: list[str] = Field(default_factory=list)
    description: str | None = None

    # Data location
    stanford_raw_data_path: str | None = None
    stanford_data_path: str = "input/stanford"

    # Output
    output_path: str = "output"

    # Preprocessing
    image_size: list[int] = Field(default_factory=lambda: [227, 227], min_length=2, max_length=2)
    convert_to_grayscale: bool = False
    normalize: bool = True
    normalization_params_rgb: NormParams | None = NormParams(
        mean=[0.4707, 0.4602, 0.4550], std=[0.2594, 0.2585, 0.2635]
    )
    normalization_params_grayscale: NormParams | None = NormParams(mean=[0.4627], std=[0.2545])

    # Augmentation
    crop_to_bboxes: bool = False
    erase_background: bool = False
    augment_images: bool = True
    image_augmentations: dict[str, dict[str, Any] | None] | None = Field(
        default_factory=lambda: {
            "RandomHorizontalFlip": {"p": 0.5},
            "RandomAffine": {
                "degrees": 25,
                "translate": [0.1, 0.1],
                "scale": [0.9, 1.1],
                "shear": 8,
            },
            "ColorJitter": {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.1},
        }
    )
    augment_tensors: bool = False
    tensor_augmentations: dict[str, dict[str, Any] | None] | None = Field(
        default_factory=lambda: {"RandomErasing": {"p": 0.5, "scale": [0.02, 0.25]}}
    )

    # Network and training
    architecture: str = "ghost"
    batch_size: int = Field(64, gt=0)
    num_epochs: int = Field(200, gt=0)
    dropout: float | None = Field(0.2, ge=0, lt=1)
    # Bounded so that a typo cannot build a network that fills the memory (GhostNet at
    # width_mult 4 already has about 16 times the parameters).
    out_channels: int | None = Field(320, gt=0, le=16384)
    width_mult: float | None = Field(None, gt=0, le=4)

    # Optimisation
    optimizer: str = "AdamW"
    optimizer_params: dict[str, Any] | None = Field(
        default_factory=lambda: {"lr": 0.001, "weight_decay": 0.6}
    )
    lr_scheduler: str | None = "MultiStepLR"
    lr_scheduler_params: dict[str, Any] | None = Field(
        default_factory=lambda: {"gamma": 0.1, "milestones": [67, 82, 95, 107]}
    )
    loss_function: str = "LabelSmoothingCrossEntropy"
    loss_params: dict[str, Any] | None = None

    # Execution (not in the thesis)
    num_workers: int | None = Field(None, ge=0)
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    devices: int | list[int] | Literal["auto"] = "auto"
    # Several GPUs and nodes: Lightning's DDP, launched by Lightning, torchrun or SLURM.
    num_nodes: int = Field(1, ge=1)
    strategy: Literal["auto", "ddp", "ddp_find_unused_parameters_true", "ddp_notebook"] = "auto"
    # None: a fresh seed per run, recorded in the run's config.yml and summary.json.
    seed: int | None = Field(None, ge=0, le=2**32 - 1)

    # Fine-tuning from a trained checkpoint (see workflows/training/fine_tuning.py)
    init_from: str | None = None  # a .ckpt written by train.py (or its run folder)
    freeze_epochs: int = Field(0, ge=0)  # epochs that train only the classifier head

    # Early stopping: epochs without a lower valid_loss before a run stops. None: 15, or 3x
    # lr_scheduler_params.patience with ReduceLROnPlateau. Raise it to resume an early-stopped run.
    early_stop_patience: int | None = Field(None, gt=0)

    # Speed (see datasets/cache/images.py, datasets/device_augment.py, models/speed.py)
    cache_images: bool = False  # resized pixels cached per split beside the prepared data
    augment_on: Literal["cpu", "device"] = "cpu"  # where augmentations and Normalize run
    channels_last: bool = False
    compile: bool = False  # torch.compile the network
    # torch.compile's mode; reduce-overhead and max-autotune replay the step as CUDA graphs
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = "default"
    precision: Literal["32-true", "bf16-mixed", "16-mixed"] = "32-true"
    # With cache_images and augment_on: device, gather batches from a copy of the cache on the
    # device (auto: when it fits; see datasets/cache/device.py)
    cache_on_device: bool | Literal["auto"] = "auto"
    # The batch size of the validation after each epoch (None: batch_size). Validation keeps
    # no activations for a backward pass, so larger batches fit and run faster, same numbers.
    valid_batch_size: int | None = Field(None, gt=0)

    # ---- spellings ---------------------------------------------------------------------------
    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if "output_channels" in data:
            value = data.pop("output_channels")
            if "out_channels" in data and data["out_channels"] != value:
                raise ValueError(
                    "'output_channels' and 'out_channels' are one setting but have different "
                    f"values ({value!r} and {data['out_channels']!r}); keep only one of them"
                )
            data["out_channels"] = value
        for name_key, params_key in _NAMED_WITH_PARAMS:
            if name_key in data and params_key not in data:
                data[params_key] = None
        scheduler = data.get("lr_scheduler")
        if isinstance(scheduler, str) and scheduler.strip() in ("None", "none", ""):
            data["lr_scheduler"] = None
        if isinstance(data.get("loglevel"), str):
            data["loglevel"] = data["loglevel"].upper()
        return data

    # ---- single keys --------------------------------------------------------------------------
    @field_validator("image_size")
    @classmethod
    def _image_size(cls, value: list[int]) -> list[int]:
        if any(v < 8 for v in value):
            raise ValueError(f"expected [height, width] of at least 8 pixels each, got {value}")
        return value

    @field_validator("init_from")
    @classmethod
    def _init_from(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError(
                "empty; give a checkpoint (a .ckpt file or a run folder), or null to train from "
                "scratch"
            )
        return value

    @field_validator("architecture")
    @classmethod
    def _architecture(cls, value: str) -> str:
        if value not in ARCHITECTURES:
            hint = closest(value, ARCHITECTURES)
            if not hint.startswith("valid names"):
                hint += " Valid names: " + ", ".join(ARCHITECTURES)
            raise ValueError(f"'{value}' is not a known architecture; {hint}")
        return value

    @field_validator("optimizer")
    @classmethod
    def _optimizer(cls, value: str) -> str:
        resolve_optimizer(value)
        return value

    @field_validator("lr_scheduler")
    @classmethod
    def _scheduler(cls, value: str | None) -> str | None:
        if value is not None:
            resolve_scheduler(value)
        return value

    @field_validator("loss_function")
    @classmethod
    def _loss(cls, value: str) -> str:
        resolve_loss(value)
        return value

    @model_validator(mode="after")
    def _across_keys(self) -> Config:
        problems = cross_key_problems(self)
        if problems:  # the loader lists them one by one, each naming its key
            raise ConfigProblems(problems)
        return self

    # ---- what the rest of the code takes -----------------------------------------------------
    @property
    def img_channels(self) -> int:
        return 1 if self.convert_to_grayscale else 3

    def active_norm_params(self) -> NormParams | None:
        """The normalization params that apply to the configured colour mode."""
        return (
            self.normalization_params_grayscale
            if self.convert_to_grayscale
            else self.normalization_params_rgb
        )

    def preprocessing(self) -> Preprocessing:
        """The preprocessing spec every stage of the pipeline takes."""
        norm = self.active_norm_params() if self.normalize else None
        return Preprocessing(
            image_size=tuple(self.image_size),
            grayscale=self.convert_to_grayscale,
            normalize=self.normalize,
            mean=tuple(norm.mean) if norm else (),
            std=tuple(norm.std) if norm else (),
            crop_to_bboxes=self.crop_to_bboxes,
            erase_background=self.erase_background,
        )

    def augmentations(self) -> list[Augmentation]:
        """The training augmentations that are switched on, in config order."""
        return augmentations_from(
            self.image_augmentations if self.augment_images else None,
            self.tensor_augmentations if self.augment_tensors else None,
        )

    def arch_options(self) -> dict[str, Any]:
        """The architecture options that were set and that the architecture takes (GhostNet's
        dropout/out_channels/width_mult); the others are ignored, as the original did."""
        accepted = architecture_options(self.architecture)
        values = {key: getattr(self, key, None) for key in ARCH_OPTIONS if key in accepted}
        return {key: value for key, value in values.items() if value is not None}

    def ignored_arch_options(self) -> list[str]:
        """The architecture options written in the config that the architecture does not take."""
        accepted = architecture_options(self.architecture)
        return [
            key
            for key in ARCH_OPTIONS
            if key in self.model_fields_set
            and getattr(self, key, None) is not None
            and key not in accepted
        ]

    def early_stopping_patience(self) -> int:
        """``early_stop_patience`` when set; else 15 epochs, or with ReduceLROnPlateau and its
        ``patience`` set, 3x that patience."""
        if self.early_stop_patience is not None:
            return self.early_stop_patience
        patience = (self.lr_scheduler_params or {}).get("patience")
        if self.lr_scheduler == "ReduceLROnPlateau" and patience is not None:
            return 3 * int(patience)
        return 15

    def to_public_dict(self) -> dict[str, Any]:
        """The resolved config as plain YAML-able data, secrets replaced by ``***`` and every
        URL without its user name and password (``without_credentials``)."""
        data = _public(self.model_dump(mode="json"))
        for key in SECRET_KEYS:
            if data.get(key) is not None:
                data[key] = REDACTED
        return data


def _public(value: Any) -> Any:
    """``value`` with every text in it passed through ``without_credentials``."""
    if isinstance(value, str):
        return without_credentials(value)
    if isinstance(value, dict):
        return {key: _public(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_public(item) for item in value]
    return value
