"""Train a network as configured in config.yml (thesis section 3).

python train.py [-c CONFIG] [-d DATA_PATH] [--set KEY=VALUE ...]
python train.py --resume RUN_FOLDER|CHECKPOINT|last [-c CONFIG] [--set KEY=VALUE ...]
python train.py --init-from CHECKPOINT [-c CONFIG] [-d DATA_PATH] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import sys

from configuration import load_config
from utils.cli import add_set_argument, path_text
from utils.errors import UserError, run_cli
from utils.logger import setup_logging
from utils.text import shown_path

# The workflows (Lightning, the trackers, Optuna) are imported in the functions below, once the
# config has validated: a config mistake is then reported in about the time of importing torch
# (benchmarks/startup.py), and Optuna is imported for a sweep only.


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "-c",
        "--config",
        type=path_text,
        default=None,
        help="config file (default: config.yml; with --resume, the run's own config.yml)",
    )
    parser.add_argument(
        "-d",
        "--data-path",
        type=path_text,
        default=None,
        help="prepared data folder; overrides stanford_data_path",
    )
    add_set_argument(parser, "optimizer_params.lr=0.01")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    # Fine-tuning
    parser.add_argument(
        "--init-from",
        metavar="CHECKPOINT",
        type=path_text,
        default=None,
        help="start from a trained checkpoint's weights (sets init_from); the output layer is "
        "new when the data's classes differ",
    )
    parser.add_argument(
        "--resume",
        metavar="PATH|last",
        type=path_text,
        default=None,
        help="continue a stopped run: its folder, one of its checkpoints, or 'last' (the newest "
        "run under output_path)",
    )
    # Sweeps
    parser.add_argument(
        "--sweep",
        action="append",
        default=[],
        metavar="KEY=V1,V2,...",
        help="train every combination of these values (repeatable; values as YAML); "
        "KEY=LOW..HIGH[:log] with --trials",
    )
    parser.add_argument(
        "--trials", type=int, default=None, help="with --sweep: try N settings chosen by Optuna"
    )
    parser.add_argument(
        "--sweep-storage",
        default=None,
        metavar="URL",
        help="the sweep's Optuna database (default: sqlite:///<output_path>/sweeps.db); share "
        "one between processes or machines",
    )
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.init_from is not None:  # as a --set, so that it is validated and recorded alike
        args.overrides.append(f"init_from={json.dumps(args.init_from)}")
    if args.sweep or args.trials is not None or args.sweep_storage:
        return sweep_main(args)
    resume = None
    if args.resume is not None:  # the run folder tells which config to load
        from workflows.training.resume import load_resume_config

        config, resume = load_resume_config(
            args.resume, args.config, args.overrides, args.data_path
        )
    else:
        config = load_config(args.config, args.overrides, args.data_path)
    setup_logging(config.logging_dir, config.loglevel)
    from workflows.inference.evaluation_files import run_summary_line
    from workflows.training.interruptions import resume_hint
    from workflows.training.run import run_training

    result = run_training(config, progress_bar=not args.no_progress, resume=resume)
    if not result.is_main:  # another process of a multi-GPU run: the first one reports
        return 0
    if result.stopped_by is not None:
        stop = result.stopped_by
        print(
            resume_hint(result.run_dir, stop.signal_name, result.summary["epochs_run"]),
            file=sys.stderr,
        )
        return stop.exit_code
    # ---- the summary as the demo prints it ----
    print(run_summary_line(result.summary))
    print(f"Run folder: {shown_path(result.run_dir)}")
    print(f"Best checkpoint: {shown_path(result.best_checkpoint)}")
    return 0


def sweep_main(args: argparse.Namespace) -> int:
    """A sweep instead of one run: train its remaining runs, print its table."""
    if not args.sweep:
        raise UserError("--trials and --sweep-storage need --sweep KEY=V1,V2,...")
    if args.resume is not None:
        raise UserError("--resume continues one run; run the --sweep command again instead.")
    config = load_config(args.config, args.overrides, args.data_path)
    setup_logging(config.logging_dir, config.loglevel)
    from workflows.sweep.study import run_sweep

    result = run_sweep(
        args.config,
        args.overrides,
        args.data_path,
        args.sweep,
        trials=args.trials,
        storage=args.sweep_storage,
        progress_bar=not args.no_progress,
    )
    print(f"Sweep {result.name} ({result.storage}): {result.trained} run(s) trained here")
    if not (result.trained or result.failed or result.stopped or result.gave_up):
        what = "trials" if args.trials is not None else "combinations"
        print(f"All {result.size} {what} of this sweep are already done; its table:")
    print(result.table, end="")
    if result.report:
        print(f"Report: {shown_path(result.report['summary.md'].parent)}")
    if result.stopped:
        print(
            f"stopped by {result.stopped.signal_name}; run the same command again to go on "
            "where it stopped (the run it was on is trained again).",
            file=sys.stderr,
        )
        return result.stopped.exit_code
    if result.gave_up or (result.failed and not result.trained):
        why = result.gave_up or f"all {result.failed} run(s) of the sweep failed"
        print(
            f"error: {why}; the table says why. Fix that and run the same command again "
            "(finished runs are not trained twice).",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":
    run_cli(main)
