"""prepare_dataset / prepare_stanford_dataset.py on miniature raw downloads of every layout."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

import prepare_stanford_dataset
from datasets.labels import LABEL_COLUMNS
from datasets.prepare import MARKER_NAME, prepare_dataset
from datasets.prepare import images as prepare_images
from datasets.prepare.output import OWNER_FILE, UNOWNED_STALE_AFTER_S
from datasets.sample_data import make_sample_raw, sample_class_names, sample_images
from utils.errors import UserError, run_cli

REPO = Path(__file__).resolve().parents[1]
IMAGES = sample_images()  # the defaults make_sample_raw uses: 3 classes, 4 train + 2 test each


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == LABEL_COLUMNS
        return list(reader)


def tree(root: Path) -> dict[str, int]:
    """Every file under root (hidden ones too) with its mtime in ns."""
    return {
        str(path.relative_to(root)): path.stat().st_mtime_ns
        for path in root.rglob("*")
        if path.is_file()
    }


def raw_for(tmp_path: Path, layout: str) -> tuple[Path, str]:
    """A sample download; returns the raw dir and the layout whose file names it uses."""
    if layout == "extracted-nested":
        return make_sample_raw(tmp_path / "raw", "extracted", nested=True), "extracted"
    if layout == "extracted-parent":
        make_sample_raw(tmp_path / "raw", "extracted")
        return tmp_path / "raw", "extracted"
    if layout == "updated-unpacked":
        raw = make_sample_raw(tmp_path / "raw", "updated")
        for archive in ("car_ims.tgz", "car_devkit.tgz"):
            with tarfile.open(raw / archive) as tar:
                tar.extractall(raw, filter="data")
            (raw / archive).unlink()
        return raw, "updated"
    return make_sample_raw(tmp_path / "raw", layout), layout


LAYOUTS = [
    "updated",
    "original",
    "extracted",
    "extracted-nested",
    "extracted-parent",
    "updated-unpacked",
]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_gives_the_same_dataset(tmp_path, layout):
    raw, names_from = raw_for(tmp_path, layout)
    out = tmp_path / "out"
    report = prepare_dataset(raw, out, progress=False)

    assert report.layout == names_from
    assert (report.num_train, report.num_test, report.num_classes) == (12, 6, 3)
    assert report.missing == report.broken == report.refused == []
    assert not report.skipped
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [MARKER_NAME, "test", "test_labels.csv", "train", "train_labels.csv"]
    )
    for split in ("train", "test"):
        expected = {image.file_name(names_from): image for image in IMAGES if image.split == split}
        rows = read_csv(out / f"{split}_labels.csv")
        fnames = [row["image_fname"] for row in rows]
        assert fnames == sorted(expected)
        assert sorted(p.name for p in (out / split).iterdir()) == fnames
        for row in rows:
            image = expected[row["image_fname"]]  # looked up by file name, never by index
            assert int(row["class"]) == image.class_id
            box = tuple(int(row[k]) for k in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2"))
            assert box == image.bbox
            assert row["class_name"] == sample_class_names(3)[image.class_id - 1]
    assert {int(r["class"]) for r in read_csv(out / "train_labels.csv")} == {1, 2, 3}
    marker = json.loads((out / MARKER_NAME).read_text())
    assert marker["num_train"] == 12 and marker["layout"] == names_from


def test_layouts_agree_modulo_file_names(tmp_path):
    contents = {}
    for layout in ("updated", "original", "extracted"):
        raw = make_sample_raw(tmp_path / layout / "raw", layout)
        out = tmp_path / layout / "out"
        prepare_dataset(raw, out, progress=False)
        contents[layout] = {
            split: (
                [list(row.values())[1:] for row in read_csv(out / f"{split}_labels.csv")],
                [p.read_bytes() for p in sorted((out / split).iterdir())],
            )
            for split in ("train", "test")
        }
    assert contents["updated"] == contents["original"] == contents["extracted"]


def test_images_copied_unchanged_including_grayscale_and_cmyk(tmp_path):
    raw = make_sample_raw(tmp_path / "raw", "original")
    out = tmp_path / "out"
    prepare_dataset(raw, out, progress=False)
    for split in ("train", "test"):
        with tarfile.open(raw / f"cars_{split}.tgz") as tar:
            originals = {
                Path(m.name).name: tar.extractfile(m).read() for m in tar.getmembers() if m.isreg()
            }
        modes = set()
        for path in (out / split).iterdir():
            assert path.read_bytes() == originals[path.name]
            with Image.open(path) as image:
                image.load()
                modes.add(image.mode)
                assert image.convert("RGB").size == image.size
        assert {"L", "CMYK", "RGB"} <= modes


def test_rerun_is_skipped_and_force_rebuilds(tmp_path, caplog):
    raw = make_sample_raw(tmp_path / "raw", "updated")
    out = tmp_path / "out"
    prepare_dataset(raw, out, progress=False)
    before = tree(out)

    with caplog.at_level("DEBUG", logger="datasets.prepare"):  # the CLI says it once
        again = prepare_dataset(raw, out, progress=False)
    assert again.skipped
    assert (again.num_train, again.num_test, again.num_classes) == (12, 6, 3)
    assert tree(out) == before
    assert "--force" in caplog.text

    # Skipping does not even need the raw files any more.
    shutil.rmtree(raw)
    assert prepare_dataset(raw, out, progress=False).skipped

    raw = make_sample_raw(tmp_path / "raw", "updated")
    (out / "train" / "stray.txt").write_text("not part of the dataset")
    rebuilt = prepare_dataset(raw, out, force=True, progress=False)
    assert not rebuilt.skipped and rebuilt.num_train == 12
    assert not (out / "train" / "stray.txt").exists()
    assert set(tree(out)) == set(before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "raw"]


def test_cli_rerun_and_force(tmp_path, capsys):
    raw = make_sample_raw(tmp_path / "raw", "extracted")
    out = tmp_path / "out"
    args = ["--raw-dir", str(raw), "--out-dir", str(out), "--quiet"]
    assert prepare_stanford_dataset.main(args) == 0
    assert "12 train and 6 test images, 3 classes" in capsys.readouterr().out
    before = tree(out)
    assert prepare_stanford_dataset.main(args) == 0
    assert "Already prepared" in capsys.readouterr().out
    assert tree(out) == before
    assert prepare_stanford_dataset.main([*args, "--force"]) == 0
    assert "Prepared Stanford Cars" in capsys.readouterr().out
    assert tree(out).keys() == before.keys()


def _write_malicious_archive(raw: Path, tmp_path: Path) -> dict[str, str]:
    """Rewrite car_ims.tgz with hostile members; return annotated source -> expected problem."""
    with tarfile.open(raw / "car_ims.tgz") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isreg()}
    outside = tmp_path / "outside"
    hostile = {
        "car_ims/000003.jpg": "symlink",
        "car_ims/000005.jpg": "hardlink",
        "car_ims/000004.jpg": "dotdot",
        "car_ims/000006.jpg": "absolute",
    }
    with tarfile.open(raw / "car_ims.tgz", "w:gz") as tar:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        for name, data in members.items():
            kind = hostile.get(name)
            if kind is None:
                add(name, data)
            elif kind in ("symlink", "hardlink"):
                link = tarfile.TarInfo(name)
                link.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
                link.linkname = (
                    str(outside / "target.jpg") if kind == "symlink" else ("car_ims/000001.jpg")
                )
                tar.addfile(link)
            elif kind == "dotdot":
                add("../" + name.split("/")[1], data)
            else:
                add(str(outside / "abs" / name.split("/")[1]), data)
        add("../escape.jpg", members["car_ims/000001.jpg"])
        add("car_ims/../../escape2.jpg", members["car_ims/000001.jpg"])
        add(str(outside / "absolute.jpg"), members["car_ims/000001.jpg"])
    with tarfile.open(raw / "car_ims.tgz") as tar:  # the hostile names really are in there
        names = tar.getnames()
    assert "../escape.jpg" in names and str(outside / "absolute.jpg") in names
    return hostile


def test_hostile_archive_members_are_refused_and_never_escape(tmp_path):
    work = tmp_path / "work"
    raw = make_sample_raw(work / "raw", "updated")
    hostile = _write_malicious_archive(raw, tmp_path)
    out = work / "out"
    outside_before = sorted(str(p) for p in tmp_path.rglob("*") if not p.is_relative_to(out))

    report = prepare_dataset(raw, out, progress=False)

    assert report.refused == sorted(hostile)
    assert report.missing == [] and report.broken == []
    assert report.num_train + report.num_test == 18 - len(hostile)
    outside_after = sorted(str(p) for p in tmp_path.rglob("*") if not p.is_relative_to(out))
    assert outside_after == outside_before
    assert not (tmp_path / "outside").exists()
    assert not (work / "escape.jpg").exists() and not (tmp_path / "escape2.jpg").exists()
    written = {p.name for split in ("train", "test") for p in (out / split).iterdir()}
    assert not written & {name.split("/")[1] for name in hostile}
    assert "escape.jpg" not in written and "absolute.jpg" not in written
    assert all(not p.is_symlink() for p in out.rglob("*"))
    listed = {
        row["image_fname"] for s in ("train", "test") for row in read_csv(out / f"{s}_labels.csv")
    }
    assert listed == written
    assert json.loads((out / MARKER_NAME).read_text())["refused"] == sorted(hostile)


def test_missing_and_broken_images_are_reported_and_left_out(tmp_path, caplog):
    raw = make_sample_raw(tmp_path / "raw", "extracted")
    (raw / "cars_train" / "00004.jpg").unlink()
    truncated = raw / "cars_train" / "00007.jpg"
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    (raw / "cars_test" / "00002.jpg").write_bytes(b"not a jpeg at all")
    (raw / "cars_train" / "99999.jpg").write_bytes(b"extra file nobody annotated")

    with caplog.at_level("WARNING"):
        report = prepare_dataset(raw, tmp_path / "out", progress=False)

    assert report.missing == ["cars_train/00004.jpg"]
    assert report.broken == ["cars_test/00002.jpg", "cars_train/00007.jpg"]
    assert (report.num_train, report.num_test) == (10, 5)
    train = {r["image_fname"] for r in read_csv(tmp_path / "out" / "train_labels.csv")}
    assert "00004.jpg" not in train and "00007.jpg" not in train and "99999.jpg" not in train
    assert not (tmp_path / "out" / "train" / "00007.jpg").exists()
    assert "1 annotated images left out as missing" in caplog.text
    assert "cars_train/00007.jpg" in caplog.text


def test_missing_archive_member_is_reported(tmp_path):
    raw = make_sample_raw(tmp_path / "raw", "original")
    with tarfile.open(raw / "cars_test.tgz") as tar:
        kept = [(m, tar.extractfile(m).read()) for m in tar.getmembers() if m.isreg()]
    with tarfile.open(raw / "cars_test.tgz", "w:gz") as tar:
        for member, data in kept:
            if not member.name.endswith("00003.jpg"):
                tar.addfile(member, io.BytesIO(data))
    report = prepare_dataset(raw, tmp_path / "out", progress=False)
    assert report.missing == ["cars_test/00003.jpg"]
    assert report.num_test == 5


def test_empty_split_is_an_error_and_writes_nothing(tmp_path):
    raw = make_sample_raw(tmp_path / "raw", "extracted")
    for path in (raw / "cars_test").iterdir():
        path.unlink()
    with pytest.raises(UserError, match="No usable test images"):
        prepare_dataset(raw, tmp_path / "out", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


def test_interrupted_run_leaves_nothing_behind(tmp_path, monkeypatch):
    raw = make_sample_raw(tmp_path / "raw", "updated")
    real_check = prepare_images._check_image
    calls = []

    def crash_midway(data):
        calls.append(1)
        if len(calls) == 7:
            raise KeyboardInterrupt
        return real_check(data)

    monkeypatch.setattr(prepare_images, "_check_image", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(raw, tmp_path / "out", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]

    # An interrupted --force rebuild keeps the old, complete dataset.
    monkeypatch.setattr(prepare_images, "_check_image", real_check)
    prepare_dataset(raw, tmp_path / "out", progress=False)
    before = tree(tmp_path / "out")
    calls.clear()
    monkeypatch.setattr(prepare_images, "_check_image", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(raw, tmp_path / "out", force=True, progress=False)
    assert tree(tmp_path / "out") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "raw"]


def work_folder(path: Path, owner: int | None) -> Path:
    """A work folder as a run leaves it, owned by process ``owner`` (None: not recorded)."""
    (path / "out" / "train").mkdir(parents=True)
    (path / "out" / "train" / "000001.jpg").write_bytes(b"half")
    if owner is not None:
        (path / OWNER_FILE).write_text(f"{owner}\n")
    return path


def test_stale_temp_folders_are_cleaned(tmp_path):
    raw = make_sample_raw(tmp_path / "raw", "updated")
    dead_pid = 2**31 - 2  # beyond any pid_max: no such process
    work_folder(tmp_path / ".out.partial-k2j4h1x9", dead_pid)
    work_folder(tmp_path / ".out.old-p0q9r8s7", dead_pid)
    # Without a recorded owner only age tells: an old folder is stale, a new one may belong to
    # a run that has not written its owner file yet.
    abandoned = tmp_path / ".out.partial-abandoned"
    abandoned.mkdir()
    long_ago = time.time() - UNOWNED_STALE_AFTER_S - 60
    os.utime(abandoned, (long_ago, long_ago))
    (tmp_path / ".out.partial-starting").mkdir()
    prepare_dataset(raw, tmp_path / "out", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.partial-starting", "out", "raw"]


@pytest.mark.skipif(os.name != "posix", reason="liveness of other processes is checked on POSIX")
def test_work_folder_of_a_running_process_is_kept(tmp_path, caplog):
    raw = make_sample_raw(tmp_path / "raw", "updated")
    live = work_folder(tmp_path / ".out.partial-x7y6z5w4", os.getppid())
    with caplog.at_level("WARNING"):
        prepare_dataset(raw, tmp_path / "out", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name, "out", "raw"]
    assert (live / "out" / "train" / "000001.jpg").read_bytes() == b"half"
    assert "still running" in caplog.text


def test_nonempty_foreign_out_dir_is_left_alone(tmp_path):
    raw = make_sample_raw(tmp_path / "raw", "updated")
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    for force in (False, True):
        with pytest.raises(UserError, match=r"not empty.*\.prepared\.json"):
            prepare_dataset(raw, out, force=force, progress=False)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    # An empty existing folder is fine.
    (out / "notes.txt").unlink()
    assert prepare_dataset(raw, out, progress=False).num_train == 12


def test_out_dir_that_is_a_file_or_holds_the_raw_data(tmp_path):
    raw = make_sample_raw(tmp_path / "raw", "updated")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="not a folder"):
        prepare_dataset(raw, tmp_path / "file", progress=False)
    out = tmp_path / "out"
    prepare_dataset(raw, out, progress=False)
    inside = make_sample_raw(out / "raw_copy", "updated")
    with pytest.raises(UserError, match="contains the raw data"):
        prepare_dataset(inside, out, force=True, progress=False)
    assert (inside / "car_ims.tgz").is_file()


def test_corrupt_archive_is_a_user_error(tmp_path):
    raw = make_sample_raw(tmp_path / "raw", "updated", train_per_class=30)
    archive = raw / "car_ims.tgz"
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(UserError, match=r"car_ims\.tgz.*(corrupt|truncated).*download it again"):
        prepare_dataset(raw, tmp_path / "out", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


def test_corrupt_mat_is_a_user_error(tmp_path):
    raw = make_sample_raw(tmp_path / "raw", "updated")
    (raw / "cars_annos.mat").write_bytes(b"MATLAB 5.0 MAT-file, garbage" * 3)
    with pytest.raises(UserError, match=r"cars_annos\.mat.*download it again"):
        prepare_dataset(raw, tmp_path / "out", progress=False)
    scipy.io.savemat(raw / "cars_annos.mat", {"something_else": np.zeros(3)})
    with pytest.raises(UserError, match=r"cars_annos\.mat does not look like"):
        prepare_dataset(raw, tmp_path / "out", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


def test_missing_test_labels_file_is_named(tmp_path):
    raw = make_sample_raw(tmp_path / "raw", "original")
    (raw / "cars_test_annos_withlabels.mat").unlink()
    with pytest.raises(UserError, match="cars_test_annos_withlabels.mat is missing"):
        prepare_dataset(raw, tmp_path / "out", progress=False)


def test_class_names_with_commas_and_quotes(tmp_path):
    raw = make_sample_raw(tmp_path / "raw", "extracted")
    names = ["Ram C/V, Cargo Van 2012", 'The "Quoted" Car 2010', "Plain Name 2001"]
    cell = np.empty((1, 3), dtype=object)
    cell[0, :] = names
    scipy.io.savemat(raw / "devkit" / "cars_meta.mat", {"class_names": cell})
    prepare_dataset(raw, tmp_path / "out", progress=False)
    rows = read_csv(tmp_path / "out" / "train_labels.csv")
    assert {row["class_name"] for row in rows} == set(names)
    assert all(row["class_name"] == names[int(row["class"]) - 1] for row in rows)


def test_updated_release_without_devkit_uses_cars_annos_class_names(tmp_path):
    raw = make_sample_raw(tmp_path / "raw", "updated")
    (raw / "car_devkit.tgz").unlink()
    report = prepare_dataset(raw, tmp_path / "out", progress=False)
    assert report.num_classes == 3
    rows = read_csv(tmp_path / "out" / "test_labels.csv")
    assert {row["class_name"] for row in rows} == set(sample_class_names(3))


def test_out_of_range_class_is_a_user_error(tmp_path):
    raw = make_sample_raw(tmp_path / "raw", "updated")
    mat = scipy.io.loadmat(raw / "cars_annos.mat")
    mat["annotations"][0, 2]["class"] = np.array([[9]], dtype=np.uint16)
    scipy.io.savemat(raw / "cars_annos.mat", {k: mat[k] for k in ("annotations", "class_names")})
    with pytest.raises(UserError, match="class 9, outside 1..3"):
        prepare_dataset(raw, tmp_path / "out", progress=False)


def test_unrecognised_raw_dir_exits_2_with_the_expected_files(tmp_path, capsys, monkeypatch):
    raw = tmp_path / "downloads"
    raw.mkdir()
    (raw / "car_ims.tgz").write_bytes(b"")  # a partial download: cars_annos.mat is missing
    argv = ["--raw-dir", str(raw), "--out-dir", str(tmp_path / "out")]
    with pytest.raises(UserError) as err:
        prepare_stanford_dataset.main(argv)
    for expected in (
        "car_ims.tgz",
        "cars_annos.mat",
        "car_devkit.tgz",
        "cars_train.tgz",
        "cars_test_annos_withlabels.mat",
        "stanford_cars/",
        "--raw-dir",
    ):
        assert expected in str(err.value)

    monkeypatch.setattr(sys, "argv", ["prepare_stanford_dataset.py", *argv])
    with pytest.raises(SystemExit) as exit_info:
        run_cli(prepare_stanford_dataset.main)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("error: No Stanford Cars download was recognised")
    assert not (tmp_path / "out").exists()


def test_script_exit_code_2_without_traceback(tmp_path, run_script):
    missing = tmp_path / "nowhere"
    argv = ["--raw-dir", str(missing), "--out-dir", str(tmp_path / "out"), "--quiet"]
    code, _, err = run_script(prepare_stanford_dataset, argv, cwd=tmp_path)  # logs to ./logs
    assert code == 2
    assert err.startswith("error: The raw data folder")
    assert "car_ims.tgz" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_script_succeeds(tmp_path, run_script):
    raw = make_sample_raw(tmp_path / "raw", "original")
    argv = ["--raw-dir", str(raw), "--out-dir", str(tmp_path / "out")]
    code, out, err = run_script(prepare_stanford_dataset, argv, cwd=tmp_path)  # logs to ./logs
    assert code == 0, err
    assert "Found the 'original' Stanford Cars release" in err
    assert "12 train and 6 test images, 3 classes" in out


def test_bad_cli_argument_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        prepare_stanford_dataset.main(["--no-such-option"])
    assert exit_info.value.code == 2
