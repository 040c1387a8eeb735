"""Self-contained checkpoints: what is needed to rebuild and use a network without the config.

Training stores a plain dict under ``checkpoint["cars"]`` (see ``CheckpointMeta``) beside
Lightning's own keys; the network's weights are the ``net.``-prefixed entries of
``checkpoint["state_dict"]``. No secret and no raw config lands in a checkpoint.

Format 2 holds the preprocessing spec as one mapping and the loss the run was trained with;
format 1 (the first release) held the preprocessing as flat keys and no loss, and still loads.
"""

from __future__ import annotations

import pickle
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.arch_dict import build_network
from utils.errors import UserError, first_line
from utils.text import clip, short

META_KEY = "cars"
FORMAT_VERSION = 2
NET_PREFIX = "net."
_FLAT_PREPROCESSING = ("image_size", "grayscale", "normalize", "mean", "std")


@dataclass
class CheckpointMeta:
    """Everything a checkpoint carries about its network, its loss and the images it expects.

    ``preprocessing`` is ``datasets.preprocessing.Preprocessing.to_dict()``; ``loss_function``
    is None for format-1 checkpoints, which did not record it.
    """

    architecture: str
    num_classes: int
    class_names: list[str]
    preprocessing: dict[str, Any]
    arch_options: dict[str, Any] = field(default_factory=dict)
    loss_function: str | None = None
    loss_params: dict[str, Any] = field(default_factory=dict)
    run_name: str = ""
    format_version: int = FORMAT_VERSION

    @property
    def img_channels(self) -> int:
        return 1 if self.preprocessing.get("grayscale") else 3

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckpointMeta:
        """The metadata of a checkpoint; a ``UserError`` naming the first field that is missing
        or of the wrong kind (a damaged or hand-made checkpoint must not end in a traceback)."""
        if not isinstance(data, dict):
            raise _damaged(f"its '{META_KEY}' section is a {type(data).__name__}, not a mapping")
        data = dict(data)
        if "preprocessing" not in data:  # format 1
            data["preprocessing"] = {k: data[k] for k in _FLAT_PREPROCESSING if k in data}
        known = {f.name for f in fields(cls)}
        missing = [f.name for f in fields(cls) if f.name not in data and f.name in _REQUIRED]
        if missing:
            raise _damaged(f"its '{META_KEY}' section lacks {', '.join(missing)}")
        meta = cls(**{k: v for k, v in data.items() if k in known})
        problem = meta.problem()
        if problem:
            raise _damaged(problem)
        return meta

    # ---- validation ------------------------------------------------------------------
    def problem(self) -> str | None:
        """What is wrong with these fields, or None."""
        if not isinstance(self.architecture, str):
            return f"architecture is {short(self.architecture)}, not a name"
        if not _is_int(self.num_classes) or self.num_classes < 1:
            return f"num_classes is {short(self.num_classes)}, not a whole number >= 1"
        names = self.class_names
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            return "class_names is not a list of names"
        if len(names) != self.num_classes:
            return f"it has {len(names)} class_names for num_classes {self.num_classes}"
        for key, kind in (("arch_options", dict), ("loss_params", dict), ("run_name", str)):
            if not isinstance(getattr(self, key), kind):
                return f"{key} is {short(getattr(self, key))}, not a {kind.__name__}"
        if self.loss_function is not None and not isinstance(self.loss_function, str):
            return f"loss_function is {short(self.loss_function)}, not a name"
        return _preprocessing_problem(self.preprocessing)


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


_REQUIRED = ("architecture", "num_classes", "class_names")
MAX_IMAGE_SIDE = 4096


def _damaged(problem: str) -> UserError:
    return UserError(
        f"the checkpoint is damaged or was not written by this project's train.py: {problem}. "
        "Pass a checkpoint from output/<run>/checkpoints/ (a run folder is taken too)."
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def _preprocessing_problem(pre: Any) -> str | None:
    if not isinstance(pre, dict):
        return "preprocessing is not a mapping"
    size = pre.get("image_size")
    if (
        not isinstance(size, (list, tuple))
        or len(size) != 2
        or not all(_is_int(v) and 1 <= v <= MAX_IMAGE_SIDE for v in size)
    ):
        return f"preprocessing.image_size is {short(size)}, not [height, width] in pixels"
    channels = 1 if pre.get("grayscale") else 3
    if pre.get("normalize"):
        mean, std = pre.get("mean"), pre.get("std")
        for key, values in (("mean", mean), ("std", std)):
            if (
                not isinstance(values, (list, tuple))
                or len(values) != channels
                or not all(_is_number(v) for v in values)
            ):
                return f"preprocessing.{key} is {short(values)}, not {channels} number(s)"
        if any(v <= 0 for v in std):
            return f"preprocessing.std is {short(std)}; every std must be > 0"
    return None
