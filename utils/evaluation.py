"""Evaluate a trained checkpoint on a prepared split: loss, top-1/top-5, per-class accuracy, and the
confusion matrix (``evaluate.py``).

The split is read with the validation transforms stored in the checkpoint (resize, optional
grayscale, normalisation; no augmentation, no bbox crop), so on the split used for validation
during training (``test``) the top-1 accuracy equals the ``valid_acc`` that was logged for the
checkpoint's epoch.

The loss is the run's own loss function, named by ``loss_function`` / ``loss_params`` in
``<run>/config.yml`` (the same one the logged ``valid_loss`` used); when that file is missing or
names no usable loss, plain ``CrossEntropyLoss`` is used. ``metrics.json`` records which one.

Files written to ``out_dir`` (default ``<run>/evaluation/`` for ``<run>/checkpoints/x.ckpt``):

- ``metrics.json``: ``loss``, ``top1``, ``top5`` (fractions), ``num_images``, ``split``,
  ``checkpoint`` and a few details (``epoch``, ``top5_k``, ``loss_function``, ...);
- ``per_class.csv``: ``class_id`` (0-based label), ``class_name``, ``images``, ``correct``,
  ``accuracy`` (empty for a class with no image in the split);
- ``confusion.png``: the confusion matrix as a heatmap, each row divided by its class's images;
- ``most_confused.csv``: the 20 most frequent (true -> predicted) mistakes.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.utils.data import DataLoader
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from models.checkpoint import CheckpointMeta, load_network, read_checkpoint
from utils.errors import UserError
from utils.files import write_bytes_atomic, write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)

SPLITS = ("train", "test")
MOST_CONFUSED = 20
# Above this many classes the heatmap has no tick labels (class ids every few rows instead) and
# above CELL_TEXT_MAX no numbers in the cells: they would be unreadable.
TICK_LABELS_MAX = 40
CELL_TEXT_MAX = 15
PER_CLASS_COLUMNS = ("class_id", "class_name", "images", "correct", "accuracy")
CONFUSED_COLUMNS = (
    "true_class_id",
    "true_class_name",
    "predicted_class_id",
    "predicted_class_name",
    "count",
    "fraction_of_true_class",
)


# ---- the run folder around a checkpoint ----------------------------------------------------------
def checkpoint_run_dir(checkpoint: str | Path) -> Path:
    """``<run>`` for ``<run>/checkpoints/x.ckpt``; else the folder holding the checkpoint."""
    checkpoint = Path(checkpoint).resolve()
    parent = checkpoint.parent
    return parent.parent if parent.name == "checkpoints" else parent


def read_run_config(checkpoint: str | Path) -> dict[str, Any]:
    """The run's ``config.yml`` as a plain mapping, or ``{}`` when there is none (or it is
    unreadable: evaluation then needs ``-d`` and uses cross-entropy)."""
    path = checkpoint_run_dir(checkpoint) / "config.yml"
    if not path.is_file():
        return {}
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        log.warning("ignoring the run's config '%s': %s", path, err)
        return {}
    return raw if isinstance(raw, dict) else {}


def run_loss(run_config: dict[str, Any]) -> tuple[torch.nn.Module, str]:
    """The run's loss function (from its config) and a description of it; cross-entropy when the
    config names none or one that cannot be built."""
    from utils.configuration import build_loss

    name = run_config.get("loss_function")
    if name:
        try:
            return build_loss(str(name), run_config.get("loss_params")), str(name)
        except Exception as err:  # an old or hand-edited config: say so and go on with CE
            log.warning(
                "loss '%s' from the run's config could not be built (%s); using CrossEntropyLoss",
                name,
                err,
            )
    return torch.nn.CrossEntropyLoss(), "CrossEntropyLoss"


def resolve_device(device: str) -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device == "cuda":
        if not torch.cuda.is_available():
            raise UserError(
                "--device cuda was requested, but PyTorch sees no CUDA GPU on this machine. "
                "Use --device cpu (or auto)."
            )
        return torch.device("cuda")
    raise UserError(f"device '{device}' is not one of auto, cpu, cuda. Pick one of them.")


# ---- evaluation -----------------------------------------------------------------------------------
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
    from datasets.stanford_data import StanfordCarsDataset
    from utils.configuration import default_num_workers

    checkpoint = Path(checkpoint)
    if split not in SPLITS:
        raise UserError(f"split '{split}' is not one of {', '.join(SPLITS)}. Pick one of them.")
    if batch_size < 1:
        raise UserError(f"batch size must be at least 1, got {batch_size}. Pass e.g. 64.")
    net, meta = load_network(checkpoint)
    epoch = read_checkpoint(checkpoint).get("epoch")
    run_config = read_run_config(checkpoint)
    if data_path is None:
        data_path = run_config.get("stanford_data_path")
        if not data_path:
            raise UserError(
                f"no data folder given and no run config ('{checkpoint_run_dir(checkpoint) / 'config.yml'}') "
                "naming stanford_data_path was found next to the checkpoint. Pass the prepared "
                "data folder with -d DATA_PATH."
            )
    out = Path(out_dir) if out_dir is not None else checkpoint_run_dir(checkpoint) / "evaluation"
    loss_fn, loss_name = run_loss(run_config)

    dataset = StanfordCarsDataset(
        data_path,
        split,
        image_size=meta.image_size,
        convert_to_grayscale=meta.grayscale,
        normalize=meta.normalize,
        normalization_params={"mean": meta.mean, "std": meta.std},
    )
    _check_labels(dataset, meta, data_path, split)
    workers = default_num_workers() if num_workers is None else num_workers
    dev = resolve_device(device)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=min(workers, max(0, len(dataset) // batch_size)),
        pin_memory=dev.type == "cuda",
    )

    k = meta.num_classes
    top_k = min(5, k)
    mean_loss = MeanMetric().to(dev)
    top1 = MulticlassAccuracy(num_classes=k, top_k=1, average="micro").to(dev)
    top5 = MulticlassAccuracy(num_classes=k, top_k=top_k, average="micro").to(dev)
    confusion = MulticlassConfusionMatrix(num_classes=k).to(dev)
    net.to(dev)
    loss_fn.to(dev)
    if progress:
        from tqdm import tqdm

        loader = tqdm(loader, desc=f"evaluating on {split}", unit="batch", leave=False)
    with torch.inference_mode():
        for images, labels in loader:
            images, labels = images.to(dev), labels.to(dev)
            logits = net(images)
            # Weighted by the batch size, as during training, so it matches the logged valid_loss.
            mean_loss.update(loss_fn(logits, labels), weight=labels.shape[0])
            top1.update(logits, labels)
            top5.update(logits, labels)
            confusion.update(logits, labels)
    matrix = confusion.compute().cpu().long()

    metrics: dict[str, Any] = {
        "loss": float(mean_loss.compute()),
        "top1": float(top1.compute()),
        "top5": float(top5.compute()),
        "num_images": len(dataset),
        "split": split,
        "checkpoint": str(checkpoint.resolve()),
        "epoch": epoch,
        "top5_k": top_k,
        "num_classes": k,
        "loss_function": loss_name,
        "data_path": str(Path(data_path).resolve()),
    }
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(
            f"cannot create the output folder '{out}' ({err}). Pass a writable folder with --out."
        ) from None
    write_json_atomic(out / "metrics.json", metrics)
    write_per_class(out / "per_class.csv", matrix, meta.class_names)
    write_most_confused(out / "most_confused.csv", matrix, meta.class_names)
    plot_confusion(out / "confusion.png", matrix, meta.class_names, title=_title(meta, metrics))
    return {**metrics, "out_dir": str(out)}


def _check_labels(dataset, meta: CheckpointMeta, data_path, split: str) -> None:
    """The split must use the checkpoint's classes: same ids, same names."""
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


