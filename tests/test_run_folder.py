"""The run folder: one home for its layout, made once per run, joined by DDP workers."""

from __future__ import annotations

import json

import pytest

from utils.errors import UserError
from workflows.runs.launch import (
    LAUNCH_WAIT_ENV,
    LAUNCHES_DIR,
    RUN_DIR_ENV,
    RUN_SEED_ENV,
    Launch,
)
from workflows.runs.run_folder import RunFolder


def is_first_process() -> bool:
    return Launch.resolve().first


def external_launch_id() -> str | None:
    return Launch.resolve().launch_id


def with_run_seed(config):
    return config.model_copy(update={"seed": Launch.resolve().seed(config)})


def create_or_join(output_path, architecture):
    return Launch.resolve().run_folder(output_path, architecture)


LAUNCH_VARIABLES = (
    "RANK",
    "LOCAL_RANK",
    "NODE_RANK",
    "WORLD_SIZE",
    "TORCHELASTIC_RUN_ID",
    "SLURM_JOB_ID",
    "SLURM_STEP_ID",
    "SLURM_NTASKS",
    "SLURM_PROCID",
    RUN_DIR_ENV,
    RUN_SEED_ENV,
)


@pytest.fixture
def one_process(monkeypatch):
    """No launcher's variables: a run of one process, whatever the machine's environment."""
    for name in LAUNCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


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


def test_ddp_worker_joins_the_launchers_folder(tmp_path, one_process):
    monkeypatch = one_process
    monkeypatch.setenv("LOCAL_RANK", "0")
    launcher, created = create_or_join(tmp_path, "ghost")
    assert created
    monkeypatch.setenv("LOCAL_RANK", "1")  # the same command, started again for rank 1
    worker, created = create_or_join(tmp_path, "ghost")
    assert not created and worker.path == launcher.path
    assert len(list(tmp_path.iterdir())) == 1


def test_a_worker_process_without_its_launcher_is_told_how_to_start_nodes(tmp_path, one_process):
    one_process.setenv("NODE_RANK", "1")  # a second node started by hand
    with pytest.raises(UserError, match="torchrun or SLURM"):
        create_or_join(tmp_path, "ghost")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "launch",
    [
        {"TORCHELASTIC_RUN_ID": "abc", "WORLD_SIZE": "2"},
        {"SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0", "SLURM_NTASKS": "2"},
    ],
    ids=["torchrun", "slurm"],
)
def test_processes_started_on_their_own_share_one_folder_and_seed(
    tmp_path, one_process, launch, fast_config
):
    monkeypatch = one_process
    for name, value in launch.items():
        monkeypatch.setenv(name, value)
    rank_variable = "RANK" if "WORLD_SIZE" in launch else "SLURM_PROCID"
    config = fast_config()  # seed: null
    seeds, folders = [], []
    for rank in ("0", "1"):
        monkeypatch.setenv(rank_variable, rank)
        assert is_first_process() is (rank == "0")
        assert external_launch_id() is not None
        seeds.append(with_run_seed(config).seed)
        monkeypatch.delenv(RUN_SEED_ENV, raising=False)  # not inherited: its own process
        folders.append(create_or_join(tmp_path, "ghost"))
    (first, created_first), (second, created_second) = folders
    assert created_first and not created_second and second.path == first.path.resolve()
    assert seeds[0] == seeds[1]
    assert [p.name for p in tmp_path.iterdir() if p.name != LAUNCHES_DIR] == [first.name]
    job_variable = "TORCHELASTIC_RUN_ID" if "TORCHELASTIC_RUN_ID" in launch else "SLURM_JOB_ID"
    monkeypatch.setenv(job_variable, "another")
    assert with_run_seed(config).seed != seeds[0]  # another launch, another seed


def test_a_process_waiting_for_a_first_one_that_never_comes_is_a_user_error(tmp_path, one_process):
    for name, value in {"TORCHELASTIC_RUN_ID": "lonely", "WORLD_SIZE": "2", "RANK": "1"}.items():
        one_process.setenv(name, value)
    one_process.setenv(LAUNCH_WAIT_ENV, "0.5")
    with pytest.raises(UserError, match="rank 0"):
        create_or_join(tmp_path, "ghost")


def test_a_pointer_left_by_an_earlier_launch_with_the_same_id_is_not_joined(tmp_path, one_process):
    for name, value in {"TORCHELASTIC_RUN_ID": "reused", "WORLD_SIZE": "2", "RANK": "0"}.items():
        one_process.setenv(name, value)
    earlier, _ = create_or_join(tmp_path, "ghost")
    pointer = tmp_path / LAUNCHES_DIR / "torchrun-reused.json"
    named = json.loads(pointer.read_text())
    pointer.write_text(json.dumps({**named, "created": named["created"] - 3600}))  # an hour ago
    one_process.setenv("RANK", "1")
    one_process.setenv(LAUNCH_WAIT_ENV, "0.5")
    with pytest.raises(UserError, match="waited"):
        create_or_join(tmp_path, "ghost")
    assert earlier.path.is_dir()


def test_one_process_is_the_first_and_has_no_launch(one_process):
    assert is_first_process() and external_launch_id() is None
    one_process.setenv("SLURM_JOB_ID", "7")
    one_process.setenv("SLURM_NTASKS", "1")  # an interactive SLURM shell: still one process
    assert is_first_process() and external_launch_id() is None


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
