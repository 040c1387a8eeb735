"""Compute ``normalization_params_rgb`` / ``normalization_params_grayscale`` from the prepared
training images (thesis 4.2.2) and print them as YAML ready to paste into config.yml.

    python normalization_coeffs.py [-c CONFIG] [-d DATA_PATH] [--method per_image|pooled]
                                   [--split train|test] [--set KEY=VALUE ...]

The images are resized to the config's ``image_size`` first, as training sees them. The default
method, ``per_image``, is the thesis's (mean of the per-image means and standard deviations);
``pooled`` takes every pixel together. ``notebooks/normalization_coeffs.ipynb`` does the same.
"""

from __future__ import annotations

import argparse

from configuration import load_config
from datasets.normalization import DEFAULT_METHOD, METHODS, normalization_report
from utils.cli import add_set_argument, path_text
from utils.errors import run_cli


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "-c",
        "--config",
        type=path_text,
        default="config.yml",
        help="config file (default: config.yml)",
    )
    parser.add_argument(
        "-d",
        "--data-path",
        type=path_text,
        default=None,
        help="prepared data folder; overrides stanford_data_path",
    )
    parser.add_argument(
        "--method",
        choices=METHODS,
        default=DEFAULT_METHOD,
        help=f"how to reduce the pixels (default: {DEFAULT_METHOD}, the thesis's)",
    )
    parser.add_argument("--split", choices=("train", "test"), default="train")
    add_set_argument(parser, "image_size=[128,128]")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = load_config(args.config, args.overrides, args.data_path)
    print(
        normalization_report(
            config.stanford_data_path, config.image_size, split=args.split, method=args.method
        ),
        end="",
    )
    return 0


if __name__ == "__main__":
    run_cli(main)
