"""Compare runs as the thesis's chapter 4 did: a table of runs (settings that differ, epochs,
minimum losses, maximum accuracies, tags, description) and overlaid learning curves.

python compare_experiments.py [RUN_DIR_OR_OUTPUT_DIR ...] [--tag TAG] [--sweep NAME] [--out DIR]
                              [-c CONFIG]

Without folders, reads the runs under output_path. Writes summary.md, summary.csv, loss.png,
accuracy.png and lr.png to --out (default: <output_path>/reports/<YYYYmmddHHMMSS>/) and prints
the table. Every figure comes from each run's metrics.csv: unfinished runs get their row too.
"""

from __future__ import annotations

import argparse
import logging

from utils.cli import path_text
from utils.errors import run_cli
from utils.text import shown_path
from workflows.runs.comparison import run_comparison


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("paths", nargs="*", type=path_text, help="run folders or folders of runs")
    parser.add_argument("--tag", default=None, help="only runs with this tag (e.g. 4.2.11)")
    parser.add_argument("--sweep", default=None, metavar="NAME", help="only this sweep's runs")
    parser.add_argument("--out", type=path_text, default=None, help="report folder")
    parser.add_argument(
        "-c",
        "--config",
        type=path_text,
        default=None,
        help="config whose output_path is the default folder",
    )
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    files, text = run_comparison(args.paths, args.tag, args.sweep, args.out, args.config)
    print(text, end="")
    if files:
        print(f"Report: {shown_path(next(iter(files.values())).parent)}")
    return 0


if __name__ == "__main__":
    run_cli(main)
