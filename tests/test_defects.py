"""The defects of issue 13 (a new user's and a hostile tester's findings), one test each: every
one reproduces the defect on tiny data and fails without its fix."""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
import yaml

import prepare_stanford_dataset
from configuration import TEMPLATE_PATH, load_config
from configuration import checks as config_checks
from datasets import sample_data
from datasets.labels import (
    Annotation,
    class_names_from,
    read_annotations,
    write_labels_csv,
)
from datasets.prepare import MARKER_NAME, prepare_dataset
from datasets.prepare import archives as prepare_archives
from datasets.prepare.images import write_fix
from datasets.sample_data import make_sample_raw, sample_class_names
from datasets.stanford_data import StanfordCarsDataset
from models.arch_dict import build_network
from models.checkpoint import load_network
from utils.errors import UserError
from utils.hardware import available_cpus
from utils.text import shown_path
from workflows.inference import evaluation as evaluation_module
from workflows.inference.evaluation import evaluate_checkpoint
from workflows.inference.evaluation_files import run_summary_line
from workflows.inference.export import export_checkpoint
from workflows.inference.prediction import expand_paths, predict_paths
from workflows.runs.run_folder import RunFolder
from workflows.training.run import build_datamodule

TOKEN = "nep-SECRET-token-4242"


def load_error(path=TEMPLATE_PATH, overrides=()) -> str:
    with pytest.raises(UserError) as info:
        load_config(path, list(overrides))
    return str(info.value)


# ---- 3: what a setting costs in memory, bounded before anything is allocated --------------------
def test_3_huge_image_size_is_refused_at_load():
    message = load_error(overrides=["image_size=[100000,100000]"])
    assert "image_size" in message and "4096" in message


def test_3_batch_times_image_size_is_checked_against_memory(monkeypatch):
    monkeypatch.setattr(config_checks, "physical_memory_bytes", lambda: 2 * 2**30)
    message = load_error(overrides=["image_size=[2048,2048]", "batch_size=64"])
    assert "batch_size" in message and "2.0 GiB" in message
    load_config(TEMPLATE_PATH, ["image_size=[227,227]", "batch_size=64"])  # fits in 2 GiB


# ---- 4: num_workers clamped to the CPUs -----------------------------------------------------------
def test_4_num_workers_is_clamped_to_the_cpus(fast_config, caplog):
    config = fast_config("num_workers=1000")
    with caplog.at_level(logging.WARNING):
        data = build_datamodule(config)
    assert data.num_workers == available_cpus()
    assert "num_workers 1000" in caplog.text


# ---- 5: YAML alias bombs -----------------------------------------------------------------------
BOMB = "\n".join(
    [
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        *(
            f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]"
            for prev, name in zip("abcdefg", "bcdefgh")
        ),
        "seed: [*h, *h, *h, *h, *h, *h, *h, *h, *h]",
    ]
)


def test_5_alias_bomb_is_refused_before_it_is_expanded(tmp_path):
    path = tmp_path / "bomb.yml"
    path.write_text(BOMB)  # 9^9 strings once expanded: validating them took 66 s, then MemoryError
    assert len(BOMB) < 600
    message = load_error(path)
    assert "aliases" in message and len(message) < 1000


def test_5_alias_bomb_and_self_reference_in_set():
    message = load_error(overrides=["seed=&a [[*a]]"])
    assert "refers to the value that contains it" in message
    levels = ["&l0 [" + ", ".join(["1"] * 9) + "]"]
    levels += [f"&l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 9)]
    message = load_error(overrides=["seed=[" + ", ".join(levels) + "]"])
    assert "aliases" in message and len(message) < 1000


# ---- 6: a tar member declaring a huge size is refused without being read -------------------------
def _rewrite_tgz(path: Path, change) -> None:
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read() if m.isreg() else None) for m in tar]
    with tarfile.open(path, "w:gz") as tar:
        for member, data in members:
            member, data = change(member, data)
            tar.addfile(member, None if data is None else io.BytesIO(data))


