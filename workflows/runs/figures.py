"""The report's figures, readable from 1 to 60 runs: the legend sits outside the axes, past
``COLOURED`` runs only the best few are in colour and the rest light grey, the learning rate is
on a log axis when it spans more than 10x, and each run's best epoch (lowest valid_loss, its
``best.ckpt``) is marked. Also one run's ``learning_curves.png``."""

from __future__ import annotations

import io
from pathlib import Path

from utils.files import write_bytes_atomic
from utils.plotting import lines, pyplot, ticker
from workflows.runs.differences import ABSENT, rank_key, short_value
from workflows.runs.records import RunRecord

COLOURED = 10  # up to this many runs every run has its colour and legend entry
HIGHLIGHTED = 5  # past it, the best this many do; the others are grey
GREY = "#c9c9c9"
LABEL_CHARS = 34
DPI = 90
_BEST_MARK = {"marker": "*", "markersize": 11, "markeredgecolor": "black", "linestyle": "none"}


def legend_label(record: RunRecord) -> str:
    """The run's description; else what sets it apart (a fresh seed differs everywhere and is
    left out), when short; else its name."""
    if record.description:
        return _shorten(record.description)
    chosen = [(k, v) for k, v in record.settings.items() if k != "seed" and v != ABSENT]
    if chosen and len(chosen) <= 2:
        return _shorten(", ".join(f"{k.rsplit('.', 1)[-1]}={short_value(v)}" for k, v in chosen))
    return record.name


def styles(records: list[RunRecord]) -> list[tuple[RunRecord, str, str | None]]:
    """(run, colour, legend label or None), grey runs first so the coloured ones draw on top."""
    colours = pyplot().get_cmap("tab10").colors
    if len(records) <= COLOURED:
        return [(r, colours[i % 10], legend_label(r)) for i, r in enumerate(records)]
    best = sorted(records, key=rank_key)[:HIGHLIGHTED]
    grey = [(r, GREY, None) for r in records if r not in best]
    return grey + [(r, colours[i], legend_label(r)) for i, r in enumerate(best)]


def plot_metric_pair(
    records: list[RunRecord], train_key: str, valid_key: str, title: str, from_epoch: int = 0
):
    """Two panels, training and validation, a line per run; the best epochs marked."""
    fig, axes = pyplot().subplots(1, 2, figsize=(12, 4.6), layout="constrained")
    drawn = styles(records)
    for axis, key, stage in ((axes[0], train_key, "training"), (axes[1], valid_key, "validation")):
        for record, colour, label in drawn:
            _line(axis, record.series(key, from_epoch), colour, label)
            if label is not None:
                _mark_best(axis, record, key, colour, from_epoch)
        _epoch_axis(axis, f"{stage} {title}", from_epoch)
        if key.endswith("_acc"):
            axis.yaxis.set_major_formatter(ticker().PercentFormatter(xmax=1, decimals=0))
        else:
            _cut_outliers(axis, [record.series(key, from_epoch) for record, _, _ in drawn])
    axes[0].set_ylabel(title)
    _legend(fig, drawn, best_mark=True)
    return fig


def plot_lr(records: list[RunRecord], from_epoch: int = 0):
    fig, axis = pyplot().subplots(figsize=(10.5, 4.6), layout="constrained")
    drawn = styles(records)
    values = []
    for record, colour, label in drawn:
        points = record.series("lr", from_epoch)
        values += [v for _, v in points]
        _line(axis, points, colour, label)
    _lr_axis(axis, values)
    _epoch_axis(axis, "learning rate", from_epoch)
    axis.set_ylabel("lr")
    _legend(fig, drawn, best_mark=False)
    return fig


