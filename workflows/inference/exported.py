"""Run a model exported by ``export_model.py`` (``.onnx`` fp32 or int8, ExecuTorch ``.pte``) with
the preprocessing read from its own metadata, so that evaluation, prediction and the benchmarks
treat an exported file like a checkpoint.

The metadata is ``workflows.inference.export.app_metadata``: in an ONNX file's
``metadata_props`` (JSON-valued strings), in a ``.pte`` as the constant method ``cars_meta``
(one JSON string). A file without it is not a model of this project and is refused.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from datasets.preprocessing import Preprocessing
from utils.errors import UserError

EXPORTED_SUFFIXES = (".onnx", ".pte")
PTE_META_METHOD = "cars_meta"
REQUIRED_KEYS = ("class_names", "image_size", "mean", "std", "grayscale")
_JSON_KEYS = (*REQUIRED_KEYS, "num_classes", "quantization")

Runner = Callable[[np.ndarray], np.ndarray]


def is_exported(path: str | Path) -> bool:
    """Whether ``path`` names an exported model file (by its suffix), not a checkpoint."""
    return Path(path).suffix.lower() in EXPORTED_SUFFIXES


@dataclass(frozen=True)
class ExportedModel:
    """An exported model file, its parsed metadata and a function from a float32 batch
    ``[n, channels, h, w]`` to its logits ``[n, num_classes]``."""

    path: Path
    metadata: dict[str, Any]
    run: Runner

    @property
    def class_names(self) -> list[str]:
        return list(self.metadata["class_names"])

    @property
    def num_classes(self) -> int:
        return len(self.metadata["class_names"])

    @property
    def preprocessing(self) -> Preprocessing:
        """The evaluation preprocessing the metadata describes (mean 0 / std 1: none)."""
        mean, std = self.metadata["mean"], self.metadata["std"]
        identity = all(m == 0 for m in mean) and all(s == 1 for s in std)
        return Preprocessing(
            image_size=tuple(self.metadata["image_size"]),
            grayscale=bool(self.metadata["grayscale"]),
            normalize=not identity,
            mean=() if identity else tuple(mean),
            std=() if identity else tuple(std),
        )


def open_exported(path: str | Path, threads: int = 1) -> ExportedModel:
    """Load ``path`` (``.onnx`` or ``.pte``) for inference on the CPU; a ``UserError`` when it is
    missing, unreadable or not a model of this project. An ONNX file runs on ``threads`` threads
    (0: all cores); a ``.pte`` on ExecuTorch's process-wide thread pool (all cores unless
    ``set_pte_threads`` changed it before the first program was loaded)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"exported model '{path}' not found. Pass a file written by export_model.py (e.g. "
            "output/<run>/export/model.onnx) or a checkpoint."
        )
    if path.suffix.lower() == ".onnx":
        raw, run = _open_onnx(path, threads)
    elif path.suffix.lower() == ".pte":
        raw, run = _open_pte(path)
    else:
        raise UserError(
            f"'{path}' is not an exported model ({', '.join(EXPORTED_SUFFIXES)}). Pass an "
            "export_model.py file or a .ckpt checkpoint."
        )
    return ExportedModel(path, parse_metadata(raw, path), run)


def parse_metadata(raw: dict[str, str], path: Path) -> dict[str, Any]:
    """The string metadata as values; a ``UserError`` naming what is missing or malformed."""
    missing = [key for key in REQUIRED_KEYS if key not in raw]
    if missing:
        raise _not_ours(path, f"its metadata lacks {', '.join(missing)}")
    data: dict[str, Any] = dict(raw)
    for key in _JSON_KEYS:
        if key in raw:
            try:
                data[key] = json.loads(raw[key])
            except (TypeError, ValueError):
                raise _not_ours(path, f"its metadata '{key}' is not JSON") from None
    names, size = data["class_names"], data["image_size"]
    channels = 1 if data["grayscale"] is True else 3
    problem = None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        problem = "class_names is not a list of names"
    elif not (isinstance(size, list) and len(size) == 2 and all(_positive_int(v) for v in size)):
        problem = "image_size is not [height, width]"
    elif not isinstance(data["grayscale"], bool):
        problem = "grayscale is not true or false"
    elif any(not _numbers(data[k], channels) for k in ("mean", "std")) or 0 in data["std"]:
        problem = f"mean / std are not {channels} numbers (std non-zero)"
    if problem:
        raise _not_ours(path, problem)
    return data


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _numbers(value: Any, count: int) -> bool:
    return (
        isinstance(value, list)
        and len(value) == count
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    )


