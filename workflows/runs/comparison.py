"""Comparing runs as the thesis's chapter 4 did: which runs (by name, description or tag, in
the order chosen), a table of them, the thesis's own table (the four metrics as rows, a column
per run) and their learning curves, every figure computed from each run folder's
``metrics.csv`` so an unfinished run still gets its full row.

A report folder holds ``summary.md``, ``summary.csv``, ``thesis_table.md``,
``thesis_table.csv``, ``loss.png``, ``accuracy.png`` and ``lr.png``.
"""

from __future__ import annotations

import fnmatch
import logging
import time
from pathlib import Path

from configuration import Config, configured_output_path
from utils.errors import UserError
from utils.files import write_text_atomic
from workflows.runs.differences import BEST_CRITERION, data_note, mark_best
from workflows.runs.figures import plot_learning_curves, plot_lr, plot_metric_pair, save
from workflows.runs.records import RunRecord, find_runs, load_run
from workflows.runs.run_folder import RunFolder
from workflows.runs.thesis_table import (
    PRINTED_RUNS,
    csv_table,
    markdown_table,
    thesis_table,
    wide_table,
)

__all__ = [
    "NOT_SETTINGS",
    "RunRecord",
    "compare_runs",
    "find_runs",
    "load_run",
    "plot_learning_curves",
    "report",
    "run_comparison",
    "select",
]

log = logging.getLogger(__name__)

# Settings that say where or how a run was watched, not what was trained. A sweep's name
# hashes the other settings (workflows.sweep.axes): changing this list renames sweeps.
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


def select(
    records: list[RunRecord],
    tag: str | None = None,
    sweep: str | None = None,
    patterns: list[str] | None = None,
) -> list[RunRecord]:
    """The runs carrying ``tag`` and belonging to sweep ``sweep`` (either may be None); with
    ``patterns``, only the runs whose name, description or a tag equals or glob-matches one of
    them, in the order of the patterns (a run once, at its first match)."""
    wanted = [t for t in (tag, f"sweep:{sweep}" if sweep else None) if t]
    kept = [r for r in records if all(t in r.tags for t in wanted)]
    if not patterns:
        return kept
    chosen: list[RunRecord] = []
    for pattern in patterns:
        for record in kept:
            names = [record.name, record.description, *record.tags]
            hit = any(n == pattern or fnmatch.fnmatchcase(n, pattern) for n in names if n)
            if hit and record not in chosen:
                chosen.append(record)
    return chosen


def report(
    records: list[RunRecord],
    out_dir: Path,
    notes: list[str] | None = None,
    from_epoch: int = 0,
) -> tuple[dict[str, Path], str]:
    """Write the report of ``records`` into ``out_dir``; returns its files and the text for
    the console (what the data is, the best-run criterion and the tables)."""
    try:
        return _write_report(records, Path(out_dir), notes or [], from_epoch)
    except OSError as err:
        raise UserError(
            f"cannot write the report to '{out_dir}' ({err.strerror or err}). Choose a folder "
            "you can write to (compare_experiments.py --out DIR; a sweep's is under output_path)."
        ) from None


def _write_report(records: list[RunRecord], out_dir: Path, notes: list[str], from_epoch: int):
    mark_best(records)
    columns, rows = wide_table(records)
    wide_md = markdown_table(columns, rows)
    thesis_columns, thesis_rows = thesis_table(records)
    thesis_md = markdown_table(thesis_columns, thesis_rows)
    header = f"{data_note(records)}\n\n{BEST_CRITERION}. Figures from each run's metrics.csv.\n"
    md = f"# Runs compared\n\n{header}\n{wide_md}"
    md += "\n## The thesis's table\n\n" + thesis_md
    if notes:
        md += "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "summary.md": write_text_atomic(out_dir / "summary.md", md),
        "summary.csv": write_text_atomic(out_dir / "summary.csv", csv_table(columns, rows)),
        "thesis_table.md": write_text_atomic(out_dir / "thesis_table.md", thesis_md),
        "thesis_table.csv": write_text_atomic(
            out_dir / "thesis_table.csv", csv_table(thesis_columns, thesis_rows)
        ),
    }
    plotted = [r for r in records if r.rows]
    if plotted:
        figures = {
            "loss.png": plot_metric_pair(plotted, "train_loss", "valid_loss", "loss", from_epoch),
            "accuracy.png": plot_metric_pair(
                plotted, "train_acc", "valid_acc", "accuracy", from_epoch
            ),
            "lr.png": plot_lr(plotted, from_epoch),
        }
        for name, fig in figures.items():
            paths[name] = save(fig, out_dir / name)
    text = header + "\n" + wide_md
    if len(records) <= PRINTED_RUNS:
        text += "\n" + thesis_md
    return paths, text + "\n"


def default_report_dir(output_path: str | Path) -> Path:
    return Path(output_path) / "reports" / time.strftime("%Y%m%d%H%M%S")


def compare_runs(
    paths: list[Path],
    out_dir: Path,
    tag: str | None = None,
    sweep: str | None = None,
    extra: list[RunRecord] | None = None,
    patterns: list[str] | None = None,
    from_epoch: int = 0,
) -> tuple[dict[str, Path], str]:
    """Find the runs under ``paths`` (filtered by tag / sweep / ``patterns``), write the
    report into ``out_dir``; returns the written files and the console's text. ``extra`` adds
    rows for runs that left no folder (failed sweep trials)."""
    notes: list[str] = []
    records = select(find_runs(paths, notes), tag, sweep, patterns) + list(extra or [])
    if patterns:
        missing = [p for p in patterns if not select(records, patterns=[p])]
        notes += [f"--select '{p}' matched no run" for p in missing]
    for note in notes:
        log.info("%s", note)
    if not records:
        what = [f"tag '{tag}'" if tag else "", f"sweep '{sweep}'" if sweep else ""]
        what += [f"--select '{p}'" for p in patterns or []]
        where = ", ".join(str(p) for p in paths)
        matching = " and ".join(x for x in what if x)
        return {}, f"No runs found in {where}" + (
            f" matching {matching}" if matching else ""
        ) + ".\n"
    return report(records, out_dir, notes, from_epoch)


def run_comparison(
    paths: list[str],
    tag: str | None = None,
    sweep: str | None = None,
    out: str | None = None,
    config_path: str | None = None,
    patterns: list[str] | None = None,
    from_epoch: int = 0,
) -> tuple[dict[str, Path], str]:
    """compare_experiments.py: the runs under ``paths`` (default: the config's output_path),
    reported into ``out`` (default: ``<output_path>/reports/<timestamp>/``)."""
    if from_epoch < 0:
        raise UserError(f"--from-epoch {from_epoch}: give an epoch of 0 or more.")
    configured = configured_output_path(config_path)
    output_path = Path(paths[0]) if paths else Path(configured or Config().output_path)
    if RunFolder(output_path).metrics_csv.is_file():  # a run folder: its output folder
        output_path = output_path.parent
    if configured is not None:
        output_path = Path(configured)
    folders = [Path(p) for p in paths] or [output_path]
    for folder in folders:
        if not folder.exists():
            raise UserError(
                f"'{folder}' does not exist. Give run folders or folders of runs (the "
                "output_path of your config, 'output' by default)."
            )
    out_dir = Path(out) if out else default_report_dir(output_path)
    return compare_runs(folders, out_dir, tag, sweep, None, patterns, from_epoch)
