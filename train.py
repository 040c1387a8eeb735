"""Train a network as configured in config.yml (thesis section 3).

python train.py [-c CONFIG] [-d DATA_PATH] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse

from configuration import load_config
from utils.errors import run_cli
from utils.logger import setup_logging
from workflows.training import run_training


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "-c", "--config", default="config.yml", help="config file (default: config.yml)"
    )
    parser.add_argument(
        "-d", "--data-path", default=None, help="prepared data folder; overrides stanford_data_path"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, value parsed as YAML (repeatable), e.g. --set optimizer_params.lr=0.01",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    config = load_config(args.config, args.overrides, args.data_path)
    setup_logging(config.logging_dir, config.loglevel)
    result = run_training(config, progress_bar=not args.no_progress)
    if not result.is_main:  # another process of a multi-GPU run: the first one reports
        return 0
    summary = result.summary
    print(
        f"Run {summary['run_name']}: {summary['epochs_run']} epoch(s), best epoch {summary['best_epoch']}, "
        f"min valid_loss {summary['min_valid_loss']}, max valid_acc {summary['max_valid_acc']}"
    )
    print(f"Run folder: {result.run_dir}")
    print(f"Best checkpoint: {result.best_checkpoint}")
    return 0


if __name__ == "__main__":
    run_cli(main)
