"""Comparing runs as the thesis's chapter 4 did: a table of runs (settings that differ, epochs,
minimum losses, maximum accuracies, tags, description) and overlaid learning curves, every figure
computed from each run folder's ``metrics.csv`` so an unfinished run still gets its full row.

A report folder holds ``summary.md``, ``summary.csv``, ``loss.png``, ``accuracy.png`` and
``lr.png``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

from configuration import Config, load_config
from configuration.loading import DEFAULT_CONFIG
from utils.errors import UserError
from utils.files import write_bytes_atomic, write_text_atomic
from workflows.runs.metrics import METRIC_COLUMNS
from workflows.runs.run_folder import RunFolder

matplotlib.use("Agg")  # files only, never a window; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

log = logging.getLogger(__name__)

EPOCH_METRICS = tuple(column for column in METRIC_COLUMNS if column != "epoch")
FIGURE_COLUMNS = ("epochs", "min_train_loss", "min_valid_loss", "max_train_acc", "max_valid_acc")
# Settings that say where or how a run was watched, not what was trained: never "what differs".
NOT_SETTINGS = (
    "loglevel",
    "logging_dir",
    "log_to_",
    "neptune_",
    "mlflow_",
    "stanford_",
    "output_path",
    "num_workers",
    "tags",
    "description",
)
# Folders an output folder holds beside its runs.
_KNOWN_NON_RUNS = ("reports", "mlartifacts", "mlruns", ".neptune")


@dataclass
class RunRecord:
    """One run folder as the report reads it."""

    path: Path
    config: dict[str, Any]
    rows: list[dict[str, float]]
    summary: dict[str, Any] | None
    status: str = ""  # set for runs that never left a folder (a failed sweep trial)
    error: str = ""
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def tags(self) -> list[str]:
        return [str(t) for t in self.config.get("tags") or []]

    @property
    def description(self) -> str:
        return str(self.config.get("description") or "")

    @property
    def state(self) -> str:
        if self.status:
            return self.status
        if self.summary is None:
            return "unfinished"
        return "interrupted" if self.summary.get("interrupted") else "finished"

    def figures(self) -> dict[str, Any]:
        """Epochs run, minimum losses and maximum accuracies, from the epoch rows."""

        def pick(key: str, fn):
            values = [r[key] for r in self.rows if key in r]
            return fn(values) if values else None

        return {
            "epochs": len(self.rows),
            "min_train_loss": pick("train_loss", min),
            "min_valid_loss": pick("valid_loss", min),
            "max_train_acc": pick("train_acc", max),
            "max_valid_acc": pick("valid_acc", max),
        }


def read_metrics(path: Path) -> list[dict[str, float]]:
    """The epoch rows of a ``metrics.csv``; empty or unreadable cells are left out."""
    rows = []
    with open(path, newline="", encoding="utf-8") as handle:
        for raw in csv.DictReader(handle):
            row = {}
            for key, value in raw.items():
                try:
                    number = float(value)
                except (TypeError, ValueError):
                    continue
                if not math.isnan(number):
                    row[key] = number
            if "epoch" in row:
                rows.append(row)
    return rows


def load_run(folder: Path, notes: list[str] | None = None) -> RunRecord | None:
    """The run in ``folder``; None when it holds no ``metrics.csv`` (not a run), or when its
    metrics.csv or config.yml (past the config loader's limits, e.g. an alias bomb) cannot be
    read: a note in ``notes`` then says why (a warning when no list is given)."""
    run = RunFolder(folder)
    if not run.metrics_csv.is_file():
        return None
    try:
        rows = read_metrics(run.metrics_csv)
        config = run.checked_config()
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        return _skipped(f"skipped '{folder}': its metrics.csv cannot be read ({err})", notes)
    except UserError as err:
        return _skipped(f"skipped '{folder}': {err}", notes)
    summary = None
    if run.summary_json.is_file():
        try:
            summary = _read_json(run.summary_json)
        except ValueError:
            summary = None
    return RunRecord(path=run.path, config=config, rows=rows, summary=summary)


def _skipped(note: str, notes: list[str] | None) -> None:
    if notes is None:
        log.warning("%s", note)
    else:
        notes.append(note)


def find_runs(paths: list[Path], notes: list[str] | None = None) -> list[RunRecord]:
    """The runs among ``paths``: each a run folder or a folder of run folders. What is neither
    is skipped with a note in ``notes``."""
    notes = notes if notes is not None else []
    found: dict[Path, RunRecord] = {}
    for path in paths:
        path = Path(path)
        if RunFolder(path).metrics_csv.is_file():
            record = load_run(path, notes)
            if record is not None:
                found[record.path.resolve()] = record
            continue
        if not path.is_dir():
            notes.append(f"skipped '{path}': not a folder")
            continue
        children = 0
        for child in sorted(p for p in path.iterdir() if p.is_dir()):
            if RunFolder(child).metrics_csv.is_file():
                children += 1
                child_record = load_run(child, notes)
                if child_record is not None:
                    found[child_record.path.resolve()] = child_record
            elif child.name not in _KNOWN_NON_RUNS and not child.name.startswith("."):
                notes.append(f"skipped '{child}': not a run folder (no metrics.csv)")
        if not children:
            notes.append(f"skipped '{path}': no run folders in it")
    return sorted(found.values(), key=lambda r: r.name)


def select(records: list[RunRecord], tag: str | None = None, sweep: str | None = None):
    """The runs carrying ``tag`` and belonging to sweep ``sweep`` (either may be None)."""
    wanted = [t for t in (tag, f"sweep:{sweep}" if sweep else None) if t]
    return [r for r in records if all(t in r.tags for t in wanted)]


def differing_settings(records: list[RunRecord]) -> list[str]:
    """The dotted config keys whose values are not the same in every run (keys that only
    newer configs hold are left out: an older run had their default)."""
    flat = [_flatten(r.config) for r in records]
    common = set.intersection(*(set(f) for f in flat)) if flat else set()
    keys = sorted(k for k in common if not k.startswith(NOT_SETTINGS))
    differing = [k for k in keys if len({repr(f.get(k)) for f in flat}) > 1]
    for record, values in zip(records, flat, strict=True):
        record.settings = {k: values.get(k) for k in differing}
    return differing


def table(records: list[RunRecord]) -> tuple[list[str], list[dict[str, Any]]]:
    """The report's columns and one row per run; the best run (highest max_valid_acc) marked."""
    differing = differing_settings([r for r in records if r.config])
    columns = ["best", "run", "status", "description", "tags", *differing, *FIGURE_COLUMNS]
    rows = []
    for record in records:
        row = {"best": "", "run": record.name, "status": record.state}
        row["description"] = record.description or record.error
        row["tags"] = ", ".join(record.tags)
        row.update({k: record.settings.get(k, "") for k in differing})
        row.update(record.figures())
        rows.append(row)
    scored = [r for r in rows if r["max_valid_acc"] is not None]
    if scored:
        max(scored, key=lambda r: r["max_valid_acc"])["best"] = "*"
    return columns, rows


def markdown_table(columns: list[str], rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [_cell(row.get(c)).replace("|", "\\|") for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def csv_table(columns: list[str], rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: "" if row.get(c) is None else row.get(c) for c in columns})
    return buffer.getvalue()


def legend_label(record: RunRecord) -> str:
    """What sets this run apart from the others, else its name."""
    # A fresh seed per run differs everywhere and would crowd out what was chosen.
    chosen = {k: v for k, v in record.settings.items() if k != "seed"}
    if not chosen:
        return record.name
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={_cell(v)}" for k, v in chosen.items())


def plot_metric_pair(records: list[RunRecord], train_key: str, valid_key: str, title: str):
    """A figure of two panels, training and validation, one line per run."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for axis, key, label in ((axes[0], train_key, "training"), (axes[1], valid_key, "validation")):
        for record in records:
            _plot_series(axis, record, key, legend_label(record))
        axis.set_title(f"{label} {title}")
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
    axes[0].set_ylabel(title)
    _legend(axes[1], records)
    fig.tight_layout()
    return fig


def plot_lr(records: list[RunRecord]):
    fig, axis = plt.subplots(figsize=(6.5, 4.2))
    for record in records:
        _plot_series(axis, record, "lr", legend_label(record))
    axis.set_title("learning rate")
    axis.set_xlabel("epoch")
    axis.set_ylabel("lr")
    if any(r.get("lr", 0) > 0 for record in records for r in record.rows):
        axis.set_yscale("log")
    axis.grid(alpha=0.3)
    _legend(axis, records)
    fig.tight_layout()
    return fig


def plot_learning_curves(record: RunRecord, path: Path) -> Path:
    """One run's loss, accuracy and learning rate per epoch in one PNG."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for axis, (key, title) in zip(axes[:2], (("loss", "loss"), ("acc", "accuracy")), strict=True):
        for stage, style in (("train", "-"), ("valid", "--")):
            _plot_series(axis, record, f"{stage}_{key}", stage, style)
        axis.set_title(title)
        axis.legend()
    _plot_series(axes[2], record, "lr", "lr")
    axes[2].set_title("learning rate")
    for axis in axes:
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
    fig.suptitle(record.name)
    fig.tight_layout()
    return _save(fig, path)


def write_report(
    records: list[RunRecord], out_dir: Path, notes: list[str] | None = None
) -> dict[str, Path]:
    """``summary.md``, ``summary.csv`` and the three plots in ``out_dir``; returns their paths."""
    try:
        return _write_report(records, Path(out_dir), notes)
    except OSError as err:
        raise UserError(
            f"cannot write the report to '{out_dir}' ({err.strerror or err}). Choose a folder "
            "you can write to (compare_experiments.py --out DIR; a sweep's is under output_path)."
        ) from None


def _write_report(records: list[RunRecord], out_dir: Path, notes: list[str] | None):
    columns, rows = table(records)
    md = "# Runs compared\n\n" + markdown_table(columns, rows)
    md += "\n`*` best run (highest max_valid_acc). Figures from each run's metrics.csv.\n"
    if notes:
        md += "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    paths = {
        "summary.md": write_text_atomic(out_dir / "summary.md", md),
        "summary.csv": write_text_atomic(out_dir / "summary.csv", csv_table(columns, rows)),
    }
    plotted = [r for r in records if r.rows]
    if plotted:
        figures = {
            "loss.png": plot_metric_pair(plotted, "train_loss", "valid_loss", "loss"),
            "accuracy.png": plot_metric_pair(plotted, "train_acc", "valid_acc", "accuracy"),
            "lr.png": plot_lr(plotted),
        }
        for name, fig in figures.items():
            paths[name] = _save(fig, out_dir / name)
    return paths


def default_report_dir(output_path: str | Path) -> Path:
    return Path(output_path) / "reports" / time.strftime("%Y%m%d%H%M%S")


def compare_runs(
    paths: list[Path],
    out_dir: Path,
    tag: str | None = None,
    sweep: str | None = None,
    extra: list[RunRecord] | None = None,
) -> tuple[dict[str, Path], str]:
    """Find the runs under ``paths`` (filtered by tag / sweep), write the report into
    ``out_dir``; returns the written files and the table as Markdown for the console.
    ``extra`` adds rows for runs that left no folder (failed sweep trials)."""
    notes: list[str] = []
    records = select(find_runs(paths, notes), tag, sweep) + list(extra or [])
    for note in notes:
        log.info("%s", note)
    if not records:
        what = " and ".join(
            x for x in (f"tag '{tag}'" if tag else "", f"sweep '{sweep}'" if sweep else "") if x
        )
        where = ", ".join(str(p) for p in paths)
        return {}, f"No runs found in {where}" + (f" with {what}" if what else "") + ".\n"
    return report(records, out_dir, notes)


def report(
    records: list[RunRecord], out_dir: Path, notes: list[str] | None = None
) -> tuple[dict[str, Path], str]:
    """Write the report of ``records`` into ``out_dir``; returns its files and the table as
    Markdown."""
    columns, rows = table(records)
    return write_report(records, out_dir, notes), markdown_table(columns, rows)


# ---- helpers -------------------------------------------------------------------------------------
def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(str(err)) from None
    return data if isinstance(data, dict) else {}


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_cell(v) for v in value) + "]"
    return str(value)


