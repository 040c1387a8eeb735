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
from utils.errors import UserError

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
        data = dict(data)
        if "preprocessing" not in data:  # format 1
            data["preprocessing"] = {k: data[k] for k in _FLAT_PREPROCESSING if k in data}
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


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
    except Exception as err:  # a truncated or foreign file: say so instead of a traceback
        first_line = (str(err).strip().splitlines() or [""])[0][:160]
        if isinstance(err, pickle.UnpicklingError):  # torch's text suggests weights_only=False
            first_line = "not plain data: not a checkpoint, or one that needs code to load"
        raise UserError(
            f"checkpoint '{path}' could not be read as a checkpoint ({type(err).__name__}: "
            f"{first_line}). Pass a complete .ckpt file written by train.py; files that would "
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
    """Rebuild the network of a checkpoint read by ``read_checkpoint``, in eval mode on the CPU."""
    meta = CheckpointMeta.from_dict(ckpt[META_KEY])
    net = build_network(meta.architecture, meta.num_classes, meta.img_channels, **meta.arch_options)
    weights = {
        key[len(NET_PREFIX) :]: value
        for key, value in ckpt["state_dict"].items()
        if key.startswith(NET_PREFIX)
    }
    net.load_state_dict(weights)
    net.eval()
    return net, meta
