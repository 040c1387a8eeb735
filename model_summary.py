"""Parameters, multiply-adds and CPU latency of the configured network or of any architecture.

    python model_summary.py                          # the model config.yml describes
    python model_summary.py --all                    # every key of models/arch_dict.py
    python model_summary.py --architecture ghost --num-classes 1000 \\
        --set out_channels=1280 --image-size 224 224 --json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from configuration import DEFAULT_CONFIG, TEMPLATE_PATH, load_config
from models.arch_dict import ARCH_OPTIONS, ARCHITECTURES, architecture_options, options_in_words
from models.network_costs import format_table, summarize
from utils.cli import add_set_argument, path_text
from utils.errors import UserError, run_cli
from utils.image_spec import MAX_IMAGE_SIDE

# Both spellings name one setting; an override must win over either one in the file.
_OUT_CHANNELS_KEYS = ("out_channels", "output_channels")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "-c",
        "--config",
        type=path_text,
        default=None,
        help=f"config file (default: {DEFAULT_CONFIG}, or config_template.yml when "
        f"{DEFAULT_CONFIG} does not exist)",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--architecture",
        nargs="+",
        metavar="NAME",
        help="architecture key(s) from models/arch_dict.py (default: the config's)",
    )
    which.add_argument("--all", action="store_true", help="every architecture")
    parser.add_argument(
        "--image-size",
        nargs=2,
        type=int,
        metavar=("H", "W"),
        help="input size (default: the config's image_size)",
    )
    parser.add_argument("--num-classes", type=int, default=196, help="output classes (196)")
    parser.add_argument(
        "--img-channels",
        type=int,
        default=None,
        help="input channels (default: 1 if the config converts to grayscale, else 3)",
    )
    add_set_argument(parser, "out_channels=1280")
    parser.add_argument(
        "--repeats",
        type=int,
        default=10,
        help="forward passes timed per architecture; the median is reported (0: skip)",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list instead")
    return parser.parse_args(argv)


def _overrides(items: list[str]) -> list[str]:
    result = []
    for item in items:
        key, sep, value = item.partition("=")
        if sep and key.strip() in _OUT_CHANNELS_KEYS:
            result.extend(f"{alias}={value}" for alias in _OUT_CHANNELS_KEYS)
        else:
            result.append(item)
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config_path = args.config
    if config_path is None:
        config_path = DEFAULT_CONFIG if Path(DEFAULT_CONFIG).exists() else str(TEMPLATE_PATH)
    config = load_config(config_path, overrides=_overrides(args.overrides))

    if args.all:
        names = list(ARCHITECTURES)
    elif args.architecture:
        names = args.architecture
    else:
        names = [config.architecture]
    sides = args.image_size
    if sides is not None and not all(1 <= side <= MAX_IMAGE_SIDE for side in sides):
        raise UserError(
            f"--image-size must be two whole numbers from 1 to {MAX_IMAGE_SIDE}, got "
            f"{args.image_size[0]} {args.image_size[1]}. Pass e.g. --image-size 227 227."
        )
    image_size = args.image_size or list(config.image_size)
    img_channels = args.img_channels
    if img_channels is None:
        img_channels = 1 if config.convert_to_grayscale else 3

    if not args.all:
        _reject_options_that_do_not_apply(names, _overrides(args.overrides))
    rows = summarize(
        names,
        num_classes=args.num_classes,
        img_channels=img_channels,
        image_size=image_size,
        options=config.arch_options(),
        repeats=args.repeats,
    )
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(
            f"{image_size[0]}x{image_size[1]} input, {img_channels} channel(s), "
            f"{args.num_classes} classes; latency: batch 1, one CPU thread, median of {args.repeats}"
        )
        print(format_table(rows))
    return 0


def _reject_options_that_do_not_apply(names: list[str], overrides: list[str]) -> None:
    """An option given on the command line for an architecture that does not take it is a
    mistake, not something to drop silently (--all applies options where they fit)."""
    given = {item.partition("=")[0].strip() for item in overrides}
    given = {"out_channels" if key == "output_channels" else key for key in given}
    for name in names:
        unused = sorted(
            key for key in given & set(ARCH_OPTIONS) if key not in architecture_options(name)
        )
        if unused:
            raise UserError(
                f"--set {', '.join(unused)} does not apply to '{name}' (only {options_in_words()}). "
                "Remove it, or use --all to apply it where it fits."
            )


if __name__ == "__main__":
    run_cli(main)
