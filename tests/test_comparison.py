"""compare_experiments.py: the table's minima and maxima come from metrics.csv (unfinished runs
included), what differs between runs is shown honestly (absent keys, no-effect settings left
out, the data), runs are chosen by name, description or tag, the thesis's table 4.2.6 comes back
from its logged runs, and the figures keep their legends off the data from 2 to 56 runs."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

import compare_experiments
from utils.errors import UserError
from utils.plotting import pyplot
from workflows.runs import figures
from workflows.runs.comparison import find_runs, run_comparison, select
from workflows.runs.differences import mark_best
from workflows.runs.run_folder import RunFolder
from workflows.runs.thesis_table import wide_table

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
    mark_best(records)
    columns, rows = wide_table(records)
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
    summary_md = (out / "summary.md").read_text()
    assert "| * | ghost_20260101000002 |" in summary_md
    assert "the highest max validation accuracy, ties broken by the lower min" in summary_md
    assert "the highest max validation accuracy" in printed  # the criterion, on the console too
    assert "| Metric | wd 0.3 | wd 0.6 |" in printed  # two runs: the thesis's table printed
    assert (out / "thesis_table.csv").read_text().splitlines()[0] == "Metric,wd 0.3,wd 0.6"
    for name in ("loss.png", "accuracy.png", "lr.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and 400 <= image.width <= 1600 and image.height >= 250
        assert (out / name).stat().st_size < 200_000

    files, text = run_comparison([str(output)], sweep="wd-1", out=str(tmp_path / "r2"))
    assert "ghost_20260101000001" in text and "ghost_20260101000002" not in text
    files, text = run_comparison([str(output)], tag="nope", out=str(tmp_path / "r3"))
    assert files == {} and "No runs" in text


def test_a_missing_folder_is_a_user_error(tmp_path, run_script):
    code, _, err = run_script(compare_experiments, [str(tmp_path / "missing")])
    assert code == 2
    assert "does not exist" in err


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


# ---- the thesis's 56 runs ---------------------------------------------------------------------
# Written by tests/data/make_thesis_runs.py from the original repository's all_experiments.txt.
THESIS_RUNS = Path(__file__).parent / "data" / "thesis_runs.json.gz"
# Thesis table 4.2.6 (optimizer change and L2 regularization), as printed.
TABLE_4_2_6 = """\
| Metric | C-7 | C-13 | C-14 | C-15 | C-16 | C-17 |
|---|---|---|---|---|---|---|
| Min. training loss | 1.003 | 1.023 | 1.071 | 1.213 | 1.193 | 1.378 |
| Min. validation loss | 2.744 | 2.315 | 2.089 | 2.285 | 2.174 | 2.301 |
| Max. training accuracy | 99.73% | 99.44% | 98.84% | 95.83% | 95.95% | 90.38% |
| Max. validation accuracy | 54.28% | 63.39% | 68.50% | 61.84% | 65.14% | 59.95% |
"""


def build_thesis_runs(root: Path) -> Path:
    """The thesis's 56 logged runs as run folders (config.yml with the experiment id as
    description, metrics.csv, summary.json)."""
    data = json.loads(gzip.decompress(THESIS_RUNS.read_bytes()))
    for run in data["runs"]:
        folder = root / run["name"]
        folder.mkdir(parents=True)
        (folder / "config.yml").write_text(yaml.safe_dump(run["config"], sort_keys=False))
        lines = [",".join(data["columns"]), *(",".join(map(str, r)) for r in run["rows"])]
        (folder / "metrics.csv").write_text("\n".join(lines) + "\n")
        summary = {"run_name": run["name"], "num_classes": 196, "interrupted": False}
        (folder / "summary.json").write_text(json.dumps(summary))
    return root


@pytest.fixture(scope="module")
def thesis_runs(tmp_path_factory) -> Path:
    return build_thesis_runs(tmp_path_factory.mktemp("thesis") / "output")


def test_the_thesis_table_4_2_6_comes_back_from_its_runs(thesis_runs, tmp_path, capsys):
    out = tmp_path / "report"
    picks = ["C-7", "C-13", "C-14", "C-15", "C-16", "C-17"]
    argv = [str(thesis_runs), "--out", str(out), *(a for p in picks for a in ("--select", p))]
    assert compare_experiments.main(argv) == 0
    printed = capsys.readouterr().out
    assert (out / "thesis_table.md").read_text() == TABLE_4_2_6
    assert TABLE_4_2_6 in printed  # six runs: printed too
    with open(out / "thesis_table.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["Metric", *picks] and rows[4][1:] == [
        "54.28%",
        "63.39%",
        "68.50%",
        "61.84%",
        "65.14%",
        "59.95%",
    ]
    # what differs: the optimizer, and weight_decay, which C-7 does not have at all
    header = next(line for line in printed.splitlines() if line.startswith("| best |"))
    assert "| optimizer | optimizer_params.weight_decay | epochs |" in header
    c7 = next(line for line in printed.splitlines() if "| C-7 |" in line)
    assert "| Adam | (absent) |" in c7
    assert "| * | ghost_20200919004258 | finished | C-14 |" in printed  # 68.50%
    assert "input/stanford (196 classes) for every run" in printed


def test_select_keeps_the_order_given_and_takes_globs(thesis_runs):
    records = find_runs([thesis_runs])
    assert len(records) == 56
    chosen = select(records, patterns=["C-5?", "C-7", "ghost_20200917224346"])
    assert [r.description for r in chosen] == [
        "C-50",
        "C-51",
        "C-53",
        "C-55",
        "C-56",
        "C-58",
        "C-7",
        "C-1",
    ]
    assert select(records, patterns=["C-7", "C-?"])[0].description == "C-7"  # once, first place
    assert select(records, patterns=["nothing-*"]) == []


def test_what_differs_leaves_out_what_cannot_change_the_result(tmp_path):
    root = tmp_path / "output"
    a = _make_run(root, "ghost_20260101000001", ["0,4.0,0.1,3.5,0.2,0.001"], 0.3, [])
    b = _make_run(root, "ghost_20260101000002", ["0,4.0,0.1,3.4,0.2,0.001"], 0.3, [])
    extra_a = {
        "devices": "auto",
        "num_workers": None,
        "init_from": "",
        "early_stop_patience": None,
        "augment_images": False,
        "image_augmentations": {"RandomAffine": {"degrees": 5}},
    }
    extra_b = {
        "devices": 1,
        "num_workers": 4,
        "init_from": None,
        "early_stop_patience": 15,
        "augment_images": False,
        "image_augmentations": {"RandomAffine": {"degrees": 25}},
        "dropout": 0.3,
    }
    for run, extra in ((a, extra_a), (b, extra_b)):
        config = yaml.safe_load((run / "config.yml").read_text())
        config.update(extra, output_path=str(run))
        (run / "config.yml").write_text(yaml.safe_dump(config))
    records = find_runs([root])
    mark_best(records)
    columns, rows = wide_table(records)
    settings = columns[columns.index("description") + 1 : columns.index("epochs")]
    assert settings == ["dropout"]  # absent in the first: shown, not dropped
    assert [r["dropout"] for r in rows] == ["(absent)", "0.3"]
    assert rows[1]["best"] == "*"  # equal accuracy: the lower min validation loss wins


def test_runs_on_other_data_are_said_so_and_not_ranked_together(output, tmp_path):
    fine_tune = _make_run(output, "ghost_20260101000003", ["0,0.1,1.0,0.1,1.0,0.001"], 0.3, [])
    config = yaml.safe_load((fine_tune / "config.yml").read_text())
    config["stanford_data_path"] = "input/my_photos"
    (fine_tune / "config.yml").write_text(yaml.safe_dump(config))
    files, text = run_comparison([str(output)], out=str(tmp_path / "r"))
    assert text.startswith("WARNING: these runs were trained on different data")
    assert "input/my_photos (? classes): wd 0.3" in text
    summary = files["summary.md"].read_text()
    assert "different data" in summary.split("|")[0]  # at the top, before the table
    stars = [line.split("|")[2].strip() for line in summary.splitlines() if line.startswith("| *")]
    assert stars == ["ghost_20260101000002", "ghost_20260101000003"]  # one per data


def _geometry(fig) -> tuple[float, bool, bool]:
    """Width share of the axes, whether the legend overlaps an axes, whether all is inside."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    axes = [a.get_window_extent(renderer) for a in fig.axes]
    (legend,) = fig.legends
    box = legend.get_window_extent(renderer)
    overlaps = any(box.overlaps(a) for a in axes)
    share = (max(a.x1 for a in axes) - min(a.x0 for a in axes)) / fig.bbox.width
    tight = fig.get_tightbbox(renderer)
    inside = tight.x0 >= -0.01 and tight.y0 >= -0.01
    inside = inside and tight.x1 <= fig.get_figwidth() + 0.01
    inside = inside and tight.y1 <= fig.get_figheight() + 0.01
    return share, overlaps, inside


