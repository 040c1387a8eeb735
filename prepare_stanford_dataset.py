"""Prepare the raw Stanford Cars download, or a folder of your own photos, for training
(thesis section 3.2).

    python prepare_stanford_dataset.py [-c CONFIG] [--raw-dir DIR] [--out-dir DIR] [--force]
        [--test-fraction F] [--seed N] [--archive [PATH]]

Reads the raw files from ``stanford_raw_data_path`` and writes ``train/``, ``test/``,
``train_labels.csv`` and ``test_labels.csv`` to ``stanford_data_path`` (both from the config
file unless given on the command line). See ``datasets/prepare/layouts.py`` for the layouts it
recognises; a folder of photos holds one sub-folder per class (``PHOTOS/<class>/*.jpg``), or
``train/<class>/`` and ``test/<class>/`` when it is split already. ``--archive`` also packs the
prepared folder as ``input/stanford.tar.gz`` for ``train_colab.ipynb``. The log goes to the
console and to ``<logging_dir>/<YYYYmmdd>.log``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from configuration import Config, load_config
from datasets.prepare import PrepareReport, prepare_dataset
from datasets.prepare.colab_archive import DEFAULT_ARCHIVE, write_colab_archive
from datasets.prepare.photos import DEFAULT_SEED, DEFAULT_TEST_FRACTION, DETAIL_KINDS
from utils.cli import path_arg, path_text
from utils.errors import UserError, run_cli
from utils.logger import setup_logging
from utils.text import shown_path

logger = logging.getLogger(__name__)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Turn the raw Stanford Cars files into train/ and test/ folders of JPEGs "
        "plus train_labels.csv and test_labels.csv."
    )
    parser.add_argument(
        "-c",
        "--config",
        type=path_text,
        default="config.yml",
        help="config file with stanford_raw_data_path and stanford_data_path "
        "(default: config.yml; with --raw-dir and --out-dir both given, only its logging_dir "
        "and loglevel are used, and only if it exists)",
    )
    parser.add_argument("--raw-dir", type=path_arg, help="folder holding the downloaded raw files")
    parser.add_argument("--out-dir", type=path_arg, help="folder to write the prepared dataset to")
    parser.add_argument(
        "--force", action="store_true", help="rebuild even if the output is already prepared"
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no progress bar, only warnings and the summary"
    )
    # A folder of photos
    parser.add_argument(
        "--test-fraction",
        type=float,
        default=DEFAULT_TEST_FRACTION,
        help="photo folders: share of each class's images kept for testing "
        f"(default: {DEFAULT_TEST_FRACTION}; not used when the folder has train/ and test/)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=DEFAULT_SEED,
        help=f"photo folders: seed of the train/test split (default: {DEFAULT_SEED})",
    )
    # The Colab archive and the log file
    parser.add_argument(
        "--archive",
        nargs="?",
        const=DEFAULT_ARCHIVE,
        type=path_text,  # text: a trailing slash (a folder) must survive
        metavar="PATH",
        help=f"also pack the prepared folder for train_colab.ipynb as PATH (default: "
        f"{DEFAULT_ARCHIVE.as_posix()}), with one top-level stanford/ folder",
    )
    return parser.parse_args(argv)


def read_config(args: argparse.Namespace) -> Config:
    """The config file's settings; its defaults when --raw-dir and --out-dir make the file
    unnecessary and it does not exist."""
    needed = args.raw_dir is None or args.out_dir is None
    if needed or Path(args.config).is_file():
        return load_config(args.config)
    return Config()


def resolve_paths(args: argparse.Namespace, config: Config | None = None) -> tuple[Path, Path]:
    """The raw and output folders: from the command line, else from the config file."""
    raw_dir, out_dir = args.raw_dir, args.out_dir
    if raw_dir is None or out_dir is None:
        config = config or load_config(args.config)
        if raw_dir is None:
            if not config.stanford_raw_data_path:
                raise UserError(
                    f"{args.config} does not set stanford_raw_data_path. Set it to the folder "
                    "holding the downloaded Stanford Cars files, or pass --raw-dir."
                )
            raw_text = config.stanford_raw_data_path.strip()
            if raw_text.startswith("<") and raw_text.endswith(">"):
                raise UserError(
                    f"stanford_raw_data_path in {args.config} still holds the template's "
                    f"placeholder ({raw_text}). Set it to the folder holding the downloaded "
                    "Stanford Cars files, or pass --raw-dir."
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
    details = "".join(
        f"\n  {text}: {len(report.details[kind])}"
        for kind, (text, _) in DETAIL_KINDS.items()
        if report.details.get(kind)
    )
    if report.skipped:
        return (
            f"Already prepared in {shown_path(report.out_dir)}: {counts}{tail}. Nothing done "
            "(use --force to rebuild)."
        )
    what = "a photo folder" if report.layout.startswith("photos") else "Stanford Cars"
    return (
        f"Prepared {what} (from the '{report.layout}' layout) in {shown_path(report.out_dir)}: "
        f"{counts}{tail}.{details}"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = read_config(args)
    if not logging.getLogger().handlers:  # run as a script: the console and the day's log file
        setup_logging(config.logging_dir, "WARNING" if args.quiet else config.loglevel)
    raw_dir, out_dir = resolve_paths(args, config)
    report = prepare_dataset(
        raw_dir,
        out_dir,
        force=args.force,
        progress=not args.quiet,
        test_fraction=args.test_fraction,
        seed=args.seed,
    )
    print(summary(report))
    if args.archive is not None:
        archive = write_colab_archive(report.out_dir, args.archive)
        print(
            f"Packed for train_colab.ipynb: {archive} (copy it to input/ of the project on Drive)"
        )
    return 0


if __name__ == "__main__":
    run_cli(main)
