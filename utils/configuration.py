"""The config: one flat YAML file, validated once at the edge into a typed ``Config``.

The thesis's listing (section 3.3) loads unchanged; ``output_channels`` and ``out_channels`` are
one setting; keys that came later (``num_workers``, ``accelerator``, ``devices``, ``seed``,
``width_mult``) have defaults so old configs keep working. Every problem becomes a ``UserError``
naming the key, what was expected, what was given and, for names, the closest valid one.
"""

from __future__ import annotations

import copy
import inspect
import os
import re
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from utils import names
from utils.errors import UserError
from utils.lr_lambda import LambdaSyntaxError, parse_lr_lambda

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_PATH = PROJECT_ROOT / "config_template.yml"
DEFAULT_CONFIG = "config.yml"
SECRET_KEYS = ("neptune_api_token",)
REDACTED = "***"
LAMBDA_SCHEDULERS = ("LambdaLR", "MultiplicativeLR")
_SPELLINGS = {"out_channels": "output_channels", "output_channels": "out_channels"}


class ConfigLoader(yaml.SafeLoader):
    """YAML's safe loader, but ``1e-3`` is a float (YAML 1.1 wants ``1.0e-3`` and would read it
    as a string, so ``lr: 1e-3`` would fail with a puzzling message)."""


ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


class NormParams(BaseModel):
    """Per-channel mean and std for Normalize."""

    model_config = ConfigDict(extra="forbid")
    mean: list[float] = Field(min_length=1)
    std: list[float] = Field(min_length=1)

    @field_validator("std")
    @classmethod
    def _positive_std(cls, value: list[float]) -> list[float]:
        if any(s <= 0 for s in value):
            raise ValueError(f"every std must be > 0, got {value}")
        return value

    @model_validator(mode="after")
    def _same_length(self) -> NormParams:
        if len(self.mean) != len(self.std):
            raise ValueError(
                f"mean and std must have the same length, got {len(self.mean)} and {len(self.std)}"
            )
        return self


