"""compare_experiments.py: the table's minima and maxima come from metrics.csv (unfinished runs
included), what differs between runs is shown, non-runs are skipped, the plots are PNGs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

import compare_experiments
from utils.errors import UserError
from workflows.runs.comparison import find_runs, run_comparison, table
from workflows.runs.run_folder import RunFolder

HEADER = "epoch,train_loss,train_acc,valid_loss,valid_acc,lr\n"


def _make_run(root: Path, name: str, rows: list[str], wd: float, tags, finished=True) -> Path:
    run = root / name
    (run / "checkpoints").mkdir(parents=True)
    (run / "metrics.csv").write_text(HEADER + "".join(r + "\n" for r in rows))
    config = {
        "architecture": "ghost",
        "batch_size": 64,
        "optimizer_params": {"lr": 0.001, "weight_decay": wd},
        "output_path": str(root),
        "tags": tags,
        "description": f"wd {wd}",
    }
    (run / "config.yml").write_text(yaml.safe_dump(config))
    if finished:
        (run / "summary.json").write_text(json.dumps({"run_name": name, "interrupted": False}))
    return run


@pytest.fixture
def output(tmp_path) -> Path:
    root = tmp_path / "output"
    _make_run(
        root,
        "ghost_20260101000001",
        ["0,4.0,0.10,3.5,0.20,0.001", "1,3.0,0.30,3.9,0.25,0.001", "2,2.5,0.35,3.7,0.22,0.0001"],
        0.3,
        ["4.2.11", "sweep:wd-1"],
    )
    _make_run(
        root,
        "ghost_20260101000002",
        ["0,3.8,0.12,3.2,0.40,0.001", "1,2.0,0.50,3.4,0.38,0.001"],
        0.6,
        ["4.2.11"],
        finished=False,  # still going, or killed: no summary.json
    )
    (root / "not_a_run").mkdir()
    (root / "mlflow.db").write_bytes(b"")
    return root


def test_table_has_the_minima_and_maxima_of_each_metrics_file(output):
    notes: list[str] = []
    records = find_runs([output], notes)
    assert [r.name for r in records] == ["ghost_20260101000001", "ghost_20260101000002"]
    assert any("not_a_run" in n for n in notes)
    columns, rows = table(records)
    assert "optimizer_params.weight_decay" in columns and "batch_size" not in columns
    first, second = rows
    assert (first["epochs"], first["min_train_loss"], first["min_valid_loss"]) == (3, 2.5, 3.5)
    assert (first["max_train_acc"], first["max_valid_acc"]) == (0.35, 0.25)
    assert (second["min_valid_loss"], second["max_valid_acc"]) == (3.2, 0.40)
    assert first["status"] == "finished" and second["status"] == "unfinished"
    assert second["best"] == "*" and first["best"] == ""
    assert first["tags"] == "4.2.11, sweep:wd-1" and first["description"] == "wd 0.3"


def test_report_files_and_filters(output, tmp_path, capsys):
    out = tmp_path / "report"
    assert compare_experiments.main([str(output), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ghost_20260101000001" in printed and "unfinished" in printed
    with open(out / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["min_valid_loss"] for r in rows] == ["3.5", "3.2"]
    assert "| * | ghost_20260101000002 |" in (out / "summary.md").read_text()
    for name in ("loss.png", "accuracy.png", "lr.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and 400 <= image.width <= 1600 and image.height >= 250
        assert (out / name).stat().st_size < 200_000

    files, text = run_comparison([str(output)], sweep="wd-1", out=str(tmp_path / "r2"))
    assert "ghost_20260101000001" in text and "ghost_20260101000002" not in text
    files, text = run_comparison([str(output)], tag="nope", out=str(tmp_path / "r3"))
    assert files == {} and "No runs" in text


def test_a_missing_folder_is_a_user_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        compare_experiments.run_cli(lambda: compare_experiments.main([str(tmp_path / "missing")]))
    assert stop.value.code == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_report_folder_that_cannot_be_written_is_a_user_error(output, tmp_path):
    (tmp_path / "a_file").write_text("x")
    for out in (tmp_path / "a_file", tmp_path / "a_file" / "below"):
        with pytest.raises(UserError, match="cannot write the report to .*--out DIR"):
            run_comparison([str(output)], out=str(out))
    assert (tmp_path / "a_file").read_text() == "x"


def _alias_bomb(levels: int = 9) -> str:
    """A few hundred bytes of YAML that stand for 10**levels values once expanded."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for level in range(1, levels):
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


def test_a_run_config_alias_bomb_is_skipped_with_a_note(output, tmp_path, capsys):
    # issue 23 A.9: RunFolder.read_config used plain yaml.safe_load, and the comparison then
    # walked the billion values (a hang, gigabytes of memory)
    bomb = output / "ghost_20260101000002" / "config.yml"
    bomb.write_text(_alias_bomb())
    notes: list[str] = []
    records = find_runs([output], notes)
    assert [r.name for r in records] == ["ghost_20260101000001"]
    (note,) = [n for n in notes if "ghost_20260101000002" in n]
    assert "aliases" in note and "not a run folder" not in note
    out = tmp_path / "report"
    assert compare_experiments.main([str(output), "--out", str(out)]) == 0
    assert "ghost_20260101000002" in (out / "summary.md").read_text()  # in the report's notes
    assert RunFolder(bomb.parent).read_config() == {}  # evaluation: unknown settings, not a hang
