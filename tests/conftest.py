"""Shared fixtures: miniature Stanford Cars data built in the real formats, never downloaded."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple

import pytest
import torch

from configuration import TEMPLATE_PATH, load_config
from datasets.prepare import prepare_dataset
from datasets.sample_data import make_sample_raw
from utils.errors import run_cli

NUM_CLASSES = 3


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """One intra-op thread for the whole suite: GhostNet's many small ops gain little from a
    second thread, and on a busy 2-core machine two threads spin against each other and run
    several times slower. Subprocesses (the CLI tests) keep torch's default."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def prepared_data(tmp_path_factory) -> Path:
    """A prepared dataset (train/, test/, *_labels.csv) of 3 classes; treat as read-only."""
    root = tmp_path_factory.mktemp("stanford")
    raw = make_sample_raw(
        root / "raw", layout="updated", num_classes=NUM_CLASSES, train_per_class=6, test_per_class=3
    )
    out = root / "prepared"
    prepare_dataset(raw, out, progress=False)
    return out


@pytest.fixture
def fast_config(tmp_path, prepared_data):
    """A config that trains GhostNet for 2 epochs on tiny images in a few seconds."""

    def make(*overrides: str, data_path=None):
        return load_config(
            TEMPLATE_PATH,
            [
                "num_epochs=2",
                "image_size=[64,64]",
                "batch_size=4",
                "num_workers=0",
                "accelerator=cpu",
                f"output_path={tmp_path / 'output'}",
                f"logging_dir={tmp_path / 'logs'}",
                "log_to_mlflow=false",  # trackers are tested in test_tracking.py
                *overrides,
            ],
            data_path=str(data_path or prepared_data),
        )

    return make


class ScriptResult(NamedTuple):
    code: int
    out: str
    err: str


@pytest.fixture
def run_script(capsys, monkeypatch):
    """Run a top-level script's ``main(argv)`` in this process as its command line does
    (``run_cli``: a UserError is one line on stderr and exit code 2), from ``cwd`` when given:
    the exit code, stdout and stderr. A fresh ``python script.py`` would pay seconds of imports
    to check the same; subprocesses are kept for what needs a process (signals, DDP)."""

    def run(module, argv: list[str], cwd: Path | None = None) -> ScriptResult:
        if cwd is not None:
            monkeypatch.chdir(cwd)
        capsys.readouterr()  # what came before is not this script's
        # A fresh interpreter's root logger has no handlers (pytest's are put back after), so
        # the script sets up its own console and log file as on the command line.
        root = logging.getLogger()
        handlers, level = root.handlers[:], root.level
        root.handlers.clear()
        try:
            with pytest.raises(SystemExit) as caught:
                run_cli(lambda: module.main(argv))
        finally:
            for handler in root.handlers:
                handler.close()
            root.handlers[:] = handlers
            root.setLevel(level)
        captured = capsys.readouterr()
        return ScriptResult(caught.value.code, captured.out, captured.err)

    return run
