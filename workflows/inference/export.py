"""Export a trained checkpoint for use outside this project (``export_model.py``).

ONNX (default): exported with ``torch.onnx.export(..., dynamo=True)`` (the torch.export-based
exporter, the default and maintained one in torch 2.9+) with a dynamic batch axis. When it fails,
or for ``--opset`` below 18 (which it cannot write directly), the older TorchScript-based exporter
(``dynamo=False``, deprecated upstream, opsets 7 to 20) is used instead.
The weights are stored inside the single ``.onnx`` file. The input is ``images`` (float32,
``[batch, channels, h, w]``), the output ``logits`` (``[batch, num_classes]``; apply softmax for
probabilities). ``metadata_props`` carries everything an app needs to preprocess an image:

- ``class_names``: JSON list, index = class id (0-based);
- ``image_size``: JSON ``[h, w]`` (resize the whole image to it, aspect ratio not kept);
- ``mean`` / ``std``: JSON lists; ``input = (pixel / 255 - mean) / std`` per channel (zeros and
  ones when the run did not normalise);
- ``grayscale``: ``true`` / ``false`` (one channel, PIL's ``L`` conversion, when true).

TorchScript (``--format torchscript``): a traced module (``torch.jit``, deprecated upstream but
still loadable with ``torch.jit.load``); the same metadata is stored as the extra file
``cars_meta.json`` (read it with ``torch.jit.load(path, _extra_files={"cars_meta.json": ""})``),
one JSON object whose values are plain JSON (``class_names`` a list, ``grayscale`` a boolean).

Every export is written to a temporary file, checked against PyTorch on a random batch (largest
absolute logit difference at most ``TOLERANCE``) and only then renamed into place.
"""

from __future__ import annotations

import io
import json
import logging
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from datasets.preprocessing import Preprocessing
from models.checkpoint import CheckpointMeta, load_network
from utils.errors import UserError, first_line
from utils.files import replacing
from utils.timer import median_ms, one_torch_thread
from workflows.runs.run_folder import RunFolder

log = logging.getLogger(__name__)

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
TOLERANCE = 1e-4
INPUT_NAME = "images"
OUTPUT_NAME = "logits"
TORCHSCRIPT_META_FILE = "cars_meta.json"
DYNAMO_MIN_OPSET = 18  # lower opsets go through the TorchScript-based exporter
MIN_OPSET = 7  # the oldest the TorchScript-based exporter writes
MAX_OPSET = 23  # the newest torch 2.14's exporter writes (torch.onnx's ONNX_MAX_OPSET)
VERIFY_BATCH_SIZES = (1, 3)  # not the export's example batch of 2: proves the dynamic batch axis
LATENCY_RUNS = 20
LATENCY_BUDGET_S = 3.0


@dataclass
class ExportReport:
    """Where the export went and how it compares to PyTorch eager on the CPU."""

    path: Path
    format: str
    size_mb: float  # 10^6 bytes
    max_abs_diff: float
    latency_ms_runtime: float  # ONNX Runtime or the loaded TorchScript module, batch 1, median
    latency_ms_eager: float  # PyTorch eager, batch 1, median (both on one CPU thread)
    exporter: str = ""
    opset: int | None = None
    quantize: str = ""  # "int8" or "" (fp32)
    agreement: float | None = None  # top-1 agreement with the checkpoint on held-out images
    max_prob_diff: float | None = None  # largest softmax probability difference there
    verify_images: int = 0
    calibration_images: int = 0
    fp32_size_mb: float | None = None  # the fp32 file the int8 one was quantized from

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        return data


def app_metadata(meta: CheckpointMeta) -> dict[str, str]:
    """String metadata for the exported file: what an app needs to preprocess images."""
    preprocessing = Preprocessing.from_dict(meta.preprocessing)
    mean, std = preprocessing.input_mean_std()
    return {
        "class_names": json.dumps(meta.class_names),
        "image_size": json.dumps(list(preprocessing.image_size)),
        "mean": json.dumps(mean),
        "std": json.dumps(std),
        "grayscale": json.dumps(preprocessing.grayscale),
        "num_classes": json.dumps(meta.num_classes),
        "architecture": meta.architecture,
        "run_name": meta.run_name,
        "input": f"{INPUT_NAME}: float32 [batch, {meta.img_channels}, h, w], pixels scaled to "
        "[0, 1] after resizing to image_size (bilinear), then (x - mean) / std per channel",
        "output": f"{OUTPUT_NAME}: float32 [batch, num_classes]; softmax gives probabilities",
    }


