"""Classify image files with a trained checkpoint (``predict.py``).

Images go through the checkpoint's validation pipeline (resize, optional grayscale,
normalisation). ``class_id`` in the results is the 0-based index into the checkpoint's class names
(the labels CSVs' 1-based ``class`` is ``class_id + 1``); ``probability`` is the softmax over all
classes, so the probabilities of all classes sum to 1.

An exported model (``.onnx`` fp32 or int8, ``.pte``) predicts the same way, on the CPU, with the
preprocessing and class names read from its metadata (``workflows.inference.exported``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import UnidentifiedImageError

from datasets.preprocessing import Preprocessing
from datasets.transforms import build_transform, load_image
from models.checkpoint import load_network
from utils.errors import UserError
from utils.hardware import resolve_device
from workflows.inference.exported import is_exported, open_exported
from workflows.runs.run_folder import RunFolder

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
BATCH_SIZE = 32


def expand_paths(paths: Iterable[str | Path]) -> tuple[list[Path], list[dict[str, str]]]:
    """Files as given, and each folder's images (sorted, not recursive, by extension in any case).
    A missing path or a folder without images is a failure."""
    files: list[Path] = []
    failures: list[dict[str, str]] = []
    for item in paths:
        path = Path(item)
        if path.is_dir():
            try:
                images = sorted(
                    p
                    for p in path.iterdir()
                    if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                )
            except OSError as err:  # an unreadable folder
                failures.append(
                    {"path": str(path), "error": f"folder cannot be read ({err.strerror or err})"}
                )
                continue
            if not images:
                failures.append(
                    {
                        "path": str(path),
                        "error": f"folder holds no images ({', '.join(IMAGE_EXTENSIONS)})",
                    }
                )
            files.extend(images)
        elif path.is_file():
            files.append(path)
        elif path.exists():  # a FIFO, socket or device: not "missing"
            failures.append({"path": str(path), "error": "not a regular file or folder"})
        else:
            failures.append({"path": str(path), "error": "no such file or folder"})
    return files, failures


def predict_paths(
    checkpoint: str | Path,
    paths: Sequence[str | Path],
    top_k: int = 5,
    device: str = "auto",
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Top-``top_k`` predictions for every image in ``paths`` (files or folders).

    Returns ``(results, failures)``: ``results`` holds ``{"path", "predictions": [{"class_id",
    "class_name", "probability"}, ...]}`` in input order, best class first; ``failures`` holds
    ``{"path", "error"}`` for every file that could not be read (the others are still predicted).
    """
    if top_k < 1:
        raise UserError(f"--top-k must be at least 1, got {top_k}. Pass e.g. --top-k 5.")
    classify, class_names, preprocessing = _classifier(checkpoint, device)
    transform = build_transform(preprocessing)
    k = min(top_k, len(class_names))
    files, failures = expand_paths(paths)

    results: list[dict[str, Any]] = []
    batch: list[tuple[Path, torch.Tensor]] = []

    def flush() -> None:
        if not batch:
            return
        logits = classify(torch.stack([tensor for _, tensor in batch]))
        probs = torch.softmax(logits.double(), dim=1).cpu()
        values, indices = probs.topk(k, dim=1)
        for (path, _), vals, idxs in zip(batch, values, indices):
            results.append(
                {
                    "path": str(path),
                    "predictions": [
                        {
                            "class_id": int(i),
                            "class_name": class_names[int(i)],
                            "probability": float(v),
                        }
                        for v, i in zip(vals, idxs)
                    ],
                }
            )
        batch.clear()

    for path in files:
        try:
            tensor = transform(load_image(path))
        except Exception as err:  # one unreadable file must not stop the others
            failures.append({"path": str(path), "error": _reason(err)})
            continue
        batch.append((path, tensor))
        if len(batch) >= BATCH_SIZE:
            flush()
    flush()
    return results, failures


def _classifier(
    checkpoint: str | Path, device: str
) -> tuple[Callable[[torch.Tensor], torch.Tensor], list[str], Preprocessing]:
    """A batch -> logits function, the class names and the evaluation preprocessing of a
    checkpoint (on ``device``) or of an exported model (on the CPU, all cores)."""
    if is_exported(checkpoint):
        model = open_exported(checkpoint, threads=0)
        return (
            lambda images: torch.from_numpy(model.run(images.numpy())),
            model.class_names,
            model.preprocessing,
        )
    dev = resolve_device(device)
    net, meta = load_network(RunFolder.checkpoint_of(checkpoint))
    net.to(dev)

    def classify(images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return net(images.to(dev))

    preprocessing = Preprocessing.from_dict(meta.preprocessing).for_evaluation()
    return classify, meta.class_names, preprocessing


def _reason(err: Exception) -> str:
    if isinstance(err, UnidentifiedImageError):
        return "not an image that can be read (another kind of file, or damaged)"
    if isinstance(err, PermissionError):
        return "permission denied"
    text = str(err).strip()
    if "truncated" in text.lower():
        return f"damaged: the image data ends early ({text})"
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