def _plot_series(axis, record: RunRecord, key: str, label: str, style: str = "-") -> None:
    points = [(int(r["epoch"]), r[key]) for r in record.rows if key in r]
    if points:
        xs, ys = zip(*points, strict=True)
        axis.plot(xs, ys, style, label=label, marker="o" if len(points) < 3 else None)
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers


def _legend(axis, records: list[RunRecord]) -> None:
    if records:
        axis.legend(fontsize="small" if len(records) > 6 else None)


def _save(fig, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return write_bytes_atomic(path, buffer.getvalue())


def run_comparison(
    paths: list[str],
    tag: str | None = None,
    sweep: str | None = None,
    out: str | None = None,
    config_path: str | None = None,
) -> tuple[dict[str, Path], str]:
    """compare_experiments.py: the runs under ``paths`` (default: the config's output_path),
    reported into ``out`` (default: ``<output_path>/reports/<timestamp>/``)."""
    output_path = Path(paths[0]) if paths else Path(Config().output_path)
    if RunFolder(output_path).metrics_csv.is_file():  # a run folder: its output folder
        output_path = output_path.parent
    if config_path is not None or Path(DEFAULT_CONFIG).is_file():
        output_path = Path(load_config(config_path).output_path)
    folders = [Path(p) for p in paths] or [output_path]
    for folder in folders:
        if not folder.exists():
            raise UserError(
                f"'{folder}' does not exist. Give run folders or folders of runs (the "
                "output_path of your config, 'output' by default)."
            )
    return compare_runs(folders, Path(out) if out else default_report_dir(output_path), tag, sweep)