def plot_learning_curves(record: RunRecord, path: Path) -> Path:
    """One run's loss, accuracy and learning rate per epoch in one PNG, the best epoch (lowest
    valid_loss) marked on each."""
    fig, axes = pyplot().subplots(1, 3, figsize=(14, 4.2), layout="constrained")
    best = record.best_epoch
    for axis, (key, title) in zip(axes[:2], (("loss", "loss"), ("acc", "accuracy")), strict=True):
        for stage, colour in (("train", "tab:blue"), ("valid", "tab:orange")):
            _line(axis, record.series(f"{stage}_{key}"), colour, stage)
        axis.set_title(title)
    axes[1].yaxis.set_major_formatter(ticker().PercentFormatter(xmax=1, decimals=0))
    points = record.series("lr")
    _line(axes[2], points, "tab:green", "lr")
    _lr_axis(axes[2], [v for _, v in points])
    axes[2].set_title("learning rate")
    for axis in axes:
        _epoch_axis(axis, axis.get_title(), 0)
        if best is not None:
            axis.axvline(
                best, color="black", linestyle=":", linewidth=1, label=f"best epoch {best}"
            )
    axes[0].legend(fontsize="small")
    axes[1].legend(fontsize="small")
    fig.suptitle(record.name)
    return save(fig, path)


def save(fig, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    pyplot().close(fig)
    return write_bytes_atomic(path, buffer.getvalue())


# ---- helpers -------------------------------------------------------------------------------------
def _shorten(text: str) -> str:
    return text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 1] + "…"


def _line(axis, points: list[tuple[int, float]], colour, label: str | None) -> None:
    if not points:
        return
    xs, ys = zip(*points, strict=True)
    grey = label is None
    axis.plot(
        xs,
        ys,
        color=colour,
        label=label,
        linewidth=0.8 if grey else 1.6,
        zorder=1 if grey else 2,
        marker="o" if len(points) < 3 else None,
    )


def _mark_best(axis, record: RunRecord, key: str, colour, from_epoch: int) -> None:
    best = record.best_epoch
    points = dict(record.series(key, from_epoch))
    if best is not None and best in points:
        axis.plot([best], [points[best]], color=colour, zorder=3, **_BEST_MARK)


def _epoch_axis(axis, title: str, from_epoch: int) -> None:
    axis.set_title(title + (f" (from epoch {from_epoch})" if from_epoch else ""))
    axis.set_xlabel("epoch")
    axis.xaxis.set_major_locator(ticker().MaxNLocator(integer=True))  # epochs are whole numbers
    axis.grid(alpha=0.3)


def _lr_axis(axis, values: list[float]) -> None:
    """A log axis when the rate spans more than 10x; else a linear one from 0, so a constant
    rate reads as one value instead of a zoom into rounding noise."""
    positive = [v for v in values if v > 0]
    if positive and max(positive) > 10 * min(positive):
        axis.set_yscale("log")
        return
    top = max(values, default=0.0)
    if top > 0:
        axis.set_ylim(0, top * 1.25)
    axis.yaxis.set_major_formatter(
        ticker().FuncFormatter(lambda v, _: "0" if v == 0 else f"{v:.1e}")
    )


def _cut_outliers(axis, series: list[list[tuple[int, float]]]) -> None:
    """A loss that spiked once (147 where the rest stays under 8) would flatten every curve:
    the axis stops a little above the 98th percentile, and its title says so."""
    values = sorted(v for points in series for _, v in points)
    if len(values) < 20:
        return
    cap = values[int(0.98 * (len(values) - 1))] * 1.15
    if values[-1] > 1.5 * cap:
        axis.set_ylim(top=cap)
        axis.set_title(axis.get_title() + f"\n(values above {cap:.2f} off the chart)", fontsize=10)


def _legend(fig, drawn: list[tuple[RunRecord, str, str | None]], best_mark: bool) -> None:
    handles = [lines().Line2D([], [], color=c, linewidth=1.6) for _, c, label in drawn if label]
    labels = [label for _, _, label in drawn if label]
    others = sum(1 for _, _, label in drawn if label is None)
    if others:
        handles.append(lines().Line2D([], [], color=GREY, linewidth=1.2))
        labels.append(f"{others} other runs")
    if best_mark:
        handles.append(lines().Line2D([], [], color="grey", **_BEST_MARK))
        labels.append("best epoch (lowest valid_loss)")
    if handles:
        fig.legend(handles, labels, loc="outside right upper", fontsize="small", frameon=False)
