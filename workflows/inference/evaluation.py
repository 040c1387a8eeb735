"""Evaluate a trained checkpoint on a prepared split (``evaluate.py``): loss, top-1/top-5,
per-class accuracy and the confusion matrix.

The numbers come from ``trainer.test`` with the same ``NetModule`` step that computed
``valid_loss`` and ``valid_acc`` during training, and the split is read with the checkpoint's
preprocessing without the training-only bbox crop or augmentation, so on the split used for
validation (``test``) top-1 equals the ``valid_acc`` logged for the checkpoint's epoch. The loss
is the one the checkpoint was trained with (format-1 checkpoints did not record it: for them it
comes from the run's ``config.yml``, else plain ``CrossEntropyLoss``).

Files written to ``out_dir`` (default ``<run>/evaluation/``): ``metrics.json`` (``loss``,
``top1``, ``top5`` as fractions, ``num_images``, ``split``, ``checkpoint``, ``epoch``,
``top5_k``, ``loss_function``, ...), ``per_class.csv``, ``confusion.png`` and
``most_confused.csv`` (see ``workflows.inference.evaluation_files``).

An exported model (``.onnx`` fp32 or int8, ``.pte``; see ``workflows.inference.exported``) is
evaluated the same way without Lightning: its logits on the split, read with the preprocessing
from its metadata, give the same four files (default folder ``<run>/evaluation/<stem>-<split>/``
for ``<run>/export/<stem>.onnx``, ``<stem>-pte-<split>/`` for a ``.pte``); its loss is
cross-entropy (an exported file does not record the training loss) and ``metrics.json`` adds
``quantization``.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from datasets.labels import SPLITS
from datasets.preprocessing import Preprocessing
from datasets.stanford_data import StanfordCarsDataset
from models.checkpoint import CheckpointMeta, network_from, read_checkpoint
from models.net_module import TOP_K, NetModule
from models.optimization import build_loss
from utils.errors import UserError
from utils.files import write_json_atomic
from utils.hardware import resolve_device, usable_workers
from utils.logger import lightning_info_off
from workflows.inference.evaluation_files import (
    plot_confusion,
    write_most_confused,
    write_per_class,
)
from workflows.inference.exported import ExportedModel, is_exported, open_exported
from workflows.runs.run_folder import RunFolder
from workflows.training.callbacks import make_trainer

log = logging.getLogger(__name__)


def evaluate_checkpoint(
    checkpoint: str | Path,
    data_path: str | Path | None = None,
    split: str = "test",
    batch_size: int = 64,
    out_dir: str | Path | None = None,
    *,
    device: str = "auto",
    num_workers: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate ``checkpoint`` on ``split`` of the prepared data; write the four result files to
    ``out_dir`` and return the content of ``metrics.json`` (plus ``out_dir``)."""
    if split not in SPLITS:
        raise UserError(f"split '{split}' is not one of {', '.join(SPLITS)}. Pick one of them.")
    if batch_size < 1:
        raise UserError(f"batch size must be at least 1, got {batch_size}. Pass e.g. 64.")
    if is_exported(checkpoint):
        return evaluate_exported(checkpoint, data_path, split, batch_size, out_dir)
    checkpoint = RunFolder.checkpoint_of(checkpoint)
    ckpt = read_checkpoint(checkpoint)
    net, meta = network_from(ckpt)
    run = RunFolder.of_checkpoint(checkpoint)
    run_config = run.read_config()
    data_path = run.data_path(data_path, "evaluating needs the prepared images")
    out = Path(out_dir) if out_dir is not None else run.evaluation_for(checkpoint, split)
    loss_fn, loss_name = _loss_of(meta, run_config)

    preprocessing = Preprocessing.from_dict(meta.preprocessing).for_evaluation()
    dataset = StanfordCarsDataset(data_path, split, preprocessing)
    _check_labels(dataset, meta, data_path, split)
    dev = resolve_device(device)
    workers, lowered = usable_workers(num_workers)
    if lowered:
        log.warning(lowered)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=min(workers, max(0, len(dataset) // batch_size)),
        pin_memory=dev.type == "cuda",
    )
    module = NetModule(net, loss_fn, meta.num_classes)
    # The progress bar goes to stderr: stdout carries the results (evaluate.py --json).
    with lightning_info_off(), contextlib.redirect_stdout(sys.stderr):
        trainer = make_trainer(
            max_epochs=None,
            accelerator=dev.type,
            devices=1,
            callbacks=[],
            progress_bar=progress,
        )
        trainer.test(module, dataloaders=loader, verbose=False)
    results = module.test_results
    matrix = results.pop("confusion")

    metrics: dict[str, Any] = {
        "loss": results["loss"],
        "top1": results["top1"],
        "top5": results["top5"],
        "num_images": len(dataset),
        "split": split,
        "checkpoint": str(checkpoint.resolve()),
        "epoch": ckpt.get("epoch"),
        "top5_k": results["top5_k"],
        "num_classes": meta.num_classes,
        "loss_function": loss_name,
        "data_path": str(Path(data_path).resolve()),
    }
    _write_reports(out, metrics, matrix, meta.class_names, _title(meta.run_name, metrics))
    return {**metrics, "out_dir": str(out)}


def evaluate_exported(
    path: str | Path,
    data_path: str | Path | None,
    split: str,
    batch_size: int,
    out_dir: str | Path | None,
) -> dict[str, Any]:
    """``evaluate_checkpoint`` for an exported model file (see the module doc)."""
    model = open_exported(path, threads=0)
    run = run_of_export(model.path)
    data_path = run.data_path(data_path, "evaluating needs the prepared images")
    dataset = StanfordCarsDataset(data_path, split, model.preprocessing)
    _check_labels(dataset, model, data_path, split)
    logits, labels = [], []
    for images, targets in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        logits.append(torch.from_numpy(model.run(images.numpy())).double())
        labels.append(targets)
    scores, target = torch.cat(logits), torch.cat(labels)
    top_k = min(TOP_K, model.num_classes)
    ranked = scores.topk(top_k, dim=1).indices
    matrix = torch.bincount(
        target * model.num_classes + ranked[:, 0], minlength=model.num_classes**2
    ).reshape(model.num_classes, model.num_classes)
    metrics: dict[str, Any] = {
        "loss": float(nn.functional.cross_entropy(scores, target)),
        "top1": float((ranked[:, 0] == target).double().mean()),
        "top5": float((ranked == target[:, None]).any(1).double().mean()),
        "num_images": len(dataset),
        "split": split,
        "checkpoint": str(model.path.resolve()),
        "epoch": None,
        "top5_k": top_k,
        "num_classes": model.num_classes,
        "loss_function": "CrossEntropyLoss",
        "data_path": str(Path(data_path).resolve()),
        "quantization": model.metadata.get("quantization"),
    }
    # model.pte beside model.onnx: its own folder (evaluation/model-pte-test/)
    stem = model.path.stem + ("-pte" if model.path.suffix.lower() == ".pte" else "")
    out = Path(out_dir) if out_dir is not None else run.evaluation / f"{stem}-{split}"
    name = model.metadata.get("run_name") or model.path.name
    _write_reports(
        out, metrics, matrix, model.class_names, _title(f"{name} ({model.path.name})", metrics)
    )
    return {**metrics, "out_dir": str(out)}


def run_of_export(path: Path) -> RunFolder:
    """The run of ``<run>/export/<file>``; else the folder holding the file."""
    parent = path.resolve().parent
    return RunFolder(parent.parent if parent.name == RunFolder.EXPORT else parent)


def _write_reports(
    out: Path, metrics: dict[str, Any], matrix: torch.Tensor, names: list[str], title: str
) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "metrics.json", metrics)
        write_per_class(out / "per_class.csv", matrix, names)
        write_most_confused(out / "most_confused.csv", matrix, names)
        plot_confusion(out / "confusion.png", matrix, names, title=title)
    except OSError as err:  # a read-only or full folder
        raise UserError(
            f"cannot write the results to '{out}' ({err.strerror or err}). Pass a writable "
            "folder with --out."
        ) from None


