"""A run's start and ends (issue 23: A.4, A.10, C.2): the run folder locked while in use, a
signal during the set-up, the log and summary of a stopped and of a resumed run."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import train
from configuration import TEMPLATE_PATH, load_config
from utils.errors import UserError, run_cli
from workflows.runs import metrics
from workflows.runs.run_folder import RunFolder
from workflows.training import assembly, lifecycle
from workflows.training.interruptions import StoppedBeforeFirstEpoch
from workflows.training.resume import load_resume_config
from workflows.training.run import run_training

ROOT = Path(__file__).resolve().parent.parent
TINY = (
    "image_size=[32,32]",
    "batch_size=4",
    "num_workers=0",
    "accelerator=cpu",
    "seed=7",
    "augment_images=false",
    "log_to_mlflow=false",
)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, prepared_data) -> RunFolder:
    """A finished 1-epoch run; tests resume copies of it."""
    out = tmp_path_factory.mktemp("lifecycle_src")
    config = load_config(
        TEMPLATE_PATH,
        [*TINY, "num_epochs=1", f"output_path={out / 'output'}", f"logging_dir={out / 'logs'}"],
        data_path=str(prepared_data),
    )
    return run_training(config, progress_bar=False).run


def copy_of(run: RunFolder, tmp_path: Path) -> Path:
    copy = tmp_path / run.name
    shutil.copytree(run.path, copy)
    return copy


def epochs_in(run: Path) -> list[int]:
    return [row["epoch"] for row in metrics.read_metric_rows(run / "metrics.csv")]


# ---- A.4: one process at a time in a run folder ---------------------------------------------
def test_a4_a_second_resume_of_a_run_in_use_is_refused_naming_the_process(
    finished_run, tmp_path, monkeypatch
):
    copy = copy_of(finished_run, tmp_path)
    monkeypatch.chdir(tmp_path)
    holder = subprocess.Popen(  # another process training the run: it holds the lock
        [
            sys.executable,
            "-c",
            "import sys, time; sys.path.insert(0, sys.argv[1]); "
            "from workflows.runs.run_folder import RunFolder; "
            "lock = RunFolder(sys.argv[2]).claim(); print('held', flush=True); time.sleep(120)",
            str(ROOT),
            str(copy),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        config, point = load_resume_config(str(copy), None, ["num_epochs=2"], None)
        before = {p.name: p.read_bytes() for p in copy.iterdir() if p.is_file()}
        with pytest.raises(UserError, match=rf"in use by another process \(pid {holder.pid} "):
            run_training(config, progress_bar=False, resume=point)
        after = {p.name: p.read_bytes() for p in copy.iterdir() if p.is_file()}
        assert after == before and epochs_in(copy) == [0]
    finally:
        holder.kill()
        holder.wait(timeout=60)
    # the holder died without letting go (kill -9): its stale lock is taken over
    config, point = load_resume_config(str(copy), None, ["num_epochs=2"], None)
    run_training(config, progress_bar=False, resume=point)
    assert epochs_in(copy) == [0, 1]


# ---- A.10: a signal during the set-up leaves no run folder ---------------------------------
def _signal_in(module, name: str, signum: int, monkeypatch) -> None:
    real = getattr(module, name)

    def send_then_go_on(*args, **kwargs):
        os.kill(os.getpid(), signum)
        time.sleep(0.5)  # the handler runs at the next bytecode: nothing after the kill runs
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, send_then_go_on)


@pytest.mark.parametrize(
    "module, name, signum",
    [
        (lifecycle, "start_trackers", signal.SIGTERM),  # the trackers start
        (assembly, "preflight", signal.SIGINT),  # before the run folder exists
        (assembly, "build_trackers", signal.SIGTERM),  # just after it was made
    ],
    ids=["trackers-start", "preflight", "trackers-built"],
)
def test_a10_a_signal_during_set_up_leaves_no_run_folder_and_says_so(
    fast_config, tmp_path, monkeypatch, capsys, module, name, signum
):
    config = fast_config(*TINY)
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    _signal_in(module, name, signum, monkeypatch)
    with pytest.raises(StoppedBeforeFirstEpoch) as caught:
        run_training(config, progress_bar=False)
    assert caught.value.exit_code == 128 + signum
    output = Path(config.output_path)
    assert not output.is_dir() or not [p for p in output.iterdir() if p.name.startswith("ghost")]
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers


def test_a10_sigterm_while_the_trackers_start_prints_the_usual_message_and_exits_143(
    tmp_path, prepared_data, monkeypatch, capsys
):
    _signal_in(lifecycle, "start_trackers", signal.SIGTERM, monkeypatch)
    argv = ["-c", str(TEMPLATE_PATH), "-d", str(prepared_data), "--no-progress"]
    for item in (*TINY, f"output_path={tmp_path / 'out'}", f"logging_dir={tmp_path / 'logs'}"):
        argv += ["--set", item]
    with pytest.raises(SystemExit) as exited:
        run_cli(lambda: train.main(argv))
    assert exited.value.code == 143
    assert "stopped by SIGTERM before the first epoch finished" in capsys.readouterr().err
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith("ghost")]


# ---- C.2: what a stopped and a resumed run say -------------------------------------------
def test_c2_a_signal_after_an_epoch_does_not_log_that_the_run_finished(
    fast_config, monkeypatch, caplog
):
    original = metrics.MetricsCSV.on_validation_end

    def signal_after_first_epoch(self, trainer, module):
        original(self, trainer, module)
        if len(self.rows) == 1:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(metrics.MetricsCSV, "on_validation_end", signal_after_first_epoch)
    with caplog.at_level(logging.INFO):
        result = run_training(fast_config(*TINY, "num_epochs=3"), progress_bar=False)
    assert result.stopped_by is not None and result.summary["interrupted"] is True
    assert "finished after" not in caplog.text


def test_c2_a_resume_says_where_it_resumes_and_its_duration_adds_up(
    finished_run, tmp_path, monkeypatch, caplog
):
    copy = copy_of(finished_run, tmp_path)
    monkeypatch.chdir(tmp_path)
    first = json.loads((copy / "summary.json").read_text())
    config, point = load_resume_config(str(copy), None, ["num_epochs=2"], None)
    with caplog.at_level(logging.INFO):
        result = run_training(config, progress_bar=False, resume=point)
    assert f"resuming {copy.name} at epoch 1" in caplog.text
    summary = json.loads((copy / "summary.json").read_text())
    assert summary == result.summary
    first_segment, second_segment = summary["segments"]
    assert first_segment == {"first_epoch": 0, "epochs": 1, "duration_s": first["duration_s"]}
    assert second_segment["first_epoch"] == 1 and second_segment["epochs"] == 1
    assert summary["duration_s"] == pytest.approx(
        first["duration_s"] + second_segment["duration_s"], abs=0.1
    )
    assert summary["duration_s"] > first["duration_s"]
