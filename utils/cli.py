"""argparse value types shared by the command-line scripts."""

from __future__ import annotations

import argparse
from pathlib import Path


def _int_at_least(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected a number >= {minimum}, got {value}")
    return value


def path_text(text: str) -> str:
    """A path that is not empty: an empty one would quietly mean the current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a path, got an empty string")
    return text


def path_arg(text: str) -> Path:
    """``path_text`` as a Path."""
    return Path(path_text(text))


def positive_int(text: str) -> int:
    """A whole number >= 1."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """A whole number >= 0."""
    return _int_at_least(text, 0)


def checkpoint_parser(description: str | None) -> argparse.ArgumentParser:
    """The parser of a script that reads a trained checkpoint: ``description`` (the script's
    docstring) shown as written, and the required ``--checkpoint``."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--checkpoint",
        type=path_text,
        required=True,
        help="a .ckpt file written by train.py, or a run folder (its checkpoints/best.ckpt)",
    )
    return parser


def add_set_argument(parser: argparse.ArgumentParser, example: str) -> None:
    """``--set KEY=VALUE``, repeatable, collected in ``args.overrides`` (values parsed as YAML
    by the configuration, dotted keys reaching into mappings)."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a config key, value parsed as YAML (repeatable), e.g. --set {example}",
    )
