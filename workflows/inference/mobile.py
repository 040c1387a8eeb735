"""ExecuTorch export (``export_model.py --format executorch``): a ``.pte`` program for PyTorch's
on-device runtime, lowered to the XNNPACK backend (the CPU backend ExecuTorch ships for Android
and iOS).

The network is captured with ``torch.export`` at batch 1 (an app classifies one photo at a
time). fp32 is lowered as is and checked on random images against PyTorch; with ``--quantize
int8`` it goes through PT2E quantization first (``XNNPACKQuantizer``, symmetric int8,
per-channel weights), calibrated on training images through the checkpoint's preprocessing, and
is checked on held-out images like the int8 ONNX file. The app metadata
(``export.app_metadata``, the same keys as the ONNX file's ``metadata_props``) is stored as the
constant method ``cars_meta``, which returns it as one JSON string.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datasets.preprocessing import Preprocessing
from models.checkpoint import CheckpointMeta
from utils.errors import UserError
from utils.files import give_umask_permissions
from utils.timer import one_torch_thread
from workflows.inference.calibration import (
    agreement,
    check_agreement,
    int8_images,
    reference_logits,
    staging_folder,
)
from workflows.inference.export import INPUT_NAME, ExportReport, app_metadata, latencies
from workflows.inference.exported import PTE_META_METHOD, open_exported

FP32_TOLERANCE = 1e-3  # XNNPACK's fp32 kernels sum in another order than PyTorch's


def pte_metadata(meta: CheckpointMeta, quantize: str) -> dict[str, str]:
    """``app_metadata`` for a batch-1 program, plus the quantization used (if any)."""
    data = app_metadata(meta)
    data["input"] = data["input"].replace(
        f"{INPUT_NAME}: float32 [batch,", f"{INPUT_NAME}: float32 [1,"
    )
    if quantize:
        data["quantization"] = json.dumps(
            {
                "scheme": "PT2E static int8 (XNNPACKQuantizer, symmetric)",
                "weights": "int8, per output channel",
                "activations": "int8, per tensor, MinMax calibration",
            }
        )
    return data


def export_pte(
    net: torch.nn.Module,
    meta: CheckpointMeta,
    path: Path,
    data_path: Path | None,
    quantize: str,
    calibration_images: int,
    latency_runs: int,
) -> ExportReport:
    """Write ``path`` (``.pte``, XNNPACK), checked before it is kept (see the module doc)."""
    preprocessing = Preprocessing.from_dict(meta.preprocessing)
    h, w = preprocessing.image_size
    if quantize:
        assert data_path is not None  # the caller resolves it for int8
        calibration, held_out = int8_images(data_path, preprocessing, calibration_images)
    else:
        calibration = np.zeros((0, meta.img_channels, h, w), np.float32)
        generator = torch.Generator().manual_seed(0)
        held_out = torch.rand(8, meta.img_channels, h, w, generator=generator).numpy()
    with one_torch_thread(), staging_folder(path) as stage:
        expected = reference_logits(net, held_out)
        program = _lower(
            net, torch.from_numpy(held_out[:1]), calibration, pte_metadata(meta, quantize)
        )
        final = stage / path.name
        final.write_bytes(program)
        model = open_exported(final)
        got = model.run(held_out)
        same, max_prob_diff = agreement(expected, got)
        max_diff = float(np.abs(got - expected).max())
        if quantize:
            check_agreement(same, max_prob_diff, len(held_out), "int8 ExecuTorch")
        elif not max_diff <= FP32_TOLERANCE:
            raise UserError(
                f"the ExecuTorch program's logits differ from PyTorch's by up to {max_diff:.3g} "
                f"(allowed: {FP32_TOLERANCE}); it was not kept. Use --format onnx and report "
                "the problem."
            )
        latency, eager = latencies(model.run, net, held_out[:1], latency_runs)
        give_umask_permissions(final)
        os.replace(final, path)
    return ExportReport(
        path=path,
        format="executorch",
        size_mb=path.stat().st_size / 1e6,
        max_abs_diff=max_diff,
        latency_ms_runtime=latency,
        latency_ms_eager=eager,
        exporter="torch.export + executorch XNNPACK" + (" (PT2E int8)" if quantize else ""),
        quantize=quantize,
        agreement=same if quantize else None,
        max_prob_diff=max_prob_diff,
        verify_images=len(held_out),
        calibration_images=len(calibration),
    )


def _lower(
    net: torch.nn.Module, example: torch.Tensor, calibration: np.ndarray, metadata: dict[str, str]
) -> bytes:
    """``net`` as ExecuTorch program bytes (int8 when ``calibration`` holds images)."""
    try:
        # ExecuTorch is an optional, heavy package (native kernels, its own exir compiler): only
        # --format executorch imports it.
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import (  # noqa: PLC0415
            XnnpackPartitioner,
        )
        from executorch.exir import to_edge_transform_and_lower  # noqa: PLC0415
    except ImportError as err:
        raise UserError(
            f"--format executorch needs the executorch package ({err}). Install it with "
            "'pip install executorch==1.5.1' (it keeps torch 2.14.1), or export to ONNX."
        ) from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.export's and exir's deprecation notices
        if len(calibration):
            net = _quantized(net, example, calibration)
        exported = torch.export.export(net, (example,))
        edge = to_edge_transform_and_lower(
            exported,
            partitioner=[XnnpackPartitioner()],
            constant_methods={PTE_META_METHOD: json.dumps(metadata)},
        )
        return edge.to_executorch().buffer


def _quantized(net: torch.nn.Module, example: torch.Tensor, calibration: np.ndarray) -> Any:
    """PT2E: annotate for XNNPACK, observe ``calibration`` (one image at a time), convert."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (  # noqa: PLC0415
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import (  # noqa: PLC0415  # executorch's dep
        convert_pt2e,
        prepare_pt2e,
    )

    quantizer = XNNPACKQuantizer()
    quantizer.set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(torch.export.export(net, (example,)).module(), quantizer)
    with torch.no_grad():
        for image in calibration:
            prepared(torch.from_numpy(image[None]))
    return convert_pt2e(prepared)