def _title(meta: CheckpointMeta, metrics: dict[str, Any]) -> str:
    name = meta.run_name or Path(metrics["checkpoint"]).name
    return (
        f"{name} on {metrics['split']} ({metrics['num_images']} images): "
        f"top-1 {metrics['top1']:.2%}, top-{metrics['top5_k']} {metrics['top5']:.2%}"
    )


# ---- result files ---------------------------------------------------------------------------------
def _csv_text(columns, rows) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return buffer.getvalue()


def write_per_class(path: Path, matrix: torch.Tensor, class_names: list[str]) -> None:
    images = matrix.sum(dim=1)
    correct = matrix.diagonal()
    rows = []
    for i, name in enumerate(class_names):
        n, c = int(images[i]), int(correct[i])
        rows.append([i, name, n, c, f"{c / n:.6f}" if n else ""])
    write_text_atomic(path, _csv_text(PER_CLASS_COLUMNS, rows))


def most_confused_pairs(
    matrix: torch.Tensor, limit: int = MOST_CONFUSED
) -> list[tuple[int, int, int]]:
    """``(true, predicted, count)`` for the most frequent mistakes, largest count first."""
    off = matrix.clone()
    off.fill_diagonal_(0)
    pairs = [(int(t), int(p), int(off[t, p])) for t, p in zip(*torch.nonzero(off, as_tuple=True))]
    pairs.sort(key=lambda tpc: (-tpc[2], tpc[0], tpc[1]))
    return pairs[:limit]


