"""Compare runs as the thesis's chapter 4 did: a table of runs (what differs, the data, epochs,
minimum losses, maximum accuracies), the thesis's table (the four metrics as rows, a column per
run) and overlaid learning curves.

python compare_experiments.py [RUN_DIR_OR_OUTPUT_DIR ...] [--select TEXT ...] [--tag TAG]
                              [--sweep NAME] [--from-epoch N] [--out DIR] [-c CONFIG]

Without folders, reads the runs under output_path. --select picks runs by name, description or
tag (exact or a glob such as 'C-1?'), repeatable, in the order given:
  python compare_experiments.py output --select C-7 --select 'C-1[3-7]' --from-epoch 50
Writes summary.md, summary.csv, thesis_table.md, thesis_table.csv, loss.png, accuracy.png and
lr.png to --out (default: <output_path>/reports/<YYYYmmddHHMMSS>/) and prints the tables. Every
figure comes from each run's metrics.csv: unfinished runs get their row too. The best run: the
highest max validation accuracy, ties broken by the lower min validation loss.
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
    parser.add_argument(
        "--select",
        action="append",
        default=None,
        metavar="TEXT",
        help="a run's name, description or tag, or a glob of one (repeat; runs in this order)",
    )
    parser.add_argument("--tag", default=None, help="only runs with this tag (e.g. 4.2.11)")
    parser.add_argument("--sweep", default=None, metavar="NAME", help="only this sweep's runs")
    parser.add_argument(
        "--from-epoch",
        type=int,
        default=0,
        metavar="N",
        help="draw the figures from epoch N on (as numbered in metrics.csv)",
    )
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
    files, text = run_comparison(
        args.paths, args.tag, args.sweep, args.out, args.config, args.select, args.from_epoch
    )
    print(text, end="")
    if files:
        print(f"Report: {shown_path(next(iter(files.values())).parent)}")
    return 0


if __name__ == "__main__":
    run_cli(main)
