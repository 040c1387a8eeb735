"""``export_model.py``'s one entry point: fp32 ONNX / TorchScript (``export``), int8 ONNX
(``quantize``) or an ExecuTorch program, fp32 or int8 (``mobile``)."""

from __future__ import annotations

from pathlib import Path

from models.checkpoint import load_network
from utils.errors import UserError
from workflows.inference.calibration import CALIBRATION_IMAGES
from workflows.inference.export import LATENCY_RUNS, ExportReport, export_checkpoint
from workflows.inference.mobile import export_pte
from workflows.inference.quantize import export_int8_onnx
from workflows.runs.run_folder import RunFolder

FORMATS = ("onnx", "torchscript", "executorch")
QUANTIZE = ("int8",)


def export_model(
    checkpoint: str | Path,
    fmt: str = "onnx",
    output: str | Path | None = None,
    opset: int | None = None,
    *,
    quantize: str | None = None,
    calibration_images: int = CALIBRATION_IMAGES,
    data_path: str | Path | None = None,
    latency_runs: int = LATENCY_RUNS,
) -> ExportReport:
    """Export ``checkpoint`` as asked; every kind is checked before it is kept."""
    if fmt not in FORMATS:
        raise UserError(f"format '{fmt}' is not one of {', '.join(FORMATS)}. Pick one of them.")
    if quantize is not None and quantize not in QUANTIZE:
        raise UserError(
            f"--quantize '{quantize}' is not one of {', '.join(QUANTIZE)}. Pass --quantize int8, "
            "or leave it out for fp32."
        )
    if quantize and fmt == "torchscript":
        raise UserError("--quantize applies to onnx and executorch. Leave it out for torchscript.")
    if calibration_images < 1:
        raise UserError(
            f"--calibration-images must be at least 1, got {calibration_images}. Pass e.g. 300."
        )
    if fmt != "executorch" and not quantize:
        return export_checkpoint(checkpoint, fmt, output, opset, latency_runs=latency_runs)
    if opset is not None:
        raise UserError("--opset applies to fp32 --format onnx only. Leave it out.")
    checkpoint = RunFolder.checkpoint_of(checkpoint)
    run = RunFolder.of_checkpoint(checkpoint)
    path = _output_path(checkpoint, run, fmt, quantize, output)
    net, meta = load_network(checkpoint)
    net = net.cpu().eval()
    data = None
    if quantize:
        data = run.data_path(data_path, "int8 needs its training images for calibration")
    if fmt == "executorch":
        return export_pte(net, meta, path, data, quantize or "", calibration_images, latency_runs)
    assert data is not None
    return export_int8_onnx(net, meta, path, data, calibration_images, latency_runs)


def default_name(fmt: str, quantize: str | None) -> str:
    """``model.onnx``, ``model-int8.onnx``, ``model.pte``, ``model-int8.pte``."""
    suffix = {"onnx": ".onnx", "executorch": ".pte"}[fmt]
    return f"model-{quantize}{suffix}" if quantize else f"model{suffix}"


def _output_path(
    checkpoint: Path, run: RunFolder, fmt: str, quantize: str | None, output: str | Path | None
) -> Path:
    name = default_name(fmt, quantize)
    if output is None:
        return run.export / name
    path = Path(output)
    path = path / name if path.is_dir() else path
    if path.suffix == ".ckpt" or path.resolve() == checkpoint.resolve():
        raise UserError(
            f"--output '{path}' would overwrite a checkpoint with the exported model. Name a "
            f"{Path(name).suffix} file or a folder, or leave --output out ({name} in the run's "
            "export/ folder)."
        )
    return path