def torchscript_metadata(meta: CheckpointMeta) -> dict[str, Any]:
    """``app_metadata`` as plain JSON values (lists, numbers, booleans): a JSON file need not
    nest JSON in strings, as ONNX's string-only ``metadata_props`` must."""
    data: dict[str, Any] = {}
    for key, value in app_metadata(meta).items():
        try:
            data[key] = json.loads(value) if key in _JSON_VALUED else value
        except ValueError:
            data[key] = value
    return data


_JSON_VALUED = ("class_names", "image_size", "mean", "std", "grayscale", "num_classes")


def export_checkpoint(
    checkpoint: str | Path,
    fmt: str = "onnx",
    output: str | Path | None = None,
    opset: int | None = None,
    *,
    latency_runs: int = LATENCY_RUNS,
) -> ExportReport:
    """Export ``checkpoint`` to ONNX or TorchScript, verify it, and measure its CPU latency
    (median of ``latency_runs`` runs at batch 1, after warm-up)."""
    if fmt not in FORMATS:
        raise UserError(f"format '{fmt}' is not one of {', '.join(FORMATS)}. Pick one of them.")
    if opset is not None and fmt != "onnx":
        raise UserError("--opset only applies to --format onnx. Leave it out for torchscript.")
    newest = min(MAX_OPSET, onnx.defs.onnx_opset_version())
    if opset is not None and not MIN_OPSET <= opset <= newest:
        raise UserError(
            f"--opset {opset} is not an ONNX opset this exporter can write ({MIN_OPSET} to "
            f"{newest}; {DYNAMO_MIN_OPSET} and up use the current exporter). Leave --opset out "
            "for the exporter's choice."
        )
    checkpoint = RunFolder.checkpoint_of(checkpoint)
    net, meta = load_network(checkpoint)
    net = net.cpu().eval()  # BatchNorm1d in GhostNet's classifier needs eval mode
    path = _output_path(checkpoint, fmt, output)
    # One CPU thread throughout: latencies comparable between runtimes, and stable on a busy
    # machine (where PyTorch's multi-threaded small ops can slow down a hundredfold).
    with one_torch_thread():
        return _export_verified(net, meta, path, fmt, opset, latency_runs)


def _export_verified(
    net: torch.nn.Module,
    meta: CheckpointMeta,
    path: Path,
    fmt: str,
    opset: int | None,
    latency_runs: int,
) -> ExportReport:
    """Write to a temporary file, check it against ``net``, time both, rename into place."""
    generator = torch.Generator().manual_seed(0)
    h, w = Preprocessing.from_dict(meta.preprocessing).image_size
    example = torch.rand(2, meta.img_channels, h, w, generator=generator)
    image = torch.rand(1, meta.img_channels, h, w, generator=generator).numpy()

    def unwritable(err: OSError) -> UserError:
        return UserError(
            f"cannot write the export to '{path.parent}' ({err}). Pass a writable --output PATH."
        )

    with replacing(path, unwritable) as tmp:
        if fmt == "onnx":
            exporter, used_opset = write_onnx(net, example, meta, tmp, opset)
            runner = _onnx_runner(tmp)
        else:
            exporter, used_opset = _write_torchscript(net, example, meta, tmp), None
            runner = _torchscript_runner(tmp)
        max_diff = 0.0
        for batch_size in VERIFY_BATCH_SIZES:
            images = torch.rand(batch_size, meta.img_channels, h, w, generator=generator)
            with torch.inference_mode():
                expected = net(images).numpy()
            got = runner(images.numpy())
            if got.shape != expected.shape:
                raise UserError(
                    f"the exported model returned logits of shape {got.shape} for a batch of "
                    f"{batch_size}, PyTorch {expected.shape}; the export is wrong and was not "
                    "kept. Try the other --format (or another --opset) and report the problem."
                )
            max_diff = max(max_diff, float(np.abs(got - expected).max()))
        if not max_diff <= TOLERANCE:  # also catches NaN
            raise UserError(
                f"the exported model's logits differ from PyTorch's by up to {max_diff:.3g} "
                f"(allowed: {TOLERANCE}); the export was not kept. Try the other --format (or "
                "another --opset) and report the problem."
            )
        latency_runtime, latency_eager = latencies(runner, net, image, latency_runs)
    return ExportReport(
        path=path,
        format=fmt,
        size_mb=path.stat().st_size / 1e6,
        max_abs_diff=max_diff,
        latency_ms_runtime=latency_runtime,
        latency_ms_eager=latency_eager,
        exporter=exporter,
        opset=used_opset,
    )


