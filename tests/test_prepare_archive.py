"""prepare_stanford_dataset.py beside the preparation itself: the archive for Colab, a folder
prepared by the original code, the day's log file."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

import prepare_stanford_dataset
from datasets.prepare import MARKER_NAME, prepare_dataset
from datasets.prepare.colab_archive import write_colab_archive
from datasets.sample_data import make_sample_raw
from utils.errors import UserError

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "prepare_stanford_dataset.py"


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def test_archive_has_one_stanford_folder_with_the_prepared_files(prepared_data, tmp_path):
    archive = write_colab_archive(prepared_data, tmp_path / "input" / "stanford.tar.gz")
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        assert all(m.isdir() or m.isreg() for m in tar.getmembers())
        tar.extractall(tmp_path / "unpacked", filter="data")
    assert {name.split("/")[0] for name in names} == {"stanford"}
    assert {"stanford/train", "stanford/test", "stanford/train_labels.csv"} <= set(names)
    unpacked = _files(tmp_path / "unpacked" / "stanford")
    expected = {k: v for k, v in _files(prepared_data).items() if k != MARKER_NAME}
    assert unpacked == expected
    assert [p.name for p in archive.parent.iterdir()] == ["stanford.tar.gz"]  # no temp file


def test_an_archive_path_that_is_a_folder_gets_the_archive_inside(prepared_data, tmp_path):
    archive = write_colab_archive(prepared_data, tmp_path)
    assert archive == tmp_path / "stanford.tar.gz" and tarfile.is_tarfile(archive)


def test_archive_of_a_folder_that_is_not_prepared_is_a_user_error(tmp_path):
    (tmp_path / "half" / "train").mkdir(parents=True)
    with pytest.raises(UserError, match="test, train_labels.csv, test_labels.csv missing"):
        write_colab_archive(tmp_path / "half", tmp_path / "stanford.tar.gz")
    assert not (tmp_path / "stanford.tar.gz").exists()


def _original_layout(folder: Path, prepared: Path) -> None:
    """What the original code left: the four entries and no marker."""
    folder.mkdir()
    for name in ("train", "test"):
        (folder / name).mkdir()
        (folder / name / "old.jpg").write_bytes(next((prepared / "train").iterdir()).read_bytes())
        (folder / f"{name}_labels.csv").write_text("image_fname,class\nold.jpg,1\n")


def test_force_replaces_a_folder_prepared_by_the_original_code(tmp_path):
    raw = make_sample_raw(tmp_path / "raw", "updated")
    reference = tmp_path / "reference"
    prepare_dataset(raw, reference, progress=False)
    out = tmp_path / "out"
    _original_layout(out, reference)
    with pytest.raises(UserError, match="--force"):
        prepare_dataset(raw, out, progress=False)
    assert (out / "train" / "old.jpg").exists()
    report = prepare_dataset(raw, out, force=True, progress=False)
    assert report.num_train == 12 and (out / MARKER_NAME).is_file()
    assert not (out / "train" / "old.jpg").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "raw", "reference"]


def test_force_still_leaves_a_foreign_folder_alone(tmp_path):
    raw = make_sample_raw(tmp_path / "raw", "updated")
    out = tmp_path / "out"
    out.mkdir()
    for name in ("train", "test"):
        (out / name).mkdir()
    for name in ("train_labels.csv", "test_labels.csv", "thesis.docx"):
        (out / name).write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        prepare_dataset(raw, out, force=True, progress=False)
    assert (out / "thesis.docx").read_text() == "mine"


def test_script_archives_and_logs_to_the_daily_file(tmp_path, run_script):
    raw = make_sample_raw(tmp_path / "raw", "updated")
    (tmp_path / "config.yml").write_text(
        f"stanford_raw_data_path: '{raw}'\nstanford_data_path: 'input/stanford'\n"
        "logging_dir: 'mylogs'\nloglevel: NOTSET\n"
    )
    code, out, err = run_script(prepare_stanford_dataset, ["--archive"], cwd=tmp_path)
    assert code == 0, err
    archive = tmp_path / "input" / "stanford.tar.gz"
    assert f"Packed for train_colab.ipynb: {Path('input/stanford.tar.gz')}" in out
    with tarfile.open(archive) as tar:
        assert "stanford/train_labels.csv" in tar.getnames()
    (log_file,) = (tmp_path / "mylogs").glob("*.log")
    assert "datasets.prepare" in log_file.read_text()


def test_cli_archive_path_in_process(tmp_path, capsys):
    raw = make_sample_raw(tmp_path / "raw", "extracted")
    out = tmp_path / "prepared"
    target = tmp_path / "elsewhere" / "data.tar.gz"
    args = ["--raw-dir", str(raw), "--out-dir", str(out), "--quiet", "--archive", str(target)]
    assert prepare_stanford_dataset.main(args) == 0
    assert str(target) in capsys.readouterr().out
    with tarfile.open(target) as tar:
        assert {n.split("/")[0] for n in tar.getnames()} == {"stanford"}


def test_archive_path_with_a_trailing_slash_is_a_new_folder(tmp_path, capsys):
    # issue 23 C.1: 'out/x/' (not there yet) was written as a gzip file named 'out/x'
    raw = make_sample_raw(tmp_path / "raw", "extracted")
    folder = tmp_path / "out" / "x"
    args = ["--raw-dir", str(raw), "--out-dir", str(tmp_path / "prepared"), "--quiet"]
    assert prepare_stanford_dataset.main([*args, "--archive", f"{folder}/"]) == 0
    assert folder.is_dir() and tarfile.is_tarfile(folder / "stanford.tar.gz")
    assert str(folder / "stanford.tar.gz") in capsys.readouterr().out
