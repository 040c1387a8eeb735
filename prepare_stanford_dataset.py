"""Prepare the raw Stanford Cars download for training (thesis section 3.2).

    python prepare_stanford_dataset.py [-c CONFIG] [--raw-dir DIR] [--out-dir DIR] [--force]

Reads the raw files from ``stanford_raw_data_path`` and writes ``train/``, ``test/``,
``train_labels.csv`` and ``test_labels.csv`` to ``stanford_data_path`` (both from the config
file unless given on the command line). See ``datasets/prepare/layouts.py`` for the layouts it
recognises.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from configuration import load_config
from datasets.prepare import PrepareReport, prepare_dataset
from utils.errors import UserError, run_cli

logger = logging.getLogger(__name__)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Turn the raw Stanford Cars files into train/ and test/ folders of JPEGs "
        "plus train_labels.csv and test_labels.csv."
    )
    parser.add_argument(
        "-c",
        "--config",
        default="config.yml",
        help="config file with stanford_raw_data_path and stanford_data_path "
        "(default: config.yml; not read when --raw-dir and --out-dir are both given)",
    )
    parser.add_argument("--raw-dir", type=Path, help="folder holding the downloaded raw files")
    parser.add_argument("--out-dir", type=Path, help="folder to write the prepared dataset to")
    parser.add_argument(
        "--force", action="store_true", help="rebuild even if the output is already prepared"
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no progress bar, only warnings and the summary"
    )
    return parser.parse_args(argv)


def resolve_paths(args: argparse.Namespace) -> tuple[Path, Path]:
    """The raw and output folders: from the command line, else from the config file."""
    raw_dir, out_dir = args.raw_dir, args.out_dir
    if raw_dir is None or out_dir is None:
        config = load_config(args.config)
        if raw_dir is None:
            if not config.stanford_raw_data_path:
                raise UserError(
                    f"{args.config} does not set stanford_raw_data_path. Set it to the folder "
                    "holding the downloaded Stanford Cars files, or pass --raw-dir."
                )
            raw_dir = Path(config.stanford_raw_data_path)
        if out_dir is None:
            if not config.stanford_data_path:
                raise UserError(
                    f"{args.config} does not set stanford_data_path. Set it to the folder the "
                    "prepared dataset should go to, or pass --out-dir."
                )
            out_dir = Path(config.stanford_data_path)
    return raw_dir, out_dir


def summary(report: PrepareReport) -> str:
    counts = (
        f"{report.num_train} train and {report.num_test} test images, {report.num_classes} classes"
    )
    left_out = [
        f"{len(names)} {kind}"
        for kind, names in (
            ("missing", report.missing),
            ("broken", report.broken),
            ("refused", report.refused),
        )
        if names
    ]
    tail = f"; left out: {', '.join(left_out)}" if left_out else ""
    if report.skipped:
        return (
            f"Already prepared in {report.out_dir}: {counts}{tail}. Nothing done "
            "(use --force to rebuild)."
        )
    return (
        f"Prepared Stanford Cars (from the '{report.layout}' layout) in {report.out_dir}: "
        f"{counts}{tail}."
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not logging.getLogger().handlers:  # run as a script: messages to the console
        logging.basicConfig(
            level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s"
        )
    raw_dir, out_dir = resolve_paths(args)
    report = prepare_dataset(raw_dir, out_dir, force=args.force, progress=not args.quiet)
    print(summary(report))
    return 0


if __name__ == "__main__":
    run_cli(main)
