"""Self-contained checkpoints: what is needed to rebuild and use a network without the config.

`train.py` stores a plain dict under ``checkpoint["cars"]`` (see ``CheckpointMeta``) beside
Lightning's own keys; the network's weights are the ``net.``-prefixed entries of
``checkpoint["state_dict"]``. No secret and no raw config lands in a checkpoint.
"""

from __future__ import annotations

import pickle
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from utils.errors import UserError

META_KEY = "cars"
FORMAT_VERSION = 1
NET_PREFIX = "net."


@dataclass
class CheckpointMeta:
    """Everything a checkpoint carries about its network and the images it expects."""

    architecture: str
    num_classes: int
    class_names: list[str]
    image_size: list[int]
    grayscale: bool
    normalize: bool
    mean: list[float]
    std: list[float]
    arch_options: dict = field(default_factory=dict)
    run_name: str = ""
    format_version: int = FORMAT_VERSION

    @property
    def img_channels(self) -> int:
        return 1 if self.grayscale else 3

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> CheckpointMeta:
        known = {f for f in cls.__dataclass_fields__}
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
    """Rebuild the network stored in a checkpoint, in eval mode on the CPU."""
    from models.arch_dict import build_network  # local import keeps this module light

    ckpt = read_checkpoint(path)
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
