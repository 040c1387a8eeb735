"""Self-contained checkpoints: what is needed to rebuild and use a network without the config.

Training stores a plain dict under ``checkpoint["cars"]`` (see ``CheckpointMeta``) beside
Lightning's own keys; the network's weights are the ``net.``-prefixed entries of
``checkpoint["state_dict"]``. No secret and no raw config lands in a checkpoint.

Format 2 holds the preprocessing spec as one mapping and the loss the run was trained with;
format 1 (the first release) held the preprocessing as flat keys and no loss, and still loads.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    field_validator,
    model_validator,
)
from torch import nn

from models.arch_dict import build_network
from utils.errors import UserError, first_line
from utils.image_spec import MAX_IMAGE_SIDE, NormParams
from utils.text import clip, short

META_KEY = "cars"
FORMAT_VERSION = 2
NET_PREFIX = "net."
_FLAT_PREPROCESSING = ("image_size", "grayscale", "normalize", "mean", "std")


# Checkpoints are plain data read back with ``weights_only``: no value is coerced into another
# type (a hand-made "3" is no number of classes), as isinstance checks would refuse it.
_Strict = ConfigDict(strict=True, extra="ignore")
_Side = Annotated[int, Strict(), Field(ge=1, le=MAX_IMAGE_SIDE)]


class _ImageSpec(BaseModel):
    """The checked part of the preprocessing mapping (``Preprocessing.to_dict()``): the image
    size, and with ``normalize`` one mean and std per channel, as the config checks them."""

    model_config = _Strict
    image_size: list[_Side] = Field(strict=False, min_length=2, max_length=2)  # or a tuple
    grayscale: bool = False
    normalize: bool = False
    mean: list[float] = Field(default_factory=list)
    std: list[float] = Field(default_factory=list)

    @model_validator(mode="after")
    def _norm(self) -> _ImageSpec:
        if self.normalize:
            NormParams.model_validate({"mean": self.mean, "std": self.std}, strict=True)
            channels = 1 if self.grayscale else 3
            if len(self.mean) != channels:
                raise ValueError(f"mean and std need {channels} number(s), got {len(self.mean)}")
        return self


class CheckpointMeta(BaseModel):
    """Everything a checkpoint carries about its network, its loss and the images it expects.

    ``preprocessing`` is ``datasets.preprocessing.Preprocessing.to_dict()``; ``loss_function``
    is None for format-1 checkpoints, which did not record it.
    """

    model_config = _Strict
    architecture: str
    num_classes: int = Field(ge=1)
    class_names: list[str]
    preprocessing: dict[str, Any]
    arch_options: dict[str, Any] = Field(default_factory=dict)
    loss_function: str | None = None
    loss_params: dict[str, Any] = Field(default_factory=dict)
    run_name: str = ""
    format_version: int = FORMAT_VERSION

    @field_validator("preprocessing")
    @classmethod
    def _image_spec(cls, value: dict[str, Any]) -> dict[str, Any]:
        _ImageSpec.model_validate(value)
        return value

    @model_validator(mode="after")
    def _one_name_a_class(self) -> CheckpointMeta:
        if len(self.class_names) != self.num_classes:
            raise ValueError(
                f"it has {len(self.class_names)} class_names for num_classes {self.num_classes}"
            )
        return self

    @property
    def img_channels(self) -> int:
        return 1 if self.preprocessing.get("grayscale") else 3

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    @classmethod
    def from_dict(cls, data: Any) -> CheckpointMeta:
        """The metadata of a checkpoint, format 1 or 2; a ``UserError`` naming the first field
        that is missing or of the wrong kind (a damaged or hand-made checkpoint must not end in
        a traceback)."""
        if not isinstance(data, dict):
            raise _damaged(f"its '{META_KEY}' section is a {type(data).__name__}, not a mapping")
        data = dict(data)
        if "preprocessing" not in data:  # format 1
            data["preprocessing"] = {k: data[k] for k in _FLAT_PREPROCESSING if k in data}
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            raise _damaged(_first_problem(err)) from None


def _first_problem(err: ValidationError) -> str:
    item = err.errors(include_url=False)[0]
    where = ".".join(str(part) for part in item["loc"])
    if item["type"] == "missing":
        return f"its '{META_KEY}' section lacks {where}"
    message = item["msg"].removeprefix("Value error, ")
    if not where:
        return message
    return f"{where} is {short(item.get('input'))}: {clip(message, 300)}"


def read_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint file as plain data (``weights_only``: no code runs while loading)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"checkpoint '{path}' does not exist. Pass the path of a .ckpt file written by "
            "train.py, e.g. output/<run>/checkpoints/best.ckpt."
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError:
        raise UserError(
            f"checkpoint '{path}' cannot be read: permission denied. Give your user read "
            "access to it (or copy it somewhere you can read)."
        ) from None
    except Exception as err:  # a truncated or foreign file: say so instead of a traceback
        # torch's texts run on over several sentences: the first one says what went wrong
        reason = first_line(err).split(". ")[0][:160]
        if isinstance(err, pickle.UnpicklingError):  # torch's text suggests weights_only=False
            reason = "not plain data: not a checkpoint, or one that needs code to load"
        elif isinstance(err, EOFError) or "zip archive" in reason:
            reason = "incomplete: cut short when written or copied, or another kind of file"
        raise UserError(
            f"checkpoint '{path}' could not be read as a checkpoint ({type(err).__name__}: "
            f"{reason}). Pass a complete .ckpt file written by train.py; files that would "
            "need code to load are refused."
        ) from None
    if not isinstance(ckpt, dict) or META_KEY not in ckpt or "state_dict" not in ckpt:
        raise UserError(
            f"checkpoint '{path}' was not written by this project's train.py (it has no "
            f"'{META_KEY}' section). Pass a checkpoint from output/<run>/checkpoints/."
        )
    return ckpt


def load_network(path: str | Path) -> tuple[nn.Module, CheckpointMeta]:
    """Rebuild the network stored in a checkpoint file, in eval mode on the CPU."""
    return network_from(read_checkpoint(path))


def network_from(ckpt: dict) -> tuple[nn.Module, CheckpointMeta]:
    """Rebuild the network of a checkpoint read by ``read_checkpoint``, in eval mode on the CPU;
    a ``UserError`` when its metadata or weights do not make a network."""
    meta = CheckpointMeta.from_dict(ckpt[META_KEY])
    try:
        net = build_network(
            meta.architecture, meta.num_classes, meta.img_channels, **meta.arch_options
        )
    except UserError as err:
        raise _damaged(f"its network cannot be built: {err}") from None
    except Exception as err:  # invalid sizes or options in a hand-made checkpoint
        raise _damaged(f"its network cannot be built ({type(err).__name__}: {clip(err)})") from None
    state = ckpt["state_dict"]
    if not isinstance(state, dict):
        raise _damaged("its state_dict is not a mapping of weights")
    weights = {
        key[len(NET_PREFIX) :]: value
        for key, value in state.items()
        if isinstance(key, str) and key.startswith(NET_PREFIX)
    }
    try:
        net.load_state_dict(weights)
    except (RuntimeError, TypeError, ValueError) as err:
        first = first_line(err)
        raise _damaged(
            f"its weights do not fit its {meta.architecture} with {meta.num_classes} classes "
            f"({clip(first, 300)})"
        ) from None
    net.eval()
    return net, meta


def _damaged(problem: str) -> UserError:
    return UserError(
        f"the checkpoint is damaged or was not written by this project's train.py: {problem}. "
        "Pass a checkpoint from output/<run>/checkpoints/ (a run folder is taken too)."
    )
