"""Export a trained checkpoint to ONNX (default) or TorchScript, for apps that do not use this
project. The export is checked against PyTorch before it is kept.

python export_model.py --checkpoint CKPT [--format onnx|torchscript] [--output PATH] [--opset N]

Default output: <run>/export/model.onnx (model.pt for torchscript). The ONNX file has a dynamic
batch axis and carries class_names, image_size, mean, std and grayscale in its metadata_props.
"""

from __future__ import annotations

import argparse

from utils.cli import checkpoint_parser, path_text
from utils.errors import run_cli
from utils.text import shown_path
from workflows.inference.export import export_checkpoint


def parse_args(argv=None) -> argparse.Namespace:
    parser = checkpoint_parser(__doc__)
    parser.add_argument("--format", choices=("onnx", "torchscript"), default="onnx")
    parser.add_argument(
        "--output",
        type=path_text,
        default=None,
        help="output file (default: <run>/export/model.onnx or .pt)",
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
    report = export_checkpoint(args.checkpoint, args.format, args.output, args.opset)
    runtime = "ONNX Runtime" if report.format == "onnx" else "TorchScript"
    opset = f", opset {report.opset}" if report.opset is not None else ""
    print(f"Exported {shown_path(report.path)} ({report.size_mb:.1f} MB; {report.exporter}{opset})")
    print(
        f"  check: max |logit difference| vs PyTorch {report.max_abs_diff:.2e} (batches of 1 and 3)"
    )
    print(
        f"  CPU latency at batch 1, one thread (median): {runtime} {report.latency_ms_runtime:.2f} ms, "
        f"PyTorch eager {report.latency_ms_eager:.2f} ms"
    )
    return 0


if __name__ == "__main__":
    run_cli(main)
