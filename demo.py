"""The whole workflow on a small generated dataset, on the CPU, in a few minutes (``make demo``).

python demo.py [--dir demo] [--epochs N]
"""

from __future__ import annotations

import argparse
import json

from utils.cli import path_text, positive_int
from utils.errors import run_cli
from workflows.demo import run_demo


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dir", type=path_text, default="demo", help="folder for the demo's files (default: demo)"
    )
    parser.add_argument(
        "--epochs", type=positive_int, default=None, help="training epochs (default: 12)"
    )
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    outputs = run_demo(args.dir, epochs=args.epochs)
    print("Demo finished. Everything it made:")
    print(json.dumps(outputs, indent=2))
    return 0


if __name__ == "__main__":
    run_cli(main)