def test_6_oversized_archive_member_is_refused_unread(tmp_path, monkeypatch):
    raw = make_sample_raw(tmp_path / "raw", layout="updated")
    big = "car_ims/000001.jpg"

    def enlarge(member, data):
        if member.name == big:
            data = data + b"\0" * 20_000
            member.size = len(data)
        return member, data

    _rewrite_tgz(raw / "car_ims.tgz", enlarge)
    monkeypatch.setattr(prepare_archives, "MAX_MEMBER_BYTES", 15_000)
    read_sizes = []
    real_read = tarfile.ExFileObject.read

    def spying_read(self, *args):
        data = real_read(self, *args)
        read_sizes.append(len(data))
        return data

    monkeypatch.setattr(tarfile.ExFileObject, "read", spying_read)
    report = prepare_dataset(raw, tmp_path / "out", progress=False)
    assert report.refused == [big]
    assert max(read_sizes) <= 15_000  # the large member was never read


# ---- 7: a huge class id does not size anything -------------------------------------------------
def test_7_huge_class_id_is_refused_without_allocating(tmp_path):
    rows = [
        Annotation("a.jpg", 0, (0, 0, 1, 1), "A"),
        Annotation("b.jpg", 10**12 - 1, (0, 0, 1, 1), "B"),
    ]
    write_labels_csv(tmp_path / "train_labels.csv", rows)
    annotations = read_annotations(tmp_path, "train")
    with pytest.raises(UserError, match="largest is 1000000000000"):
        class_names_from([annotations])


# ---- 8: links inside the extracted layout are refused --------------------------------------------
def test_8_symlinks_in_extracted_layout_are_refused(tmp_path):
    raw = make_sample_raw(tmp_path / "raw", layout="extracted")
    outside = tmp_path / "outside.jpg"
    outside.write_bytes((raw / "cars_train" / "00002.jpg").read_bytes())
    secret = tmp_path / "passwd"
    secret.write_text("root:x:0:0\n")
    for name, target in (("00001.jpg", outside), ("00002.jpg", secret)):
        (raw / "cars_train" / name).unlink()
        (raw / "cars_train" / name).symlink_to(target)
    report = prepare_dataset(raw, tmp_path / "out", progress=False)
    assert report.refused == ["cars_train/00001.jpg", "cars_train/00002.jpg"]
    assert not (tmp_path / "out" / "train" / "00001.jpg").exists()
    assert not (tmp_path / "out" / "train" / "00002.jpg").exists()


# ---- 10: malformed input ends in a message, never a traceback --------------------------------------
def _rewrite_annos(raw: Path, field: str, value) -> None:
    mat = scipy.io.loadmat(raw / "cars_annos.mat")
    annotations = mat["annotations"]
    annotations[field][0, 0] = value
    scipy.io.savemat(
        raw / "cars_annos.mat", {k: v for k, v in mat.items() if not k.startswith("__")}
    )


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("class", {"inner": np.array([[1]])}, "expected a number"),  # a struct (10)
        ("bbox_x1", np.array([[1 + 2j]]), "expected a number"),  # a complex number (14)
    ],
)
def test_10_14_mat_with_struct_or_complex_values(tmp_path, field, value, expected):
    raw = make_sample_raw(tmp_path / "raw", layout="updated")
    _rewrite_annos(raw, field, value)
    with pytest.raises(UserError, match=expected):
        prepare_dataset(raw, tmp_path / "out", progress=False)


def test_10_wrong_types_in_prepared_json(tmp_path):
    raw = make_sample_raw(tmp_path / "raw", layout="updated")
    out = tmp_path / "out"
    prepare_dataset(raw, out, progress=False)
    marker = json.loads((out / MARKER_NAME).read_text())
    marker.update(num_train=["many"], missing=7)
    (out / MARKER_NAME).write_text(json.dumps(marker))
    with pytest.raises(UserError, match="--force"):
        prepare_dataset(raw, out, progress=False)