@pytest.mark.parametrize("count", [2, 8, 56])
def test_figures_keep_the_legend_off_the_axes(thesis_runs, count):
    records = find_runs([thesis_runs])[:count]
    for record in records:  # long descriptions: the worst case for the legend
        record.config["description"] = f"{record.description}: a long description of this run"
    mark_best(records)
    for fig in (
        figures.plot_metric_pair(records, "train_loss", "valid_loss", "loss"),
        figures.plot_metric_pair(records, "train_acc", "valid_acc", "accuracy", from_epoch=50),
        figures.plot_lr(records),
    ):
        share, overlaps, inside = _geometry(fig)
        labels = [t.get_text() for t in fig.legends[0].get_texts()]
        pyplot().close(fig)
        assert not overlaps and inside, count
        assert share > 0.6, (count, share)
        if count > figures.COLOURED:
            assert len(labels) <= figures.HIGHLIGHTED + 2 and f"{count - 5} other runs" in labels


def test_lr_goes_on_a_log_axis_only_when_it_spans_more_than_10x(thesis_runs, tmp_path):
    records = find_runs([thesis_runs])
    by_id = {r.description: r for r in records}
    constant = figures.plot_lr([by_id["C-7"]])
    stepped = figures.plot_lr([by_id["C-50"]])
    assert constant.axes[0].get_yscale() == "linear" and constant.axes[0].get_ylim()[0] == 0
    assert stepped.axes[0].get_yscale() == "log"
    pyplot().close("all")
    curves = figures.plot_learning_curves(by_id["C-50"], tmp_path / "learning_curves.png")
    assert curves.is_file() and by_id["C-50"].best_epoch == 114


def test_a14_a_newline_or_a_huge_description_keeps_summary_md_one_row_per_run(output, tmp_path):
    run = output / "ghost_20260101000001"
    config = yaml.safe_load((run / "config.yml").read_text())
    config["description"] = "first line\nsecond | line " + "x" * 20_000
    config["tags"] = ["a\ntag"]
    (run / "config.yml").write_text(yaml.safe_dump(config))
    out = tmp_path / "report"
    assert compare_experiments.main([str(output), "--out", str(out)]) == 0
    table = (out / "summary.md").read_text().split("## The thesis's table")[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "ghost_" in line]
    assert len(rows) == 2  # the newline did not start a row of its own
    assert "first line second \\| line x" in rows[0] or "first line second \\| line x" in rows[1]
    assert max(len(r) for r in rows) < 1_000  # the 20,000 characters were cut
    with open(out / "summary.csv", newline="") as handle:  # the CSV keeps the cell whole
        assert any(len(r["description"]) > 20_000 for r in csv.DictReader(handle))
