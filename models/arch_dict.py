"""The architecture dictionary (thesis section 3.1): config key -> network constructor.

Every builder takes ``num_classes`` and ``img_channels``; its other keyword parameters are the
architecture's options, which the config may set (GhostNet's ``dropout``, ``out_channels`` and
``width_mult``). Use ``build_network`` to build a network from a config: it checks the name and
the options and turns mistakes into a ``UserError``.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from torch import nn

from utils.errors import UserError
from utils.names import closest

# Parameters every builder takes; the config sets them from the data, not as options.
_COMMON_PARAMETERS = ("num_classes", "img_channels")


@dataclass(frozen=True)
class Architecture:
    """A network builder, named by its module in ``models/architectures`` and its function,
    the name of the network it builds and the name the thesis's code gave its builder (which
    its Neptune runs logged as ``architecture``); calling it builds one.

    The builder's module is imported on first use: four of them import torchvision, which
    takes about as long as torch, and checking a config needs only the names and options.
    ``options`` (the keyword parameters besides ``num_classes`` and ``img_channels``) is
    written here, the one place that says which architecture takes which option; a test
    checks it against each builder's signature.
    """

    module: str
    function: str
    description: str
    original_name: str
    options: tuple[str, ...] = ()

    @property
    def builder(self) -> Callable[..., nn.Module]:
        module = importlib.import_module(f"models.architectures.{self.module}")
        return getattr(module, self.function)

    def signature_options(self) -> tuple[str, ...]:
        """The builder's own keyword parameters besides the common ones (what ``options``
        must equal)."""
        keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        return tuple(
            name
            for name, parameter in inspect.signature(self.builder).parameters.items()
            if parameter.kind in keyword and name not in _COMMON_PARAMETERS
        )

    def __call__(self, *args: object, **kwargs: object) -> nn.Module:
        return self.builder(*args, **kwargs)


_GHOST_OPTIONS = ("dropout", "out_channels", "width_mult")

# Config key -> the builder, the network's name as its paper writes it and the original's builder
# name (its `arch_dict.py`). The keys are the ones the thesis's configs use; renaming one breaks
# old configs and checkpoints.
ARCHITECTURES: dict[str, Architecture] = {
    "sq_10": Architecture("squeezenet", "squeezenet_10", "SqueezeNet 1.0", "SqueezeNet_10"),
    "sq_11": Architecture("squeezenet", "squeezenet_11", "SqueezeNet 1.1", "SqueezeNet_11"),
    "sqnxt_1": Architecture(
        "squeezenext", "squeezenext23_10", "SqueezeNext-23 1.0x", "SqueezeNext23_10"
    ),
    "sqnxt_1v5": Architecture(
        "squeezenext", "squeezenext23_10_v5", "SqueezeNext-23 1.0x v5", "SqueezeNext23_10_v5"
    ),
    "sqnxt_2": Architecture(
        "squeezenext", "squeezenext23_20", "SqueezeNext-23 2.0x", "SqueezeNext23_20"
    ),
    "sqnxt_2v5": Architecture(
        "squeezenext", "squeezenext23_20_v5", "SqueezeNext-23 2.0x v5", "SqueezeNext23_20_v5"
    ),
    "mob_v2": Architecture("mobilenet_v2", "mobilenet_v2", "MobileNetV2", "MobileNet_v2"),
    "eff_b0": Architecture("efficientnet", "efficientnet_b0", "EfficientNet-B0", "EfficientNet_b0"),
    "eff_b1": Architecture("efficientnet", "efficientnet_b1", "EfficientNet-B1", "EfficientNet_b1"),
    "eff_b2": Architecture("efficientnet", "efficientnet_b2", "EfficientNet-B2", "EfficientNet_b2"),
    "eff_b3": Architecture("efficientnet", "efficientnet_b3", "EfficientNet-B3", "EfficientNet_b3"),
    "eff_b4": Architecture("efficientnet", "efficientnet_b4", "EfficientNet-B4", "EfficientNet_b4"),
    "eff_b5": Architecture("efficientnet", "efficientnet_b5", "EfficientNet-B5", "EfficientNet_b5"),
    "eff_b6": Architecture("efficientnet", "efficientnet_b6", "EfficientNet-B6", "EfficientNet_b6"),
    "eff_b7": Architecture("efficientnet", "efficientnet_b7", "EfficientNet-B7", "EfficientNet_b7"),
    "ghost": Architecture("ghostnet", "ghostnet", "GhostNet 1.0x", "GhostNet", _GHOST_OPTIONS),
    "hard_39": Architecture("hardnet", "hardnet39", "HarDNet-39", "HarDNet_39"),
    "hard_39dw": Architecture("hardnet", "hardnet39ds", "HarDNet-39DS", "HarDNet_39dw"),
    "hard_68": Architecture("hardnet", "hardnet68", "HarDNet-68", "HarDNet_68"),
    "hard_68dw": Architecture("hardnet", "hardnet68ds", "HarDNet-68DS", "HarDNet_68dw"),
    "hard_85": Architecture("hardnet", "hardnet85", "HarDNet-85", "HarDNet_85"),
    "hard_85dw": Architecture("hardnet", "hardnet85ds", "HarDNet-85DS", "HarDNet_85dw"),
    "shuff_v2_x05": Architecture(
        "shufflenet_v2", "shufflenet_v2_x05", "ShuffleNetV2 x0.5", "ShuffleNet_v2_x05"
    ),
    "shuff_v2_x10": Architecture(
        "shufflenet_v2", "shufflenet_v2_x10", "ShuffleNetV2 x1.0", "ShuffleNet_v2_x10"
    ),
    "shuff_v2_x15": Architecture(
        "shufflenet_v2", "shufflenet_v2_x15", "ShuffleNetV2 x1.5", "ShuffleNet_v2_x15"
    ),
    "shuff_v2_x20": Architecture(
        "shufflenet_v2", "shufflenet_v2_x20", "ShuffleNetV2 x2.0", "ShuffleNet_v2_x20"
    ),
}

# Every architecture option (config key) any architecture takes, first-seen order.
ARCH_OPTIONS: tuple[str, ...] = tuple(
    dict.fromkeys(option for arch in ARCHITECTURES.values() for option in arch.options)
)


def architecture_options(name: str) -> tuple[str, ...]:
    """The architecture options (a subset of ``ARCH_OPTIONS``) that ``name`` takes."""
    _check_name(name)
    return ARCHITECTURES[name].options


def takers(options: Iterable[str]) -> list[str]:
    """The architectures that take any of ``options``."""
    wanted = set(options)
    return [name for name, arch in ARCHITECTURES.items() if wanted & set(arch.options)]


def options_in_words() -> str:
    """Which architecture takes which options, e.g. "ghost takes dropout, out_channels and
    width_mult", for messages."""
    return "; ".join(
        f"{name} takes {_and(arch.options)}" for name, arch in ARCHITECTURES.items() if arch.options
    )


