"""Shared fixtures: miniature Stanford Cars data built in the real formats, never downloaded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from configuration import TEMPLATE_PATH, load_config
from datasets.prepare import prepare_dataset
from datasets.sample_data import make_sample_raw

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