class Config(BaseModel):
    """Every setting of a run; field names are the YAML keys.

    Defaults are the thesis's best model (C-50), as in config_template.yml.
    """

    model_config = ConfigDict(extra="forbid", validate_default=True)

    # Logging settings
    loglevel: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    logging_dir: str = "logs"
    log_to_neptune: bool = False
    neptune_username: str | None = None
    neptune_project_name: str | None = None
    neptune_api_token: SecretStr | None = None

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
    dropout: float | None = Field(None, ge=0, lt=1)
    out_channels: int | None = Field(None, gt=0)
    width_mult: float | None = Field(None, gt=0)

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
    seed: int = Field(42, ge=0, le=2**32 - 1)

    # ---- normalisation of spellings -------------------------------------------------------
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
        # A name given without its params must not inherit the default name's params.
        for name_key, params_key in (
            ("optimizer", "optimizer_params"),
            ("lr_scheduler", "lr_scheduler_params"),
            ("loss_function", "loss_params"),
        ):
            if name_key in data and params_key not in data:
                data[params_key] = None
        if isinstance(data.get("lr_scheduler"), str) and data["lr_scheduler"].strip() in (
            "None",
            "none",
            "",
        ):
            data["lr_scheduler"] = None
        if isinstance(data.get("loglevel"), str):
            data["loglevel"] = data["loglevel"].upper()
        return data

    @field_validator("image_size")
    @classmethod
    def _image_size(cls, value: list[int]) -> list[int]:
        if any(v < 8 for v in value):
            raise ValueError(f"expected [height, width] of at least 8 pixels each, got {value}")
        return value

    @field_validator("architecture")
    @classmethod
    def _architecture(cls, value: str) -> str:
        from models.arch_dict import ARCHITECTURES

        if value not in ARCHITECTURES:
            hint = names.closest(value, ARCHITECTURES)
            if not hint.startswith("valid names"):
                hint += " Valid names: " + ", ".join(ARCHITECTURES)
            raise ValueError(f"'{value}' is not a known architecture; {hint}")
        return value

    @field_validator("optimizer")
    @classmethod
    def _optimizer(cls, value: str) -> str:
        names.resolve_optimizer(value)
        return value

    @field_validator("lr_scheduler")
    @classmethod
    def _scheduler(cls, value: str | None) -> str | None:
        if value is not None:
            names.resolve_scheduler(value)
        return value

    @field_validator("loss_function")
    @classmethod
    def _loss(cls, value: str) -> str:
        names.resolve_loss(value)
        return value

    @field_validator("image_augmentations", "tensor_augmentations")
    @classmethod
    def _augmentations(cls, value: dict | None) -> dict | None:
        for name, params in (value or {}).items():
            try:
                transform_cls = names.resolve_transform(name)
            except names.NameError_ as err:
                raise ValueError(str(err)) from None
            try:
                transform_cls(**(params or {}))
            except Exception as err:  # any failure of the constructor is a config problem
                raise ValueError(f"{name}: invalid parameters {params!r} ({err})") from None
        return value

    # ---- checks across keys --------------------------------------------------------------
    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        errors = []
        for key, params, expected in (
            ("normalization_params_rgb", self.normalization_params_rgb, 3),
            ("normalization_params_grayscale", self.normalization_params_grayscale, 1),
        ):
            if params is not None and len(params.mean) != expected:
                errors.append(
                    f"key '{key}': expected mean and std of {expected} value(s) "
                    f"(one per channel), got {len(params.mean)}"
                )
        if self.normalize and self.active_norm_params() is None:
            key = (
                "normalization_params_grayscale"
                if self.convert_to_grayscale
                else "normalization_params_rgb"
            )
            errors.append(f"key '{key}': required when normalize is True, but it is empty")
        if self.lr_scheduler == "ReduceLROnPlateau":
            patience = (self.lr_scheduler_params or {}).get("patience", 10)
            if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
                errors.append(
                    f"key 'lr_scheduler_params.patience': expected a whole number of epochs >= 0, "
                    f"got {patience!r}"
                )
        errors += _check_arch_options(self)
        errors += _check_callable_params(self)
        if errors:
            raise ValueError("; ".join(errors))
        return self

    # ---- derived values --------------------------------------------------------------------
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

    def arch_options(self) -> dict[str, Any]:
        """The architecture options that were set (GhostNet's dropout/out_channels/width_mult)."""
        options = {
            "dropout": self.dropout,
            "out_channels": self.out_channels,
            "width_mult": self.width_mult,
        }
        return {k: v for k, v in options.items() if v is not None}

    def image_augmentation_list(self) -> list[tuple[str, dict]]:
        """Image augmentations in config order, empty when ``augment_images`` is off."""
        if not self.augment_images:
            return []
        return [(k, dict(v or {})) for k, v in (self.image_augmentations or {}).items()]

    def tensor_augmentation_list(self) -> list[tuple[str, dict]]:
        """Tensor augmentations in config order, empty when ``augment_tensors`` is off."""
        if not self.augment_tensors:
            return []
        return [(k, dict(v or {})) for k, v in (self.tensor_augmentations or {}).items()]

    def early_stopping_patience(self) -> int:
        """15 epochs, or 3x the scheduler's patience for ReduceLROnPlateau (thesis 4)."""
        if self.lr_scheduler == "ReduceLROnPlateau":
            return 3 * int((self.lr_scheduler_params or {}).get("patience", 10))
        return 15

    def to_public_dict(self) -> dict[str, Any]:
        """The resolved config as plain YAML-able data, secrets replaced by ``***``."""
        data = self.model_dump(mode="json")
        for key in SECRET_KEYS:
            if data.get(key) is not None:
                data[key] = REDACTED
        return data


def _check_arch_options(config: Config) -> list[str]:
    from models.arch_dict import architecture_options

    accepted = architecture_options(config.architecture)
    return [
        f"key '{key}': applies only to architectures that take it ({_takers(key)}), "
        f"not to '{config.architecture}'; remove it from the config"
        for key in config.arch_options()
        if key not in accepted
    ]


def _takers(option: str) -> str:
    from models.arch_dict import ARCHITECTURES, architecture_options

    return ", ".join(n for n in ARCHITECTURES if option in architecture_options(n))


def _check_callable_params(config: Config) -> list[str]:
    """Try the optimizer, scheduler and loss with their params on a dummy parameter."""
    errors = []
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = None
    opt_params = dict(config.optimizer_params or {})
    try:
        optimizer = names.resolve_optimizer(config.optimizer)([param], **opt_params)
    except (TypeError, ValueError) as err:
        errors.append(f"key 'optimizer_params': invalid for {config.optimizer}: {err}")
    if config.lr_scheduler is not None and optimizer is not None:
        try:
            build_scheduler(optimizer, config.lr_scheduler, config.lr_scheduler_params)
        except (TypeError, ValueError, KeyError, ArithmeticError) as err:
            errors.append(f"key 'lr_scheduler_params': invalid for {config.lr_scheduler}: {err}")
    try:
        build_loss(config.loss_function, config.loss_params)
    except (TypeError, ValueError) as err:
        errors.append(f"key 'loss_params': invalid for {config.loss_function}: {err}")
    return errors