def _checkpoint(path: Path, **changes) -> Path:
    """A checkpoint as train.py writes it (untrained weights), with ``changes`` to its
    ``cars`` section; ``state_dict=...`` replaces the weights."""
    names = sample_class_names(3)
    net = build_network("ghost", 3, 3, width_mult=0.5)
    meta = {
        "architecture": "ghost",
        "num_classes": 3,
        "class_names": names,
        "preprocessing": {
            "image_size": [64, 64],
            "grayscale": False,
            "normalize": True,
            "mean": [0.5, 0.5, 0.5],
            "std": [0.25, 0.25, 0.25],
        },
        "arch_options": {"width_mult": 0.5},
        "loss_function": "CrossEntropyLoss",
        "loss_params": {},
        "run_name": "crafted",
        "format_version": 2,
    }
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    if "state_dict" in changes:
        state = changes.pop("state_dict")
    section = changes.pop("section", None)
    meta.update(changes)
    meta = {k: v for k, v in meta.items() if v is not ...}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"cars": section if section is not None else meta, "state_dict": state, "epoch": 0}, path
    )
    return path


CRAFTED = {
    "empty class_names": dict(class_names=[]),
    "no mean": dict(preprocessing={"image_size": [64, 64], "normalize": True, "std": [1, 1, 1]}),
    "cars is a list": dict(section=[1, 2, 3]),
    "empty state dict": dict(state_dict={}),
    "num_classes not the weights'": dict(num_classes=4, class_names=["a", "b", "c", "d"]),
    "negative width_mult": dict(arch_options={"width_mult": -5}),
    "huge image_size": dict(preprocessing={"image_size": [10**6, 10**6]}),
}


@pytest.mark.parametrize("case", CRAFTED)
def test_10_crafted_checkpoints_are_refused_with_a_message(tmp_path, case):
    path = _checkpoint(tmp_path / "best.ckpt", **CRAFTED[case])
    with pytest.raises(UserError, match="damaged or was not written by this project"):
        load_network(path)


def test_10_crafted_checkpoint_in_predict_evaluate_export(tmp_path, prepared_data):
    path = _checkpoint(tmp_path / "run" / "checkpoints" / "best.ckpt", class_names=[])
    image = next((prepared_data / "test").iterdir())
    for call in (
        lambda: predict_paths(path, [image]),
        lambda: evaluate_checkpoint(path, prepared_data, num_workers=0),
        lambda: export_checkpoint(path, "onnx", tmp_path / "m.onnx"),
    ):
        with pytest.raises(UserError, match="class_names"):
            call()


def test_10_predict_on_an_unreadable_folder(tmp_path, monkeypatch):
    folder = tmp_path / "photos"
    folder.mkdir()
    real_iterdir = Path.iterdir

    def iterdir(self):
        if self == folder:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    files, failures = expand_paths([folder])
    assert files == [] and "cannot be read" in failures[0]["error"]


def test_10_train_with_an_unreadable_train_folder(prepared_data, monkeypatch):
    real_iterdir = Path.iterdir

    def iterdir(self):
        if self.name == "train":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    with pytest.raises(UserError, match="cannot be read"):
        StanfordCarsDataset(prepared_data, "train")


