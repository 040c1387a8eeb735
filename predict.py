"""Classify car images with a trained checkpoint or a model written by export_model.py.

python predict.py --checkpoint CKPT|RUN_FOLDER|MODEL.onnx|MODEL.pte PATH... [--top-k 5] [--json]
                  [--device auto|cpu|cuda]

PATH is an image file (JPEG, PNG, BMP, WebP; RGB, grayscale or CMYK) or a folder (its images,
sorted; not recursive). Prints the top-k classes per image with their softmax probabilities;
--json prints one JSON list of {"path", "predictions": [{"class_id", "class_name",
"probability"}, ...]}, where class_id is the 0-based class index (the labels CSV's `class` is
class_id + 1). An exported model runs on the CPU (--device does not apply) with the
preprocessing and class names from its metadata. Files that cannot be read are reported on
stderr and make the exit code 1 (2 when no image could be predicted).
"""

from __future__ import annotations

import argparse
import json
import sys

from utils.cli import checkpoint_parser, path_text
from utils.errors import run_cli
from workflows.inference.prediction import predict_paths


def parse_args(argv=None) -> argparse.Namespace:
    parser = checkpoint_parser(__doc__)
    parser.add_argument(
        "paths", nargs="+", type=path_text, metavar="PATH", help="image files or folders"
    )
    parser.add_argument("--top-k", type=int, default=5, help="classes shown per image (default 5)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: auto"
    )
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    results, failures = predict_paths(args.checkpoint, args.paths, args.top_k, args.device)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for result in results:
            print(result["path"])
            for rank, pred in enumerate(result["predictions"], start=1):
                print(
                    f"  {rank}. {pred['probability']:7.2%}  {pred['class_name']} "
                    f"(class_id {pred['class_id']})"
                )
    for failure in failures:
        print(f"error: {failure['path']}: {failure['error']}", file=sys.stderr)
    if not failures:
        return 0
    print(
        f"error: {len(failures)} path(s) could not be predicted. Give image files (JPEG, PNG, "
        "BMP, WebP) or folders holding them.",
        file=sys.stderr,
    )
    return 1 if results else 2  # 1: some images failed, 2: none could be predicted


if __name__ == "__main__":
    run_cli(main)
