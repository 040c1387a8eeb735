"""The run folder: one home for its layout, made once per run, joined by DDP workers."""

from __future__ import annotations

import pytest

from utils.errors import UserError
from workflows.run_folder import RUN_DIR_ENV, RunFolder


def test_layout_has_one_home(tmp_path):
    run = RunFolder(tmp_path / "ghost_20260101000000")
    assert run.name == "ghost_20260101000000"
    assert run.config_yml == run.path / "config.yml"
    assert run.metrics_csv == run.path / "metrics.csv"
    assert run.summary_json == run.path / "summary.json"
    assert run.best_checkpoint == run.path / "checkpoints" / "best.ckpt"
    assert run.last_checkpoint == run.path / "checkpoints" / "last.ckpt"
    assert run.evaluation == run.path / "evaluation"
    assert run.export == run.path / "export"


def test_second_run_in_the_same_second_gets_a_suffix(tmp_path):
    first = RunFolder.create(tmp_path, "ghost", now=0)
    second = RunFolder.create(tmp_path, "ghost", now=0)
    assert second.name == first.name + "_2" and second.path.is_dir()


def test_output_path_that_is_a_file_is_a_user_error(tmp_path):
    blocker = tmp_path / "output"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match="output_path"):
        RunFolder.create(blocker, "ghost")


def test_the_run_of_a_checkpoint(tmp_path):
    run = RunFolder.create(tmp_path, "ghost")
    assert RunFolder.of_checkpoint(run.best_checkpoint).path == run.path.resolve()
    loose = tmp_path / "elsewhere" / "model.ckpt"
    assert RunFolder.of_checkpoint(loose).path == loose.parent.resolve()


def test_ddp_worker_joins_the_launchers_folder(tmp_path, monkeypatch):
    monkeypatch.delenv(RUN_DIR_ENV, raising=False)
    monkeypatch.setenv("LOCAL_RANK", "0")
    launcher, created = RunFolder.create_or_join(tmp_path, "ghost")
    assert created
    monkeypatch.setenv("LOCAL_RANK", "1")  # the same command, started again for rank 1
    worker, created = RunFolder.create_or_join(tmp_path, "ghost")
    assert not created and worker.path == launcher.path
    assert len(list(tmp_path.iterdir())) == 1


def test_config_and_summary_round_trip_and_removal(tmp_path):
    run = RunFolder.create(tmp_path, "ghost")
    assert run.read_config() == {}
    run.write_config({"architecture": "ghost", "neptune_api_token": "***"})
    run.write_summary({"epochs_run": 1})
    assert run.read_config()["architecture"] == "ghost"
    assert run.summary_json.read_text().startswith("{")
    run.config_yml.write_text("a: [unclosed")
    assert run.read_config() == {}  # unreadable: evaluation then needs -d
    run.remove()
    assert not run.path.exists()
