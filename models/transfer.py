"""Starting a network from another one's weights (fine-tuning).

Every weight whose name and shape match is copied. The classifier's output layer is found
without knowing the architecture: it is made of the weights whose shape follows the number of
classes. When the classes differ, it keeps the fresh initialisation the network was built with.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from models.arch_dict import build_network


@dataclass
class Transfer:
    """What ``transfer_weights`` did, by state-dict name."""

    copied: list[str] = field(default_factory=list)
    reinitialised: list[str] = field(default_factory=list)  # the head, for new classes
    mismatched: list[str] = field(default_factory=list)  # same name, other shape
    missing: list[str] = field(default_factory=list)  # not in the source

    def as_dict(self) -> dict[str, Any]:
        """Counts, and the names of what was not copied (for the run's summary)."""
        return {
            "copied": len(self.copied),
            "reinitialised": list(self.reinitialised),
            "mismatched": list(self.mismatched),
            "missing": list(self.missing),
        }


def class_dependent_names(architecture: str, img_channels: int = 3, **options: object) -> set[str]:
    """State-dict names of the architecture's weights whose shape depends on the number of
    classes: its output layer."""
    shapes = []
    for num_classes in (2, 3):
        try:
            with torch.device("meta"):  # shapes only: nothing is allocated
                net = build_network(architecture, num_classes, img_channels, **options)
        except (RuntimeError, NotImplementedError):  # a builder that needs real tensors
            net = build_network(architecture, num_classes, img_channels, **options)
        shapes.append({name: tuple(value.shape) for name, value in net.state_dict().items()})
    return {name for name, shape in shapes[0].items() if shapes[1].get(name) != shape}


def transfer_weights(
    net: nn.Module, source: Mapping[str, torch.Tensor], head: set[str], keep_head: bool
) -> Transfer:
    """Copy ``source``'s weights into ``net`` where name and shape match; the ``head`` names
    are copied only when ``keep_head`` (same classes), else left as ``net`` was built."""
    result = Transfer()
    state = net.state_dict()
    for name, value in state.items():
        theirs = source.get(name)
        if name in head and not keep_head:
            result.reinitialised.append(name)
        elif theirs is None:
            result.missing.append(name)
        elif tuple(theirs.shape) != tuple(value.shape):
            result.mismatched.append(name)
        else:
            state[name] = theirs.detach().to(dtype=value.dtype)
            result.copied.append(name)
    net.load_state_dict(state)
    return result