def test_10_evaluate_into_a_read_only_folder(tmp_path, prepared_data, monkeypatch):
    path = _checkpoint(tmp_path / "run" / "checkpoints" / "best.ckpt")

    def refuse(*_args, **_kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(evaluation_module, "write_json_atomic", refuse)
    with pytest.raises(UserError, match="--out"):
        evaluate_checkpoint(path, prepared_data, out_dir=tmp_path / "ro", num_workers=0)


def test_10_format1_run_config_naming_a_loss_without_class_indices(tmp_path, prepared_data, caplog):
    run = tmp_path / "run"
    _checkpoint(run / "checkpoints" / "best.ckpt", loss_function=None)  # format 1: no loss
    (run / "config.yml").write_text(yaml.safe_dump({"loss_function": "MSELoss"}))
    with caplog.at_level(logging.WARNING):
        # A run folder is taken for its best.ckpt; reports go to evaluation/best-test/.
        result = evaluate_checkpoint(run, prepared_data, num_workers=0)
    assert result["loss_function"] == "CrossEntropyLoss" and "MSELoss" in caplog.text
    assert Path(result["out_dir"]) == run / "evaluation" / "best-test"
    assert (run / "evaluation" / "best-test" / "metrics.json").is_file()


def test_10_export_opset_out_of_range(tmp_path, capsys):
    path = _checkpoint(tmp_path / "best.ckpt")
    with pytest.raises(UserError, match="not an ONNX opset"):
        export_checkpoint(path, "onnx", tmp_path / "m.onnx", opset=999)
    captured = capsys.readouterr()
    assert len(captured.out) + len(captured.err) < 1000  # no graph dump
    assert not (tmp_path / "m.onnx").exists()


# ---- 11 and 14: one quoting-aware CSV format ---------------------------------------------------
HOSTILE = [
    "a\rb.jpg",
    "line\nbreak.jpg",
    'quote"d, comma.jpg',
    '=HYPERLINK("http://x").jpg',
    "'already quoted.jpg",
    "  spaces  .jpg",
    "-1.jpg",
    "Ünïcödé.jpg",
]


def test_11_14_labels_csv_round_trip_with_hostile_names(tmp_path):
    rows = [
        Annotation(name, i % 3, (1.0, 2.0, 3.0, 4.0), f"=cmd|' /C calc'!A0 {i % 3}")
        for i, name in enumerate(HOSTILE)
    ]
    write_labels_csv(tmp_path / "train_labels.csv", rows)
    text = (tmp_path / "train_labels.csv").read_text(encoding="utf-8")
    assert "\n=" not in text and ",=" not in text  # no cell a spreadsheet would run
    back = read_annotations(tmp_path, "train")
    assert back == {row.fname: row for row in rows}


def test_14_duplicated_csv_row_is_refused(tmp_path):
    rows = [Annotation("a.jpg", 0, (0, 0, 1, 1), "A"), Annotation("b.jpg", 1, (0, 0, 1, 1), "B")]
    write_labels_csv(tmp_path / "train_labels.csv", rows)
    with (tmp_path / "train_labels.csv").open("a", encoding="utf-8") as handle:
        handle.write('"a.jpg",2,0,0,1,1,"B"\n')
    with pytest.raises(UserError, match="listed twice"):
        read_annotations(tmp_path, "train")


# ---- 12: a linked output folder ------------------------------------------------------------------
def test_12_output_folder_that_is_a_link(tmp_path):
    raw = make_sample_raw(tmp_path / "raw", layout="updated")
    target = tmp_path / "real"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    report = prepare_dataset(raw, link, progress=False)  # was: failed at the final rename
    assert report.num_train > 0 and link.is_symlink()
    assert (target / MARKER_NAME).is_file()
    prepare_dataset(raw, link, force=True, progress=False)  # was: link replaced, .old- left
    assert link.is_symlink() and (target / MARKER_NAME).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "raw", "real"]


# ---- 13: no secret in any message ----------------------------------------------------------------
def test_13_token_not_echoed_by_a_yaml_syntax_error(tmp_path):
    path = tmp_path / "config.yml"
    path.write_text(f'neptune_api_token: "{TOKEN}\nbatch_size: 4\n')
    message = load_error(path)
    assert "not valid YAML" in message and TOKEN not in message
    for override in (f"neptune_api_token=[{TOKEN}", f"neptune_api_token={{{TOKEN}"):
        message = load_error(overrides=[override])
        assert "not valid YAML" in message and TOKEN not in message


def test_13_token_masked_in_other_problems_of_its_line(tmp_path):
    path = tmp_path / "config.yml"
    path.write_text(f"neptune_api_token: {TOKEN}: {TOKEN}\n")
    assert TOKEN not in load_error(path)


# ---- 14: the minor list --------------------------------------------------------------------------
def test_14_long_set_value_is_cut_in_messages():
    message = load_error(overrides=["seed=" + "x" * 120_000])
    assert len(message) < 2000


def test_14_write_failures_name_their_real_cause():
    assert "too long" in write_fix(OSError(errno.ENAMETOOLONG, "File name too long"))
    assert "not writable" in write_fix(PermissionError(errno.EACCES, "Permission denied"))
    assert "disk space" in write_fix(OSError(errno.ENOSPC, "No space left"))