def _output_path(checkpoint: str | Path, fmt: str, output: str | Path | None) -> Path:
    default_name = f"model{FORMATS[fmt]}"
    if output is None:
        return RunFolder.of_checkpoint(checkpoint).export / default_name
    path = Path(output)
    path = path / default_name if path.is_dir() else path
    if path.suffix == ".ckpt" or path.resolve() == Path(checkpoint).resolve():
        raise UserError(
            f"--output '{path}' would overwrite a checkpoint with the exported model. Name a "
            f"{FORMATS[fmt]} file or a folder, or leave --output out ({default_name} in the "
            "run's export/ folder)."
        )
    return path


def latencies(
    runner: Callable[[np.ndarray], Any], net: torch.nn.Module, image: np.ndarray, runs: int
) -> tuple[float, float]:
    """Median milliseconds of one ``image`` through the exported model's ``runner`` and through
    ``net`` in PyTorch eager, on the thread count in effect (see the module doc)."""
    warmup = min(3, runs)
    runtime = median_ms(lambda: runner(image), runs, warmup=warmup, budget_s=LATENCY_BUDGET_S)
    tensor = torch.from_numpy(image)
    with torch.inference_mode():
        eager = median_ms(lambda: net(tensor), runs, warmup=warmup, budget_s=LATENCY_BUDGET_S)
    return runtime, eager


# ---- ONNX ---------------------------------------------------------------------------------------
def write_onnx(
    net: torch.nn.Module, example: torch.Tensor, meta: CheckpointMeta, dest: Path, opset: int | None
) -> tuple[str, int | None]:
    """Write ``net`` as ONNX with ``meta``'s app metadata to ``dest``: (exporter, opset)."""
    exporters = [("torch.onnx dynamo", _export_dynamo), ("torch.onnx legacy", _export_legacy)]
    if opset is not None and opset < DYNAMO_MIN_OPSET:
        exporters = exporters[1:]  # dynamo would export at 18 and convert down, often failing
    problems = []
    for exporter, export in exporters:
        try:
            model = export(net, example, opset)
        except Exception as err:  # any exporter failure: try the next one
            problems.append(f"{exporter}: {type(err).__name__}: {first_line(err)}")
            continue
        used = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
        if opset is None or used == opset:
            break
        problems.append(f"{exporter}: produced opset {used} instead of {opset}")
    else:
        raise UserError(
            f"ONNX export failed ({'; '.join(problems)}). Try another --opset (18 to 20 use the "
            "current exporter) or --format torchscript."
        )
    for problem in problems:
        log.warning("ONNX exporter fell back after %s", problem)
    onnx.helper.set_model_props(model, app_metadata(meta))
    model.doc_string = (
        f"{meta.architecture} trained on Stanford Cars by the cars project (run {meta.run_name}); "
        "see metadata_props for the preprocessing and class names."
    )
    dest.write_bytes(model.SerializeToString())  # weights inside the one file (under 2 GB)
    return exporter, used


def _export_dynamo(net: torch.nn.Module, example: torch.Tensor, opset: int | None):
    batch = torch.export.Dim("batch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            net,
            (example,),
            None,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=opset,
            dynamo=True,
            dynamic_shapes=({0: batch},),
            verbose=False,
        )
    return program.model_proto


def _export_legacy(net: torch.nn.Module, example: torch.Tensor, opset: int | None):
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's own deprecation notice
        torch.onnx.export(
            net,
            (example,),
            buffer,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=opset,
            dynamo=False,
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )
    return onnx.load_from_string(buffer.getvalue())


def _onnx_runner(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    try:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # latency is measured on one thread (see above)
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:
        raise UserError(
            f"ONNX Runtime cannot load the exported model ({type(err).__name__}: {err}); the "
            "export was not kept. Try another --opset (e.g. 17) or --format torchscript."
        ) from None
    name = session.get_inputs()[0].name
    return lambda images: session.run(None, {name: images})[0]


# ---- TorchScript --------------------------------------------------------------------------------
def _write_torchscript(
    net: torch.nn.Module, example: torch.Tensor, meta: CheckpointMeta, dest: Path
) -> str:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream
        traced = torch.jit.trace(net, example, check_trace=False)
        torch.jit.save(
            traced,
            str(dest),
            _extra_files={TORCHSCRIPT_META_FILE: json.dumps(torchscript_metadata(meta))},
        )
    return "torch.jit.trace"


def _torchscript_runner(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(path), map_location="cpu")
    module.eval()

    def run(images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(images)).numpy()

    return run


def read_torchscript_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata stored beside a TorchScript export (``torchscript_metadata``)."""
    extra = {TORCHSCRIPT_META_FILE: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return json.loads(extra[TORCHSCRIPT_META_FILE])