def _loss_of(meta: CheckpointMeta, run_config: dict[str, Any]) -> tuple[nn.Module, str]:
    """The checkpoint's loss; for format 1, the run config's, else cross-entropy."""
    if meta.loss_function is not None:
        return build_loss(meta.loss_function, meta.loss_params), meta.loss_function
    name = run_config.get("loss_function")
    if name:
        try:
            loss = build_loss(str(name), run_config.get("loss_params"))
            _probe_loss(loss, meta.num_classes)
            return loss, str(name)
        except Exception as err:  # an old or hand-edited config: say so and go on with CE
            log.warning(
                "loss '%s' from the run's config could not be built (%s); using CrossEntropyLoss",
                name,
                err,
            )
    return nn.CrossEntropyLoss(), "CrossEntropyLoss"


def _probe_loss(loss: nn.Module, num_classes: int) -> None:
    """Raise when ``loss`` cannot take logits and class indices (e.g. MSELoss named in a run's
    config.yml): evaluation would otherwise fail mid-way with a traceback."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. MSELoss's broadcasting warning before it fails
        value = loss(torch.zeros(2, num_classes), torch.zeros(2, dtype=torch.long))
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        raise ValueError("it does not return one number for a batch of logits and class indices")


def _check_labels(
    dataset: StanfordCarsDataset, meta: CheckpointMeta | ExportedModel, data_path, split: str
) -> None:
    """The split must use the model's classes: same ids, same names."""
    for sample in dataset.samples:
        if sample.label >= meta.num_classes or meta.class_names[sample.label] != sample.class_name:
            known = (
                f"'{meta.class_names[sample.label]}'"
                if sample.label < meta.num_classes
                else f"no such class (it knows {meta.num_classes})"
            )
            raise UserError(
                f"the {split} split in '{data_path}' does not match the checkpoint's classes: image "
                f"'{sample.fname}' has class {sample.label + 1} '{sample.class_name}', the "
                f"checkpoint has {known}. Evaluate on the data the network was trained on (-d)."
            )


def _title(run_name: str, metrics: dict[str, Any]) -> str:
    name = run_name or Path(metrics["checkpoint"]).name
    return (
        f"{name} on {metrics['split']} ({metrics['num_images']} images): "
        f"top-1 {metrics['top1']:.2%}, top-{metrics['top5_k']} {metrics['top5']:.2%}"
    )