def test_14_unreadable_archive_is_not_called_corrupt(tmp_path, monkeypatch):
    archive = tmp_path / "car_ims.tgz"
    archive.write_bytes(b"")

    def refuse(*_args, **_kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tarfile, "open", refuse)
    with pytest.raises(UserError, match="permission") as info:
        list(prepare_archives.iter_archive(archive, lambda _m: True))
    assert "corrupt" not in str(info.value)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
def test_14_fifo_is_not_reported_missing(tmp_path):
    fifo = tmp_path / "image.jpg"
    os.mkfifo(fifo)
    _, failures = expand_paths([fifo])
    assert failures == [{"path": str(fifo), "error": "not a regular file or folder"}]


def test_14_zero_accuracy_is_shown_as_zero():
    line = run_summary_line(
        {
            "run_name": "ghost_1",
            "epochs_run": 3,
            "best_epoch": 2,
            "min_valid_loss": 1.0999253988265991,
            "max_valid_acc": 0.0,
        }
    )
    assert line.endswith("min valid_loss 1.0999, max valid_acc 0.00%")


# ---- rough edges of a first hour -----------------------------------------------------------------
def test_first_hour_set_typo_names_set_as_source():
    message = load_error(overrides=["num_epoch=3"])
    assert message.startswith("--set has 1 problem(s): unknown key 'num_epoch'")
    assert "?." not in message and "config_template.yml has" not in message


def test_first_hour_template_placeholder_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.yml").write_text(TEMPLATE_PATH.read_text())
    args = prepare_stanford_dataset.parse_args(["-c", "config.yml"])
    with pytest.raises(UserError, match="placeholder"):
        prepare_stanford_dataset.resolve_paths(args)


def test_first_hour_template_names_all_three_layouts():
    text = TEMPLATE_PATH.read_text()
    head = text[: text.index("stanford_raw_data_path:")]
    for name in (
        "car_ims.tgz",
        "cars_train.tgz",
        "cars_test_annos_withlabels.mat",
        "stanford_cars/",
    ):
        assert name in head


def test_first_hour_already_prepared_is_said_once(tmp_path, capsys, caplog):
    raw = make_sample_raw(tmp_path / "raw", layout="updated")
    argv = ["--raw-dir", str(raw), "--out-dir", str(tmp_path / "out"), "--quiet"]
    assert prepare_stanford_dataset.main(argv) == 0
    capsys.readouterr()
    with caplog.at_level(logging.INFO):
        assert prepare_stanford_dataset.main(argv) == 0
    printed = capsys.readouterr()
    said = (printed.out + printed.err + caplog.text).lower()
    assert said.count("already prepared") + said.count("already holds") == 1


def test_first_hour_sample_data_help_has_texts_and_defaults(capsys):
    with pytest.raises(SystemExit):
        sample_data.main(["--help"])
    text = capsys.readouterr().out
    for option in ("--layout", "--classes", "--train-per-class", "--test-per-class", "--seed"):
        block = text[text.index(option, text.index("options:")) :]
        assert "(default:" in block.split("\n  -")[0]


def test_first_hour_run_folder_as_checkpoint(tmp_path):
    run = RunFolder(tmp_path / "ghost_20260101000000")
    _checkpoint(run.best_checkpoint)
    assert RunFolder.checkpoint_of(run.path) == run.best_checkpoint
    assert RunFolder.checkpoint_of(run.checkpoints) == run.best_checkpoint
    assert RunFolder.checkpoint_of(run.best_checkpoint) == run.best_checkpoint
    assert run.evaluation_for(run.last_checkpoint, "train") == run.evaluation / "last-train"
    with pytest.raises(UserError, match="best.ckpt"):
        RunFolder.checkpoint_of(tmp_path)


def test_first_hour_one_path_style(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert shown_path(tmp_path / "output" / "run") == os.path.join("output", "run")
    assert shown_path("output/run") == os.path.join("output", "run")
    assert shown_path(tmp_path.parent) == str(tmp_path.parent)