def build_scheduler(optimizer, name: str, params: dict | None):
    """Instantiate a scheduler by name; ``lr_lambda`` strings go through the safe parser."""
    params = dict(params or {})
    cls = names.resolve_scheduler(name)
    if name in LAMBDA_SCHEDULERS and "lr_lambda" in params:
        try:
            params["lr_lambda"] = parse_lr_lambda(params["lr_lambda"])
        except LambdaSyntaxError as err:
            raise ValueError(f"lr_lambda {params['lr_lambda']!r} rejected: {err}") from None
    signature = inspect.signature(cls)
    signature.bind(optimizer, **params)  # TypeError names a missing or unknown parameter
    return cls(optimizer, **params)


def build_loss(name: str, params: dict | None):
    """Instantiate a loss by name with its params."""
    return names.resolve_loss(name)(**dict(params or {}))


# ---- loading -----------------------------------------------------------------------------------
def load_config(
    path: str | Path | None = DEFAULT_CONFIG,
    overrides: list[str] | tuple[str, ...] = (),
    data_path: str | None = None,
) -> Config:
    """Read, override and validate a config file; every problem is a ``UserError``."""
    path = Path(path if path is not None else DEFAULT_CONFIG)
    if not path.is_file():
        if path.name == DEFAULT_CONFIG and not path.exists():
            raise UserError(
                f"config file '{path}' not found. Copy the template and fill in the paths: "
                f"'cp config_template.yml {DEFAULT_CONFIG}' (Windows: 'copy config_template.yml "
                f"{DEFAULT_CONFIG}'), or pass another file with -c PATH."
            )
        raise UserError(
            f"config file '{path}' not found (or not a file). Pass an existing YAML file with -c PATH."
        )
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=ConfigLoader)
    except yaml.YAMLError as err:
        raise UserError(
            f"config file '{path}' is not valid YAML: {err}. Fix the syntax at the place shown."
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(
            f"config file '{path}' could not be read ({err}). Check the file and its permissions."
        ) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(
            f"config file '{path}' must be a mapping of keys to values (like config_template.yml), "
            f"got a {type(raw).__name__}. Start again from config_template.yml."
        )
    raw = apply_overrides(raw, overrides)
    if data_path is not None:
        raw["stanford_data_path"] = str(data_path)
    return validate_config(raw, source=str(path))


def apply_overrides(raw: dict, overrides) -> dict:
    """Apply ``KEY=VALUE`` strings (value parsed as YAML, dotted keys reach into mappings)."""
    raw = copy.deepcopy(raw)
    for item in overrides or ():
        key, sep, text = str(item).partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(
                f"--set '{item}' is not KEY=VALUE. Write it like --set batch_size=32 or "
                "--set optimizer_params.weight_decay=0.3."
            )
        try:
            value = yaml.load(text, Loader=ConfigLoader) if text.strip() else None
        except yaml.YAMLError as err:
            raise UserError(
                f"--set '{item}': the value is not valid YAML ({err}). Quote it or fix it."
            ) from None
        if key in _SPELLINGS:  # an override replaces the setting under either spelling
            raw.pop(_SPELLINGS[key], None)
        target = raw
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(target.get(part), dict):
                target[part] = {}
            target = target[part]
        target[parts[-1]] = value
    return raw


def validate_config(raw: dict, source: str = "config") -> Config:
    """Validate a raw mapping into a ``Config``, translating errors into one ``UserError``."""
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise UserError(_format_errors(err, raw, source)) from None
    except names.NameError_ as err:  # pragma: no cover - validators wrap these
        raise UserError(f"{source}: {err}") from None


def _format_errors(err: ValidationError, raw: dict, source: str) -> str:
    problems = []
    valid_keys = set(Config.model_fields) | {"output_channels"}
    for item in err.errors():
        loc = ".".join(str(p) for p in item["loc"])
        given = item.get("input")
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            top = str(item["loc"][0]) if item["loc"] else loc
            if top in Config.model_fields:
                problems.append(f"key '{loc}' is not a setting of '{top}'")
            else:
                problems.append(f"unknown key '{loc}'; {names.closest(top, valid_keys)}")
        elif not loc:
            problems.append(message)
        else:
            shown = REDACTED if loc in SECRET_KEYS else _short(given)
            problems.append(f"key '{loc}': {message} (given: {shown})")
    return (
        f"{source} has {len(problems)} problem(s): " + "; ".join(problems) + ". "
        "Fix the value(s) in the config file (see config_template.yml for valid examples) "
        "or with --set KEY=VALUE."
    )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def available_cpus() -> int:
    """CPUs this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_num_workers() -> int:
    """CPUs this process may use, at most 8."""
    return min(8, available_cpus())
