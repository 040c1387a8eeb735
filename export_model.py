"""Export a trained checkpoint for use outside this project: ONNX (default), int8 ONNX,
TorchScript, or an ExecuTorch program for phones. Every export is checked against the checkpoint
before it is kept.

python export_model.py --checkpoint CKPT [--format onnx|torchscript|executorch] [--quantize int8]
                       [--calibration-images N] [-d DATA_PATH] [--output PATH] [--opset N]

Default output: <run>/export/model.onnx (model-int8.onnx with --quantize int8, model.pt for
torchscript, model.pte / model-int8.pte for executorch). The ONNX file has a dynamic batch axis
and carries class_names, image_size, mean, std and grayscale in its metadata_props (int8 also
quantization). int8 is calibrated on N training images (default 300, fewer when the split is
smaller) of DATA_PATH (default: the run's stanford_data_path) and checked on its test images.
"""

from __future__ import annotations

import argparse
import sys

from utils.cli import checkpoint_parser, path_text, positive_int
from utils.errors import run_cli
from utils.text import shown_path
from workflows.inference.calibration import CALIBRATION_IMAGES
from workflows.inference.deploy import FORMATS, QUANTIZE, export_model

RUNTIMES = {"onnx": "ONNX Runtime", "torchscript": "TorchScript", "executorch": "ExecuTorch"}


def parse_args(argv=None) -> argparse.Namespace:
    parser = checkpoint_parser(__doc__)
    parser.add_argument("--format", choices=FORMATS, default="onnx")
    parser.add_argument(
        "--quantize",
        choices=QUANTIZE,
        default=None,
        help="int8: static quantization (onnx, executorch)",
    )
    parser.add_argument(
        "--calibration-images",
        type=positive_int,
        default=CALIBRATION_IMAGES,
        help=f"training images int8 is calibrated on (default {CALIBRATION_IMAGES})",
    )
    parser.add_argument(
        "-d",
        "--data-path",
        type=path_text,
        default=None,
        help="prepared data for int8 (default: stanford_data_path from the run's config.yml)",
    )
    parser.add_argument(
        "--output",
        type=path_text,
        default=None,
        help="output file or folder (default: <run>/export/)",
    )
    parser.add_argument(
        "--opset",
        type=int,
        default=None,
        help="ONNX opset, 7 to 23 (default: the exporter's choice, opset 20 with torch 2.14)",
    )
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    kind = f"{args.format}{' ' + args.quantize if args.quantize else ''}"
    # Exporting and checking take tens of seconds on a CPU: say so before the wait.
    print(
        f"Exporting {args.checkpoint} to {kind}, then checking the file against the checkpoint "
        "(a minute or less on a CPU)...",
        file=sys.stderr,
        flush=True,
    )
    report = export_model(
        args.checkpoint,
        args.format,
        args.output,
        args.opset,
        quantize=args.quantize,
        calibration_images=args.calibration_images,
        data_path=args.data_path,
    )
    runtime = RUNTIMES[report.format]
    opset = f", opset {report.opset}" if report.opset is not None else ""
    print(f"Exported {shown_path(report.path)} ({report.size_mb:.1f} MB; {report.exporter}{opset})")
    if report.fp32_size_mb:
        print(f"  size: {report.size_mb / report.fp32_size_mb:.2f}x the fp32 ONNX file")
    if report.agreement is not None:
        print(
            f"  check on {report.verify_images} held-out images: top-1 agrees with the checkpoint "
            f"on {report.agreement:.1%}, largest probability difference {report.max_prob_diff:.3f}"
            f" (calibrated on {report.calibration_images} training images)"
        )
    else:
        images = (
            f"{report.verify_images} random images"
            if report.verify_images
            else "batches of 1 and 3"
        )
        print(f"  check: max |logit difference| vs PyTorch {report.max_abs_diff:.2e} ({images})")
    if report.format == "executorch":  # its thread pool is process-wide: all cores here
        print(
            f"  CPU latency at batch 1 (median): ExecuTorch {report.latency_ms_runtime:.2f} ms on "
            f"all cores, PyTorch eager {report.latency_ms_eager:.2f} ms on one thread"
        )
        return 0
    print(
        f"  CPU latency at batch 1, one thread (median): {runtime} {report.latency_ms_runtime:.2f} ms, "
        f"PyTorch eager {report.latency_ms_eager:.2f} ms"
    )
    return 0


if __name__ == "__main__":
    run_cli(main)
