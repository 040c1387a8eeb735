"""The report's two tables: the wide one (a row per run: status, what differs, the figures)
and the thesis's own layout (chapter 4: the four metrics as rows, a column per run headed by
its description, losses to 3 decimals and accuracies in percent to 2), each as Markdown and CSV.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from workflows.runs.differences import data_groups, data_text, differing_settings, short_value
from workflows.runs.records import RunRecord

FIGURE_COLUMNS = ("epochs", "min_train_loss", "min_valid_loss", "max_train_acc", "max_valid_acc")
# The thesis's rows: (label, figure, shown as percent).
THESIS_ROWS = (
    ("Min. training loss", "min_train_loss", False),
    ("Min. validation loss", "min_valid_loss", False),
    ("Max. training accuracy", "max_train_acc", True),
    ("Max. validation accuracy", "max_valid_acc", True),
)
# Up to this many runs the console shows the thesis's table (a column per run).
PRINTED_RUNS = 8
CELL_CHARS = 80  # a Markdown cell's most characters


def wide_table(records: list[RunRecord]) -> tuple[list[str], list[dict[str, Any]]]:
    """The columns and one row per run; the runs' ``best`` must be set (``mark_best``)."""
    differing = differing_settings(records)
    several_data = len(data_groups(records)) > 1
    columns = [
        "best",
        "run",
        "status",
        "description",
        *(["data"] if several_data else []),
        *differing,
        *FIGURE_COLUMNS,
        "tags",
    ]
    rows = []
    for record in records:
        row: dict[str, Any] = {"best": "*" if record.best else "", "run": record.name}
        row["status"] = record.state
        row["description"] = record.description or record.error
        if several_data and record.config:
            row["data"] = data_text(record.data)
        row.update({k: short_value(v) for k, v in record.settings.items() if k in differing})
        row.update(record.figures())
        row["tags"] = ", ".join(record.tags)
        rows.append(row)
    return columns, rows


def thesis_headers(records: list[RunRecord]) -> list[str]:
    """Each run's description, else its name; a description that two runs share gets the
    run's name beside it."""
    headers = [r.header for r in records]
    return [
        f"{h} ({r.name})" if headers.count(h) > 1 and h != r.name else h
        for h, r in zip(headers, records, strict=True)
    ]


def thesis_table(records: list[RunRecord]) -> tuple[list[str], list[dict[str, Any]]]:
    """The thesis's layout: a row per metric, a column per run, values as the thesis printed
    them (text, so the CSV holds what the Markdown shows)."""
    headers = thesis_headers(records)
    columns = ["Metric", *headers]
    figures = [r.figures() for r in records]
    rows = []
    for label, key, percent in THESIS_ROWS:
        row: dict[str, Any] = {"Metric": label}
        for header, values in zip(headers, figures, strict=True):
            value = values[key]
            if value is None:
                row[header] = ""
            else:
                row[header] = f"{100 * value:.2f}%" if percent else f"{value:.3f}"
        rows.append(row)
    return columns, rows


def markdown_table(columns: list[str], rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(_escape(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_escape(cell(row.get(c))) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def csv_table(columns: list[str], rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: "" if row.get(c) is None else row.get(c) for c in columns})
    return buffer.getvalue()


def cell(value: Any) -> str:
    """A figure's cell: empty for none, floats to 4 decimals."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _escape(text: str) -> str:
    """One line of at most ``CELL_CHARS`` characters: a newline would end the table's row and a
    description of pages would fill the console (the CSV keeps every cell whole)."""
    text = " ".join(text.split())
    if len(text) > CELL_CHARS:
        text = text[: CELL_CHARS - 1] + "…"
    return text.replace("|", "\\|")
