"""The evaluation's report files, from a confusion matrix and the class names:
``per_class.csv``, ``most_confused.csv`` and ``confusion.png``."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from datasets.labels import csv_writer
from utils.files import write_bytes_atomic, write_text_atomic
from utils.plotting import pyplot

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


def _csv_text(columns, rows) -> str:
    buffer = io.StringIO()
    writer = csv_writer(buffer)  # class names quoted and spreadsheet-safe
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
    k = len(class_names)
    counts = matrix.double()
    rows = counts.sum(dim=1, keepdim=True)
    fractions = torch.where(rows > 0, counts / rows.clamp(min=1), torch.zeros_like(counts))
    side = min(16.0, max(6.0, 0.07 * k + 4.0))
    fig, ax = pyplot().subplots(figsize=(side + 1.5, side), dpi=120)
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
        pyplot().close(fig)
    write_bytes_atomic(path, buffer.getvalue())


def _short_name(index: int, name: str, width: int = 28) -> str:
    text = f"{index}: {name}"
    return text if len(text) <= width else text[: width - 1] + "…"


# ---- the line a finished run ends with ------------------------------------------------
def run_summary_line(summary: dict[str, Any]) -> str:
    """``Run NAME: N epoch(s), best epoch E, min valid_loss 1.0999, max valid_acc 33.33%``;
    epochs count from 0, as in metrics.csv."""
    loss, acc = summary.get("min_valid_loss"), summary.get("max_valid_acc")
    shown_loss = "n/a" if loss is None else f"{loss:.4f}"
    shown_acc = "n/a" if acc is None else f"{acc:.2%}"
    return (
        f"Run {summary['run_name']}: {summary['epochs_run']} epoch(s), best epoch "
        f"{summary['best_epoch']}, min valid_loss {shown_loss}, max valid_acc {shown_acc}"
    )
