"""int8 ONNX export (``export_model.py --quantize int8``): ONNX Runtime's static quantization.

The checkpoint is exported to fp32 ONNX as for ``--format onnx``, pre-processed by ONNX
Runtime's ``quant_pre_process`` (shape inference, BatchNorm folded into the convolutions) and
quantized with ``quantize_static``: QDQ format (QuantizeLinear/DequantizeLinear pairs, which
every ONNX Runtime build, Mobile included, runs with int8 kernels), int8 weights per output
channel, int8 activations with MinMax ranges calibrated on training images through the
checkpoint's own preprocessing. The file carries the fp32 export's metadata plus
``quantization`` (JSON). It is kept only when its top-1 agrees with the checkpoint on held-out
(test split) images (``calibration.MIN_AGREEMENT``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from datasets.preprocessing import Preprocessing
from models.checkpoint import CheckpointMeta
from utils.files import give_umask_permissions
from utils.timer import one_torch_thread
from workflows.inference.calibration import (
    agreement,
    check_agreement,
    int8_images,
    reference_logits,
    staging_folder,
)
from workflows.inference.export import (
    INPUT_NAME,
    ExportReport,
    app_metadata,
    latencies,
    write_onnx,
)
from workflows.inference.exported import onnx_runner


def quantization_metadata(calibration_images: int) -> dict[str, str]:
    """What ``quantization`` says in an int8 ONNX file's metadata."""
    return {
        "quantization": json.dumps(
            {
                "scheme": "static int8, QDQ",
                "weights": "int8, per output channel, symmetric",
                "activations": "int8, per tensor, MinMax calibration",
                "calibration_images": calibration_images,
                "tool": f"onnxruntime.quantization {ort.__version__}",
            }
        )
    }


def export_int8_onnx(
    net: torch.nn.Module,
    meta: CheckpointMeta,
    path: Path,
    data_path: Path,
    calibration_images: int,
    latency_runs: int,
) -> ExportReport:
    """Write ``path`` (int8 ONNX) from ``net``, checked on held-out images before it is kept."""
    preprocessing = Preprocessing.from_dict(meta.preprocessing)
    calibration, held_out = int8_images(data_path, preprocessing, calibration_images)
    with one_torch_thread(), staging_folder(path) as stage:
        expected = reference_logits(net, held_out)
        write_onnx(net, torch.from_numpy(calibration[:2]), meta, stage / "fp32.onnx", None)
        _quantize(stage / "fp32.onnx", stage / "int8.onnx", calibration)
        model = onnx.load(str(stage / "int8.onnx"))
        onnx.helper.set_model_props(
            model, {**app_metadata(meta), **quantization_metadata(len(calibration))}
        )
        model.doc_string = f"int8 (ONNX Runtime static QDQ) export of run {meta.run_name}"
        final = stage / path.name
        final.write_bytes(model.SerializeToString())
        runner = onnx_runner(final, threads=1)
        same, max_prob_diff = agreement(expected, runner(held_out))
        check_agreement(same, max_prob_diff, len(held_out), "int8 ONNX")
        latency, eager = latencies(runner, net, held_out[:1], latency_runs)
        fp32_mb = (stage / "fp32.onnx").stat().st_size / 1e6
        give_umask_permissions(final)
        os.replace(final, path)
    return ExportReport(
        path=path,
        format="onnx",
        size_mb=path.stat().st_size / 1e6,
        max_abs_diff=float(np.abs(runner(held_out[:8]) - expected[:8]).max()),
        latency_ms_runtime=latency,
        latency_ms_eager=eager,
        exporter="torch.onnx + onnxruntime.quantization",
        quantize="int8",
        agreement=same,
        max_prob_diff=max_prob_diff,
        verify_images=len(held_out),
        calibration_images=len(calibration),
        fp32_size_mb=fp32_mb,
    )


def _quantize(fp32: Path, dest: Path, calibration: np.ndarray) -> None:
    # onnxruntime.quantization pulls in its calibrators (and sympy for shape inference): only the
    # int8 path pays for the import.
    from onnxruntime.quantization import (  # noqa: PLC0415
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            step = 16  # the export has a dynamic batch axis
            self.batches = iter(calibration[i : i + step] for i in range(0, len(calibration), step))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {INPUT_NAME: batch}

    prepared = dest.with_name("prepared.onnx")
    quant_pre_process(str(fp32), str(prepared))
    quantize_static(
        str(prepared),
        str(dest),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
    )