def _and(items: tuple[str, ...]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def build_network(
    name: str, num_classes: int, img_channels: int = 3, **options: object
) -> nn.Module:
    """Build architecture ``name`` (a key of ``ARCHITECTURES``), untrained.

    ``options`` holds architecture options; ``None`` values mean "not set" and are dropped.
    Raises UserError for an unknown name or for an option the architecture does not take,
    ValueError for invalid sizes.
    """
    _check_name(name)
    given = {key: value for key, value in options.items() if value is not None}
    accepted = ARCHITECTURES[name].options
    unknown = sorted(key for key in given if key not in ARCH_OPTIONS)
    if unknown:
        raise UserError(
            f"unknown architecture option(s) {', '.join(unknown)}. The architecture options "
            f"are {', '.join(ARCH_OPTIONS)}; remove the other keys."
        )
    rejected = sorted(key for key in given if key not in accepted)
    if rejected:
        raise UserError(
            f"architecture '{name}' does not take the option(s) {', '.join(rejected)} "
            f"(only {options_in_words()}). Remove {', '.join(rejected)} from the config (or set them "
            f"to null), or choose an architecture that takes them."
        )
    return ARCHITECTURES[name](num_classes=num_classes, img_channels=img_channels, **given)


def count_parameters(net: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def _check_name(name: str) -> None:
    if name in ARCHITECTURES:
        return
    hint = closest(name, ARCHITECTURES)
    # The message lists every name itself, so only a suggestion is taken from closest().
    suggestion = f" {hint[:1].upper()}{hint[1:]}" if hint.startswith("did you mean") else ""
    raise UserError(
        f"unknown architecture '{name}'.{suggestion} Set 'architecture' to one of: "
        f"{', '.join(ARCHITECTURES)}."
    )