def write_most_confused(path: Path, matrix: torch.Tensor, class_names: list[str]) -> None:
    images = matrix.sum(dim=1)
    rows = [
        [t, class_names[t], p, class_names[p], n, f"{n / int(images[t]):.6f}"]
        for t, p, n in most_confused_pairs(matrix)
    ]
    write_text_atomic(path, _csv_text(CONFUSED_COLUMNS, rows))


def plot_confusion(
    path: Path, matrix: torch.Tensor, class_names: list[str], title: str = ""
) -> None:
    """A heatmap of the row-normalised confusion matrix, readable up to 196 classes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(class_names)
    counts = matrix.double()
    rows = counts.sum(dim=1, keepdim=True)
    fractions = torch.where(rows > 0, counts / rows.clamp(min=1), torch.zeros_like(counts))
    side = min(16.0, max(6.0, 0.07 * k + 4.0))
    fig, ax = plt.subplots(figsize=(side + 1.5, side), dpi=120)
    try:
        image = ax.imshow(
            fractions.numpy(), cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest"
        )
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
        if k <= TICK_LABELS_MAX:
            labels = [_short_name(i, name) for i, name in enumerate(class_names)]
            ax.set_xticks(range(k), labels, rotation=90, fontsize=7)
            ax.set_yticks(range(k), labels, fontsize=7)
        else:  # class ids (0-based, as in per_class.csv) every few rows
            step = max(1, round(k / 20))
            ticks = list(range(0, k, step))
            ax.set_xticks(ticks, [str(t) for t in ticks], rotation=90, fontsize=7)
            ax.set_yticks(ticks, [str(t) for t in ticks], fontsize=7)
        if k <= CELL_TEXT_MAX:
            for t in range(k):
                for p in range(k):
                    if matrix[t, p]:
                        ax.text(
                            p,
                            t,
                            str(int(matrix[t, p])),
                            ha="center",
                            va="center",
                            fontsize=8,
                            color="black" if fractions[t, p] > 0.6 else "white",
                        )
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        if title:
            ax.set_title(title, fontsize=9)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
    finally:
        plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue())


def _short_name(index: int, name: str, width: int = 28) -> str:
    text = f"{index}: {name}"
    return text if len(text) <= width else text[: width - 1] + "…"
