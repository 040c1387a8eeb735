"""The architecture dictionary (thesis section 3.1): config key -> network constructor.

Every constructor takes ``num_classes`` and ``img_channels``; only GhostNet (``ghost``) also
takes the architecture options ``dropout``, ``out_channels`` and ``width_mult``. Use
``build_network`` to build a network from a config: it checks the name and the options and
turns mistakes into a ``UserError``.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

from torch import nn

from models.architectures import (
    efficientnet,
    ghostnet,
    hardnet,
    mobilenet_v2,
    shufflenet_v2,
    squeezenet,
    squeezenext,
)
from utils.errors import UserError

ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "sq_10": squeezenet.squeezenet_10,
    "sq_11": squeezenet.squeezenet_11,
    "sqnxt_1": squeezenext.squeezenext23_10,
    "sqnxt_1v5": squeezenext.squeezenext23_10_v5,
    "sqnxt_2": squeezenext.squeezenext23_20,
    "sqnxt_2v5": squeezenext.squeezenext23_20_v5,
    "mob_v2": mobilenet_v2.mobilenet_v2,
    "eff_b0": efficientnet.efficientnet_b0,
    "eff_b1": efficientnet.efficientnet_b1,
    "eff_b2": efficientnet.efficientnet_b2,
    "eff_b3": efficientnet.efficientnet_b3,
    "eff_b4": efficientnet.efficientnet_b4,
    "eff_b5": efficientnet.efficientnet_b5,
    "eff_b6": efficientnet.efficientnet_b6,
    "eff_b7": efficientnet.efficientnet_b7,
    "ghost": ghostnet.ghostnet,
    "hard_39": hardnet.hardnet39,
    "hard_39dw": hardnet.hardnet39ds,
    "hard_68": hardnet.hardnet68,
    "hard_68dw": hardnet.hardnet68ds,
    "hard_85": hardnet.hardnet85,
    "hard_85dw": hardnet.hardnet85ds,
    "shuff_v2_x05": shufflenet_v2.shufflenet_v2_x05,
    "shuff_v2_x10": shufflenet_v2.shufflenet_v2_x10,
    "shuff_v2_x15": shufflenet_v2.shufflenet_v2_x15,
    "shuff_v2_x20": shufflenet_v2.shufflenet_v2_x20,
}

ARCH_DESCRIPTIONS: dict[str, str] = {
    "sq_10": "SqueezeNet 1.0",
    "sq_11": "SqueezeNet 1.1",
    "sqnxt_1": "SqueezeNext-23 1.0x",
    "sqnxt_1v5": "SqueezeNext-23 1.0x v5",
    "sqnxt_2": "SqueezeNext-23 2.0x",
    "sqnxt_2v5": "SqueezeNext-23 2.0x v5",
    "mob_v2": "MobileNetV2",
    **{f"eff_b{i}": f"EfficientNet-B{i}" for i in range(8)},
    "ghost": "GhostNet 1.0x",
    "hard_39": "HarDNet-39",
    "hard_39dw": "HarDNet-39DS",
    "hard_68": "HarDNet-68",
    "hard_68dw": "HarDNet-68DS",
    "hard_85": "HarDNet-85",
    "hard_85dw": "HarDNet-85DS",
    "shuff_v2_x05": "ShuffleNetV2 x0.5",
    "shuff_v2_x10": "ShuffleNetV2 x1.0",
    "shuff_v2_x15": "ShuffleNetV2 x1.5",
    "shuff_v2_x20": "ShuffleNetV2 x2.0",
}

# The architecture options (config keys) and which architectures accept them.
ARCH_OPTIONS: tuple[str, ...] = ("dropout", "out_channels", "width_mult")
_OPTIONS_BY_ARCH: dict[str, tuple[str, ...]] = {"ghost": ARCH_OPTIONS}


def architecture_options(name: str) -> tuple[str, ...]:
    """The architecture options (``dropout``, ``out_channels``, ``width_mult``) ``name`` takes."""
    _check_name(name)
    return _OPTIONS_BY_ARCH.get(name, ())


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
    accepted = _OPTIONS_BY_ARCH.get(name, ())
    unknown = sorted(key for key in given if key not in ARCH_OPTIONS)
    if unknown:
        raise UserError(
            f"unknown architecture option(s) {', '.join(unknown)}. The architecture options "
            f"are {', '.join(ARCH_OPTIONS)}; remove the other keys."
        )
    rejected = sorted(key for key in given if key not in accepted)
    if rejected:
        supported = "; ".join(
            f"{', '.join(opts)} apply to '{arch}'" for arch, opts in _OPTIONS_BY_ARCH.items()
        )
        raise UserError(
            f"architecture '{name}' does not take the option(s) {', '.join(rejected)} "
            f"(only {supported}). Remove {', '.join(rejected)} from the config (or set them "
            f"to null), or choose an architecture that takes them."
        )
    return ARCHITECTURES[name](num_classes=num_classes, img_channels=img_channels, **given)


def _check_name(name: str) -> None:
    if name in ARCHITECTURES:
        return
    close = difflib.get_close_matches(str(name), list(ARCHITECTURES), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise UserError(
        f"unknown architecture '{name}'.{hint} Set 'architecture' to one of: "
        f"{', '.join(ARCHITECTURES)}."
    )
