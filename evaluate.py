"""Evaluate a trained checkpoint on a prepared split: loss, top-1, top-5, per-class accuracy and the
confusion matrix (the split is read with the validation transforms, without augmentation).

python evaluate.py --checkpoint CKPT [-d DATA_PATH] [--split test|train] [--batch-size N]
                   [--out DIR] [--json]

CKPT is a .ckpt file, a run folder (its checkpoints/best.ckpt) or a model written by
export_model.py (.onnx fp32 or int8, .pte), read with the preprocessing in its metadata. Writes metrics.json,
per_class.csv, confusion.png and most_confused.csv to --out (default: <run>/evaluation/<name>-<split>/
for <run>/checkpoints/<name>.ckpt or <run>/export/<name>.onnx, e.g. evaluation/best-test/ or
evaluation/model-int8-test/). -d defaults to the run's stanford_data_path.
"""

from __future__ import annotations

import argparse
import json

from utils.cli import checkpoint_parser, non_negative_int, path_text, positive_int
from utils.errors import run_cli
from utils.text import shown_path
from workflows.inference.evaluation import evaluate_checkpoint


def parse_args(argv=None) -> argparse.Namespace:
    parser = checkpoint_parser(__doc__)
    parser.add_argument(
        "-d",
        "--data-path",
        type=path_text,
        default=None,
        help="prepared data folder (default: stanford_data_path from the run's config.yml)",
    )
    parser.add_argument("--split", choices=("test", "train"), default="test")
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument(
        "--out",
        type=path_text,
        default=None,
        help="output folder (default: <run>/evaluation/<checkpoint name>-<split>)",
    )
    parser.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: auto"
    )
    parser.add_argument(
        "--num-workers",
        type=non_negative_int,
        default=None,
        help="data loading processes (default: CPUs, max 8)",
    )
    parser.add_argument("--json", action="store_true", help="print metrics.json to stdout")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    result = evaluate_checkpoint(
        args.checkpoint,
        data_path=args.data_path,
        split=args.split,
        batch_size=args.batch_size,
        out_dir=args.out,
        device=args.device,
        num_workers=args.num_workers,
        progress=not args.no_progress,
    )
    out_dir = result.pop("out_dir")
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    if "quantization" in result:  # an exported model: no epoch, maybe quantized
        what = "exported, " + ("int8" if result["quantization"] else "fp32")
    else:
        what = f"epoch {result['epoch']}"
    print(
        f"{shown_path(result['checkpoint'])} ({what}) on the {result['split']} split: "
        f"{result['num_images']} images, {result['num_classes']} classes"
    )
    print(f"  loss   {result['loss']:.4f} ({result['loss_function']})")
    print(f"  top-1  {result['top1']:.2%}")
    print(f"  top-{result['top5_k']}  {result['top5']:.2%}")
    print(
        f"Files in {shown_path(out_dir)}: metrics.json, per_class.csv, confusion.png, most_confused.csv"
    )
    return 0


if __name__ == "__main__":
    run_cli(main)
