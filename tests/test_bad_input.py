"""The bad-input catalogue (README "Troubleshooting"): each input ends with exit code 2 and one
message naming the problem and the fix, without a traceback and without leaving a run folder
or any other file behind; no input runs code it carries."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import compare_experiments
import demo
import evaluate
import export_model
import predict
import prepare_stanford_dataset
import train
from configuration import TEMPLATE_PATH, load_config
from models.checkpoint import read_checkpoint
from utils.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
MARKER = "pwned_marker"
TINY = ["image_size=[48,48]", "batch_size=4", "num_workers=0", "accelerator=cpu", "num_epochs=1"]


# Each case: (id, YAML text replacing the config or None for the template, --set items,
# a change to a copy of the prepared data or None, the words the message must hold).
def _drop(name: str) -> Callable[[Path], None]:
    return lambda data: (data / name).unlink()


def _edit_csv(old: str, new: str, count: int = 1) -> Callable[[Path], None]:
    def edit(data: Path) -> None:
        path = data / "train_labels.csv"
        text = path.read_text()
        assert old in text, (old, text[:300])
        path.write_text(text.replace(old, new, count))

    return edit


def _duplicate_first_row(data: Path) -> None:
    path = data / "train_labels.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines, lines[1]]) + "\n")


def _missing_image(data: Path) -> None:
    next((data / "train").iterdir()).unlink()


def _fifty_mb_config(config: Path) -> None:
    """The template followed by 50 MB (a sparse file: no disk used, nothing to parse)."""
    config.write_text((ROOT / "config_template.yml").read_text())
    with config.open("r+b") as handle:
        handle.truncate(50_000_000)


def _first_class(data: Path) -> str:
    return (data / "train_labels.csv").read_text().splitlines()[1].split(",")[1]


CONFIG_CASES = [
    ("malformed-yaml", "batch_size: [1, 2\nnum_epochs: 3\n", [], "line"),
    (
        "alias-bomb",
        "a: &a [1,1,1,1,1,1,1,1,1]\n"
        + "".join(
            f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")
        )
        + "seed: *i\n",
        [],
        "aliases",
    ),
    ("config-50-mb", _fifty_mb_config, [], "50.0 MB; a config is a few KB"),
    ("not-a-mapping", "- batch_size\n- 4\n", [], "mapping"),
    ("duplicate-key", "batch_size: 4\nnum_epochs: 3\nbatch_size: 999\n", [], "given twice"),
    ("tab-indent", "optimizer_params:\n\tlr: 0.1\n", [], "not tabs"),
    ("python-tag", f"seed: !!python/object/apply:os.system ['touch {MARKER}']\n", [], "YAML"),
    ("unknown-key", None, ["num_epoch=3"], "num_epochs"),
    ("wrong-type", None, ["batch_size=many"], "batch_size"),
    ("zero-batch", None, ["batch_size=0"], "batch_size"),
    ("negative-epochs", None, ["num_epochs=-1"], "num_epochs"),
    ("zero-image-size", None, ["image_size=[0,48]"], "image_size"),
    ("image-size-three", None, ["image_size=[48,48,48]"], "image_size"),
    ("mean-wrong-length", None, ["normalization_params_rgb={mean: [0.5], std: [0.2]}"], "mean"),
    ("zero-std", None, ["normalization_params_rgb={mean: [0.5,0.5,0.5], std: [0.2,0,0.2]}"], "std"),
    ("unknown-transform", None, ["image_augmentations={RandomFlipp: {}}"], "RandomFlip"),
    ("transform-lambda", None, ["image_augmentations={Lambda: {lambd: 1}}"], "Lambda"),
    ("transform-compose", None, ["image_augmentations={Compose: {transforms: []}}"], "Compose"),
    ("transform-dunder", None, ["image_augmentations={__class__: {}}"], "__class__"),
    ("unknown-optimizer", None, ["optimizer=Adamm"], "Adam"),
    ("optimizer-bad-param", None, ["optimizer_params={lrr: 0.1}"], "lrr"),
    ("unknown-scheduler", None, ["lr_scheduler=StepLRR"], "StepLR"),
    (
        "scheduler-foreign-param",
        None,
        ["lr_scheduler=StepLR", "lr_scheduler_params={step_size: 2, milestones: [1]}"],
        "milestones",
    ),
    ("unknown-loss", None, ["loss_function=CrossEntropy"], "CrossEntropyLoss"),
    ("unknown-architecture", None, ["architecture=ghostnet"], "ghost"),
    (
        "lr-lambda-import",
        None,
        [
            "lr_scheduler=LambdaLR",
            f"lr_scheduler_params={{lr_lambda: \"lambda epoch: __import__('os').system('touch {MARKER}')\"}}",
        ],
        "lr_lambda",
    ),
    (
        "lr-lambda-attribute",
        None,
        [
            "lr_scheduler=LambdaLR",
            "lr_scheduler_params={lr_lambda: 'lambda epoch: epoch.__class__'}",
        ],
        "lr_lambda",
    ),
    (
        "lr-lambda-comprehension",
        None,
        [
            "lr_scheduler=LambdaLR",
            "lr_scheduler_params={lr_lambda: 'lambda epoch: [x for x in (1,)][0]'}",
        ],
        "lr_lambda",
    ),
    (
        "lr-lambda-huge-power",
        None,
        ["lr_scheduler=LambdaLR", "lr_scheduler_params={lr_lambda: 'lambda epoch: 9**9**9'}"],
        "lr_lambda",
    ),
    (
        "lr-lambda-other-name",
        None,
        ["lr_scheduler=LambdaLR", "lr_scheduler_params={lr_lambda: 'lambda epoch: open'}"],
        "lr_lambda",
    ),
    (
        "lr-lambda-zero-division-at-epoch-67",
        None,
        [
            "num_epochs=129",
            "lr_scheduler=LambdaLR",
            "lr_scheduler_params={lr_lambda: 'lambda e: 1/(67-e)'}",
        ],
        "LambdaLR fails after epoch 66",
    ),
    (
        "lr-lambda-negative-later",
        None,
        [
            "num_epochs=20",
            "lr_scheduler=LambdaLR",
            "lr_scheduler_params={lr_lambda: 'lambda e: 1-e/10'}",
        ],
        "at epoch 11 is -0.1",
    ),
    ("milestones-not-a-list", None, ["lr_scheduler_params.milestones=abc"], "list of epochs"),
    ("set-without-equals", None, ["batch_size"], "KEY=VALUE"),
    ("set-through-a-number", None, ["batch_size.inner=3"], "batch_size"),
    ("output-path-is-a-file", None, ["output_path=a_file"], "output_path"),
    ("batch-size-one", None, ["batch_size=1"], "batch_size"),
]

DATA_CASES = [
    ("data-path-missing", lambda data: shutil.rmtree(data), "not found"),
    ("labels-csv-missing", _drop("train_labels.csv"), "train_labels.csv"),
    ("csv-missing-column", _edit_csv("bbox_x1", "bbox_xx"), "bbox_x1"),
    ("csv-class-not-integer", lambda d: _edit_csv(f",{_first_class(d)},", ",three,")(d), "integer"),
    ("csv-class-zero", lambda d: _edit_csv(f",{_first_class(d)},", ",0,")(d), "from 1"),
    ("csv-duplicate-image", _duplicate_first_row, "twice"),
    ("csv-names-missing-image", _missing_image, "prepare"),
]


def _check_clean_failure(code, err, fragment, tmp_path):
    assert code == 2, err
    assert err.startswith("error: ") and "Traceback" not in err, err
    assert "\n\n" not in err.strip(), err  # one paragraph
    assert fragment.lower() in err.lower(), err
    output = tmp_path / "output"
    assert not output.exists() or not any(output.iterdir()), list(output.iterdir())
    assert not list(tmp_path.rglob(MARKER)) and not (Path.cwd() / MARKER).exists()


@pytest.mark.parametrize(
    "text, overrides, fragment", [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES]
)
def test_bad_config_input(
    tmp_path, prepared_data, monkeypatch, run_script, text, overrides, fragment
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("not a folder")
    config = tmp_path / "config.yml"
    if callable(text):
        text(config)
    else:
        config.write_text(text if text is not None else (ROOT / "config_template.yml").read_text())
    argv = ["-c", str(config), "-d", str(prepared_data), "--no-progress"]
    for item in [*TINY, f"output_path={tmp_path / 'output'}", *overrides]:
        argv += ["--set", item]
    code, _, err = run_script(train, argv)
    _check_clean_failure(code, err, fragment, tmp_path)


@pytest.mark.parametrize(
    "change, fragment", [c[1:] for c in DATA_CASES], ids=[c[0] for c in DATA_CASES]
)
def test_bad_prepared_data(tmp_path, prepared_data, monkeypatch, run_script, change, fragment):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    shutil.copytree(prepared_data, data)
    change(data)
    config = tmp_path / "config.yml"
    config.write_text((ROOT / "config_template.yml").read_text())
    argv = ["-c", str(config), "-d", str(data), "--no-progress"]
    for item in [*TINY, f"output_path={tmp_path / 'output'}"]:
        argv += ["--set", item]
    code, _, err = run_script(train, argv)
    _check_clean_failure(code, err, fragment, tmp_path)


FOREIGN = {
    "not-a-checkpoint": b"hello, not a checkpoint",
    "truncated": b"PK\x03\x04\x14\x00\x00\x00",
}


@pytest.mark.parametrize("content", FOREIGN.values(), ids=FOREIGN.keys())
@pytest.mark.parametrize(
    "module, argv",
    [
        (evaluate, ["--checkpoint", "{ckpt}"]),
        (predict, ["--checkpoint", "{ckpt}", "{images}"]),
        (export_model, ["--checkpoint", "{ckpt}"]),
        (train, ["--resume", "{ckpt}"]),
    ],
    ids=["evaluate", "predict", "export", "resume"],
)
def test_a_checkpoint_that_is_not_ours(tmp_path, monkeypatch, run_script, module, argv, content):
    monkeypatch.chdir(tmp_path)
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(content)
    images = tmp_path / "images"
    images.mkdir()
    argv = [a.format(ckpt=ckpt, images=images) for a in argv]
    code, _, err = run_script(module, argv)
    _check_clean_failure(code, err, "checkpoint", tmp_path)


@pytest.mark.parametrize(
    "module, argv",
    [
        (train, ["--init-from="]),
        (train, ["-c", ""]),
        (evaluate, ["--checkpoint="]),
        (predict, ["--checkpoint", "x.ckpt", ""]),
        (export_model, ["--checkpoint", "x.ckpt", "--output", ""]),
        (prepare_stanford_dataset, ["--raw-dir", "", "--out-dir", "out"]),
        (compare_experiments, ["--out", ""]),
        (demo, ["--dir", " "]),
    ],
)
def test_an_empty_path_is_refused_not_taken_for_the_current_folder(run_script, module, argv):
    code, _, err = run_script(module, argv)
    assert code == 2 and "expected a path, got an empty string" in err


def test_a_cut_short_or_unreadable_checkpoint_says_which(tmp_path, monkeypatch):
    fixture = next((ROOT / "tests" / "data").rglob("*.ckpt"))
    cut = tmp_path / "cut.ckpt"
    data = fixture.read_bytes()
    for length in (100, len(data) // 2):
        cut.write_bytes(data[:length])
        with pytest.raises(UserError, match=r"Error: incomplete: cut short when written"):
            read_checkpoint(cut)

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(torch, "load", denied)
    with pytest.raises(UserError, match="cannot be read: permission denied. Give your user"):
        read_checkpoint(fixture)


def test_predict_on_a_folder_without_images(tmp_path, monkeypatch, run_script, prepared_data):
    """Needs a real checkpoint: trains nothing, takes the one the checkpoint test fixtures use."""
    monkeypatch.chdir(tmp_path)
    fixture = next((ROOT / "tests" / "data").rglob("*.ckpt"), None)
    if fixture is None:
        pytest.skip("no checkpoint fixture in tests/data")
    (tmp_path / "empty").mkdir()
    code, _, err = run_script(predict, ["--checkpoint", str(fixture), str(tmp_path / "empty")])
    assert code == 2 and "no images" in err and "Traceback" not in err  # not one image predicted
    assert "could not be predicted. Give image files" in err


def test_the_catalogue_is_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    assert "## Troubleshooting" in readme and "Resuming" in readme
    for words in ("not valid YAML", "is not KEY=VALUE", "lr_lambda", "--resume", "not a finite"):
        assert words in readme, words


# Rows of the catalogue that a run finds when it starts, not the config loader.
FOUND_AT_START = ("key 'output_path'", "key 'batch_size': ...")


def _catalogue_messages() -> list[str]:
    """The first quoted message of each row of the README's Troubleshooting table."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Troubleshooting", 1)[1].split("\n## ", 1)[0]
    rows = [line.split(" | ")[0] for line in section.splitlines() if line.startswith("| `")]
    return [re.findall(r"`([^`]+)`", row)[0] for row in rows]


def test_the_catalogue_quotes_what_the_config_loader_says(tmp_path, monkeypatch):
    """Each row about a config file or key is how a message of one of these cases begins, its
    '...', N, M and 'x' standing for what differs."""
    monkeypatch.chdir(tmp_path)
    said = []
    for _, text, overrides, _ in CONFIG_CASES:
        config = tmp_path / "config.yml"
        if callable(text):
            text(config)
        else:
            config.write_text(text if text is not None else TEMPLATE_PATH.read_text())
        try:
            load_config(config, [*TINY, *overrides])
        except UserError as err:
            said.append(str(err))
    about_config = ("config file", "the YAML", "unknown key", "key '", "--set")
    rows = [
        row
        for row in _catalogue_messages()
        if row.startswith(about_config) and not row.startswith(FOUND_AT_START)
    ]
    assert len(rows) >= 10
    for row in rows:
        parts = re.split(r"\.\.\.|\bN\b|\bM\b|'x'", row)
        pattern = re.compile(".*?".join(re.escape(part) for part in parts))
        assert any(pattern.search(message) for message in said), row