def _not_ours(path: Path, why: str) -> UserError:
    return UserError(
        f"'{path}' is not a model exported by this project ({why}). Export the checkpoint with "
        "export_model.py --checkpoint RUN (its files carry the class names and preprocessing), "
        "or pass the .ckpt checkpoint itself."
    )


# ---- ONNX ---------------------------------------------------------------------------------------
def _open_onnx(path: Path, threads: int) -> tuple[dict[str, str], Runner]:
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf's DecodeError and friends: not an ONNX file
        raise _not_ours(path, f"it cannot be read as ONNX: {type(err).__name__}") from None
    raw = {prop.key: prop.value for prop in model.metadata_props}
    parse_metadata(raw, path)  # refuse a foreign file before building a session for it
    return raw, onnx_runner(path, threads)


def onnx_runner(path: str | Path, threads: int = 1) -> Runner:
    """An ONNX Runtime CPU session of ``path`` on ``threads`` intra-op threads (0: all cores)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # ONNX Runtime's own exception types
        raise UserError(
            f"ONNX Runtime {ort.__version__} cannot load '{path}' ({type(err).__name__}: "
            f"{str(err).strip()[:300]}). Export it again with this project's export_model.py."
        ) from None
    name = session.get_inputs()[0].name
    return lambda images: session.run(None, {name: np.ascontiguousarray(images, np.float32)})[0]


# ---- ExecuTorch ---------------------------------------------------------------------------------
def _open_pte(path: Path) -> tuple[dict[str, str], Runner]:
    try:
        # ExecuTorch is optional and heavy (its runtime loads native kernels): only .pte needs it.
        from executorch.runtime import Runtime  # noqa: PLC0415
    except ImportError:
        raise UserError(
            f"'{path}' is an ExecuTorch program, and the executorch package is not installed. "
            "Install it (pip install executorch==1.5.1) or use the .onnx export."
        ) from None
    try:
        # A path, not bytes: the runtime reads from the buffer it is given without owning it.
        program = Runtime.get().load_program(path)
        names = program.method_names
    except Exception as err:  # the runtime's RuntimeError/ValueError for a foreign file
        raise _not_ours(path, f"ExecuTorch cannot load it: {type(err).__name__}") from None
    if PTE_META_METHOD not in names or "forward" not in names:
        raise _not_ours(path, f"it has no '{PTE_META_METHOD}' method")
    # The same string-valued mapping as an ONNX file's metadata_props, as one JSON string.
    text = program.load_method(PTE_META_METHOD).execute([])[0]
    try:
        raw = json.loads(text)
    except (TypeError, ValueError):
        raw = None
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise _not_ours(path, f"its '{PTE_META_METHOD}' is not a JSON object of strings")
    return raw, pte_runner(program)


def pte_runner(program: Any) -> Runner:
    """Batch over a ``.pte``'s ``forward`` (traced at batch 1): one image at a time. The runner
    holds the program, which must outlive its methods."""
    forward = program.load_method("forward")

    def run(images: np.ndarray) -> np.ndarray:
        logits = []
        for image in images:
            tensor = torch.from_numpy(np.ascontiguousarray(image[None], np.float32))
            # copied at once: the output may live in the method's planned memory
            logits.append(forward.execute([tensor])[0].numpy().copy())
        return np.concatenate(logits)

    run.program = program  # type: ignore[attr-defined]  # kept alive with the runner
    return run

    return run


def set_pte_threads(threads: int) -> None:
    """The size of ExecuTorch's process-wide thread pool (0: all cores). Call it before the
    process loads its first program: resetting the pool under a loaded program crashes the
    runtime (executorch 1.5.1)."""
    from executorch.extension.pybindings.portable_lib import (  # noqa: PLC0415  # optional
        _unsafe_reset_threadpool,
    )

    _unsafe_reset_threadpool(threads if threads > 0 else (os.cpu_count() or 1))
