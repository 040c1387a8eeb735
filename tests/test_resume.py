"""Resuming a stopped run, interruptions by signal, atomic checkpoints, and failures after the
start-up checks (non-finite loss, full disk, settings that fail at a later epoch)."""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

import train
from configuration import TEMPLATE_PATH, load_config
from models.checkpoint import read_checkpoint
from models.optimization import (
    build_optimizer,
    build_scheduler,
    changed_settings,
    group_settings,
    resume_with,
)
from utils.errors import UserError
from workflows.runs import metrics as callbacks
from workflows.runs.run_folder import RunFolder
from workflows.training import resume as resume_module
from workflows.training.checkpoint_io import AtomicCheckpointIO, leftover_partials
from workflows.training.resume import (
    ResumePoint,
    _check_early_stop,
    load_resume_config,
    resolve_resume,
    resume_point,
)
from workflows.training.run import run_training

ROOT = Path(__file__).resolve().parent.parent
TINY = (
    "image_size=[48,48]",
    "batch_size=4",
    "num_workers=0",
    "accelerator=cpu",
    "seed=7",
    "augment_images=false",
    "log_to_mlflow=false",  # the trackers have their own tests
)


def epochs_in(metrics_csv: Path) -> list[int]:
    with metrics_csv.open(newline="") as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


def only_run(output: Path) -> RunFolder:
    runs = [p for p in output.glob("ghost_*") if p.is_dir()]
    assert len(runs) == 1, runs
    return RunFolder(runs[0])


@pytest.fixture(scope="module")
def one_epoch_run(tmp_path_factory, prepared_data):
    """A finished 1-epoch run (read-only for the tests that use it)."""
    out = tmp_path_factory.mktemp("resume_src")
    config = load_config(
        TEMPLATE_PATH,
        [*TINY, "num_epochs=1", f"output_path={out / 'output'}", f"logging_dir={out / 'logs'}"],
        data_path=str(prepared_data),
    )
    return run_training(config, progress_bar=False).run


# ---- finding what to resume --------------------------------------------------------------------
def test_resume_spec_resolves_a_folder_a_checkpoint_and_last(one_epoch_run, tmp_path):
    output = one_epoch_run.path.parent
    run, ckpt = resolve_resume("last", output)
    assert run.path == one_epoch_run.path and ckpt == one_epoch_run.last_checkpoint
    run, ckpt = resolve_resume(one_epoch_run.path, output)
    assert ckpt == one_epoch_run.last_checkpoint
    run, ckpt = resolve_resume(one_epoch_run.best_checkpoint, output)
    assert run.path == one_epoch_run.path and ckpt == one_epoch_run.best_checkpoint
    point = resume_point(one_epoch_run.path, output)
    assert point.epoch == 0 and point.next_epoch == 1
    for spec, fragment in (("last", "no run"), (tmp_path / "nope", "does not exist")):
        with pytest.raises(UserError, match=fragment):
            resolve_resume(spec, tmp_path)
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(UserError, match="no checkpoints/last.ckpt"):
        resolve_resume(tmp_path / "empty_run", tmp_path)
    foreign = tmp_path / "foreign.ckpt"
    foreign.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="could not be read"):
        resume_point(foreign, tmp_path)


def test_resume_uses_the_runs_own_config_without_its_secrets(one_epoch_run, monkeypatch):
    monkeypatch.chdir(one_epoch_run.path)  # no config.yml of the user's here
    config, point = load_resume_config(str(one_epoch_run.path), None, ["num_epochs=3"], None)
    assert point.run.path == one_epoch_run.path
    assert config.num_epochs == 3 and config.image_size == [48, 48]
    assert config.neptune_api_token is None


@pytest.mark.parametrize(
    "override, key",
    [
        ("image_size=[64,64]", "image_size"),
        ("architecture=mob_v2", "architecture"),
        ("convert_to_grayscale=true", "convert_to_grayscale"),
        ("optimizer=SGD", "optimizer"),
        ("width_mult=0.5", "width_mult"),
    ],
)
def test_resume_refuses_a_change_of_model_or_data_naming_the_key(
    one_epoch_run, override, key, monkeypatch
):
    monkeypatch.chdir(one_epoch_run.path)
    config, point = load_resume_config(
        str(one_epoch_run.path), None, ["num_epochs=3", override], None
    )
    before = sorted(p.name for p in one_epoch_run.path.rglob("*"))
    with pytest.raises(UserError, match=f"changes .*{key}"):
        run_training(config, progress_bar=False, resume=point)
    assert sorted(p.name for p in one_epoch_run.path.rglob("*")) == before


def test_resume_with_no_epoch_left_says_how_to_train_longer(one_epoch_run, monkeypatch):
    monkeypatch.chdir(one_epoch_run.path)
    config, point = load_resume_config(str(one_epoch_run.path), None, [], None)
    with pytest.raises(UserError, match="num_epochs=11"):
        run_training(config, progress_bar=False, resume=point)


# ---- resuming with other learning-rate settings ------------------------------------------------
def _adamw_multistep(optimizer_params, scheduler_params):
    weight = nn.Parameter(torch.ones(2))
    weight.grad = torch.full((2,), 0.5)
    optimizer = build_optimizer([weight], "AdamW", optimizer_params)
    return optimizer, build_scheduler(optimizer, "MultiStepLR", scheduler_params)


def test_new_learning_rate_settings_rebuild_the_schedule_at_the_resumed_epoch():
    """timm's way: the scheduler is built from the current arguments and stepped to the resumed
    epoch, as if the run had had it from its start; the optimizer keeps its moments."""
    old = ({"lr": 0.001, "weight_decay": 0.6}, {"gamma": 0.1, "milestones": [2, 4]})
    new = ({"lr": 0.002, "weight_decay": 0.1}, {"gamma": 0.5, "milestones": [2, 4]})
    optimizer, scheduler = _adamw_multistep(*old)
    for _ in range(3):  # past the first milestone: lr 0.001 -> 0.0001
        optimizer.step()
        scheduler.step()
    optimizer_state = optimizer.state_dict()
    changed = changed_settings(old[0], new[0]) + changed_settings(old[1], new[1])
    assert changed == ["lr", "weight_decay", "gamma"]
    resumed, _ = _adamw_multistep(*old)  # the checkpoint's optimizer, restored
    resumed.load_state_dict(optimizer_state)
    settings = group_settings(_adamw_multistep(*new)[0])  # the config's, built fresh
    resumed_scheduler = resume_with(resumed, settings, "MultiStepLR", new[1], epochs=3)
    group = resumed.param_groups[0]
    assert group["lr"] == pytest.approx(0.001) and group["weight_decay"] == 0.1  # 0.002 * 0.5
    assert resumed_scheduler.base_lrs == [pytest.approx(0.002)]
    assert resumed_scheduler.last_epoch == 3
    assert float(resumed.state_dict()["state"][0]["step"]) == 3  # the moments go on too
    resumed.step()
    resumed_scheduler.step()  # the next milestone applies the new gamma
    assert group["lr"] == pytest.approx(0.0005)


def test_unchanged_settings_leave_the_saved_state_alone(one_epoch_run, tmp_path, monkeypatch):
    params = ({"lr": 0.001, "weight_decay": 0.6}, {"gamma": 0.1, "milestones": [1]})
    assert changed_settings(params[0], dict(params[0])) == []
    assert changed_settings(params[1], dict(params[1])) == []
    # ... so a resume with the run's own settings takes the checkpoint's state as it is
    copy = tmp_path / one_epoch_run.path.name
    shutil.copytree(one_epoch_run.path, copy)
    monkeypatch.chdir(copy)
    saved = read_checkpoint(copy / "checkpoints" / "last.ckpt")
    config, point = load_resume_config(str(copy), None, ["num_epochs=2"], None)
    calls = []
    monkeypatch.setattr(resume_module, "resume_with", lambda *args: calls.append(args))
    run_training(config, progress_bar=False, resume=point)
    assert calls == []
    after = read_checkpoint(copy / "checkpoints" / "last.ckpt")
    assert after["lr_schedulers"][0]["base_lrs"] == saved["lr_schedulers"][0]["base_lrs"]
    assert after["lr_schedulers"][0]["last_epoch"] == saved["lr_schedulers"][0]["last_epoch"] + 1


def test_a_resume_trains_on_at_the_new_learning_rate(one_epoch_run, tmp_path, monkeypatch):
    copy = tmp_path / one_epoch_run.path.name
    shutil.copytree(one_epoch_run.path, copy)
    monkeypatch.chdir(copy)
    config, point = load_resume_config(
        str(copy), None, ["num_epochs=2", "optimizer_params.lr=0.0025"], None
    )
    run_training(config, progress_bar=False, resume=point)
    rows = list(csv.DictReader((copy / "metrics.csv").open(newline="")))
    assert [float(row["lr"]) for row in rows] == [0.001, 0.0025]
    state = read_checkpoint(copy / "checkpoints" / "last.ckpt")["optimizer_states"][0]
    assert state["param_groups"][0]["lr"] == pytest.approx(0.0025)
    assert state["param_groups"][0]["weight_decay"] == 0.6  # the dotted key kept the others


# ---- atomic checkpoints ------------------------------------------------------------------------
def test_a_failed_checkpoint_write_leaves_the_previous_one_whole(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"epoch": 1, "w": torch.ones(1000)}, target)

    def half_then_die(obj, handle, *args, **kwargs):
        handle.write(b"\x80\x02partial")
        raise KeyboardInterrupt  # a signal in the middle of the write

    monkeypatch.setattr(torch, "save", half_then_die)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"epoch": 2, "w": torch.zeros(1000)}, target)
    monkeypatch.undo()
    assert torch.load(target, weights_only=True)["epoch"] == 1
    assert leftover_partials(tmp_path) == []


def test_kill_9_during_a_checkpoint_write_keeps_the_previous_checkpoint(tmp_path):
    """A process killed with SIGKILL half-way through writing: no cleanup code runs at all."""
    script = f"""
import os, signal, sys, torch
sys.path.insert(0, {str(ROOT)!r})
from workflows.training.checkpoint_io import AtomicCheckpointIO
io = AtomicCheckpointIO()
io.save_checkpoint({{"epoch": 1, "w": torch.ones(100)}}, {str(tmp_path / "last.ckpt")!r})
def die(obj, handle, *a, **k):
    handle.write(b"half a checkpoint"); handle.flush()
    os.kill(os.getpid(), signal.SIGKILL)
torch.save = die
io.save_checkpoint({{"epoch": 2, "w": torch.zeros(100)}}, {str(tmp_path / "last.ckpt")!r})
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["epoch"] == 1
    assert len(leftover_partials(tmp_path)) == 1  # ignored, and removed by the next resume


# ---- signals -----------------------------------------------------------------------------------
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_after_an_epoch_keeps_it_and_marks_the_run_interrupted(
    fast_config, monkeypatch, signum
):
    original = callbacks.MetricsCSV.on_validation_end

    def signal_after_first_epoch(self, trainer, module):
        original(self, trainer, module)
        if len(self.rows) == 1:
            os.kill(os.getpid(), signum)

    monkeypatch.setattr(callbacks.MetricsCSV, "on_validation_end", signal_after_first_epoch)
    result = run_training(fast_config(*TINY, "num_epochs=5"), progress_bar=False)
    assert result.stopped_by is not None and result.stopped_by.exit_code == 128 + signum
    summary = json.loads(result.run.summary_json.read_text())
    assert summary["interrupted"] is True and summary["epochs_run"] == 1
    assert epochs_in(result.metrics_csv) == [0]
    assert read_checkpoint(result.last_checkpoint)["epoch"] == 0
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored


def test_a_signal_before_the_first_epoch_leaves_nothing(fast_config, monkeypatch, tmp_path):
    def interrupt(self, trainer, module, outputs, batch, idx):
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(callbacks.MetricsCSV, "on_train_batch_end", interrupt, raising=False)
    with pytest.raises(UserError, match="before the first epoch") as caught:
        run_training(fast_config(*TINY), progress_bar=False)
    assert caught.value.exit_code == 128 + signal.SIGTERM
    assert not list((tmp_path / "output").glob("*/"))


# ---- failures after the start-up checks --------------------------------------------------------
def test_non_finite_loss_stops_naming_the_epoch_and_keeps_the_last_good_checkpoint(fast_config):
    config = fast_config(
        *TINY,
        "num_epochs=3",
        "lr_scheduler=LambdaLR",
        "lr_scheduler_params={lr_lambda: 'lambda epoch: 1 + 1e30 * min(epoch, 1)'}",
    )
    with pytest.raises(UserError, match=r"not a finite number.*epoch 1.*learning rate") as caught:
        run_training(config, progress_bar=False)
    run = only_run(Path(config.output_path))
    assert f"--resume {run.path}" in str(caught.value)
    assert epochs_in(run.metrics_csv) == [0]
    last = read_checkpoint(run.last_checkpoint)
    assert last["epoch"] == 0
    assert all(
        torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point()
    )


def test_full_disk_while_writing_a_checkpoint_is_a_message_and_keeps_the_old_one(
    fast_config, monkeypatch
):
    real_save = AtomicCheckpointIO.save_checkpoint

    def full_at_epoch_1(self, checkpoint, path, storage_options=None):
        if checkpoint["epoch"] >= 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(self, checkpoint, path, storage_options)

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", full_at_epoch_1)
    config = fast_config(*TINY, "num_epochs=3")
    with pytest.raises(UserError, match="disk is full.*epoch 1.*intact"):
        run_training(config, progress_bar=False)
    run = only_run(Path(config.output_path))
    assert read_checkpoint(run.last_checkpoint)["epoch"] == 0


@pytest.mark.parametrize(
    "overrides, key",
    [
        (  # issue 13, defect 9: fails when the scheduler reaches epoch 1, before epoch 0 ends
            (
                "lr_scheduler=LambdaLR",
                "lr_scheduler_params={lr_lambda: 'lambda e: 1/(1-e)'}",
            ),
            "lr_scheduler_params.lr_lambda",
        ),
        (  # fails when the scheduler reaches epoch 2: epoch 0 is kept
            ("lr_scheduler=LambdaLR", "lr_scheduler_params={lr_lambda: 'lambda e: 1/(2-e)'}"),
            "lr_scheduler_params.lr_lambda",
        ),
        (
            (
                "lr_scheduler=LambdaLR",
                "lr_scheduler_params={lr_lambda: 'lambda epoch: 1e-9 * 9**9**9**epoch'}",
            ),
            "lr_scheduler_params.lr_lambda",
        ),
        (
            ("lr_scheduler=OneCycleLR", "lr_scheduler_params={max_lr: 0.01, total_steps: 2}"),
            "lr_scheduler_params",
        ),
    ],
)
def test_a_setting_that_fails_at_a_later_epoch_names_key_and_epoch(
    fast_config, overrides, key, monkeypatch
):
    # The config check steps the schedule through every epoch, so this fails at load time...
    with pytest.raises(UserError, match=rf"key '{key}': \w+ fails after epoch \d.*num_epochs 4"):
        fast_config(*TINY, "num_epochs=4", *overrides)


@pytest.mark.parametrize(
    "overrides, key",
    [
        (
            ("lr_scheduler=LambdaLR", "lr_scheduler_params={lr_lambda: 'lambda e: 0.9**e'}"),
            "lr_scheduler_params.lr_lambda",
        ),
        (("lr_scheduler=StepLR", "lr_scheduler_params={step_size: 1}"), "lr_scheduler"),
    ],
)
def test_a_scheduler_that_fails_during_the_run_names_key_and_epoch(
    fast_config, overrides, key, monkeypatch
):
    """... and a scheduler that fails during the run anyway (made to here, after the config
    check passed) is recognised by the stage that steps it, naming key and epoch too."""
    config = fast_config(*TINY, "num_epochs=4", *overrides)
    scheduler_class = getattr(torch.optim.lr_scheduler, config.lr_scheduler)
    real_get_lr = scheduler_class.get_lr

    def fails_after_epoch_1(self):  # Lightning steps it before the epoch's validation
        if self.last_epoch >= 2:
            raise ZeroDivisionError("division by zero")
        return real_get_lr(self)

    monkeypatch.setattr(scheduler_class, "get_lr", fails_after_epoch_1)
    with pytest.raises(UserError, match=rf"{key}.*after epoch \d") as caught:
        run_training(config, progress_bar=False)
    runs = list(Path(config.output_path).glob("ghost_*"))
    # the epoch that finished before the failure is kept, with how to go on
    assert "after epoch 1" in str(caught.value)
    assert f"--resume {runs[0]}" in str(caught.value)
    assert epochs_in(RunFolder(runs[0]).metrics_csv)[0] == 0
    assert read_checkpoint(RunFolder(runs[0]).last_checkpoint)
    summary = json.loads(RunFolder(runs[0]).summary_json.read_text())
    assert key in summary["failed"] and summary["epochs_run"] >= 1
    assert summary["interrupted"] is False and summary["best_epoch"] == 0


def test_an_augmentation_that_fails_now_and_then_names_the_augmentation_keys(fast_config):
    # Two values for a 3-channel image: RandomErasing fails whenever it fires.
    config = fast_config(
        *TINY,
        "seed=3",
        "num_epochs=4",
        "augment_tensors=true",
        "tensor_augmentations={RandomErasing: {p: 0.04, value: [1, 2]}}",
    )
    with pytest.raises(UserError, match="augment") as caught:
        run_training(config, progress_bar=False)
    assert "Traceback" not in str(caught.value)


def test_batch_size_one_is_refused_at_start(fast_config, tmp_path):
    with pytest.raises(UserError, match="batch_size.*2 or more"):
        run_training(fast_config(*TINY, "batch_size=1"), progress_bar=False)
    assert not (tmp_path / "output").exists() or not any((tmp_path / "output").iterdir())


# ---- the command line, end to end --------------------------------------------------------------
def _train_command(config: Path, data: Path, output: Path, *extra: str) -> list[str]:
    command = [sys.executable, str(ROOT / "train.py"), "-c", str(config), "-d", str(data)]
    for item in (*TINY, f"output_path={output}", f"logging_dir={output.parent / 'logs'}"):
        command += ["--set", item]
    return [*command, *extra, "--no-progress"]


def _wait_for_epochs(metrics_csv: Path, count: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 900  # generous: a busy CI machine
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics_csv.is_file() and len(epochs_in(metrics_csv)) >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"no {count} epoch(s) before the deadline: {proc.poll()}")


@pytest.mark.slow
def test_sigterm_mid_run_exits_143_then_resume_continues(tmp_path, prepared_data, run_script):
    """Issue 13, defect 1: a SIGTERM'd run exited 0 with no message and no summary.json. The
    signal reaches a process of its own; the resume runs here."""
    config = tmp_path / "config.yml"
    config.write_text((ROOT / "config_template.yml").read_text())
    output = tmp_path / "output"
    command = _train_command(config, prepared_data, output, "--set", "num_epochs=60")
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not output.is_dir() or not list(output.glob("ghost_*")):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    run = only_run(output)
    _wait_for_epochs(run.metrics_csv, 1, proc)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    assert "Traceback" not in stderr
    assert f"python train.py --resume {run.path}" in stderr
    assert json.loads(run.summary_json.read_text())["interrupted"] is True
    done = read_checkpoint(run.last_checkpoint)["epoch"]

    argv = ["--resume", str(run.path), "--no-progress", "--set", f"num_epochs={done + 2}"]
    code, _, err = run_script(train, argv, cwd=tmp_path)
    assert code == 0, err
    assert epochs_in(run.metrics_csv) == list(range(done + 2))
    summary = json.loads(run.summary_json.read_text())
    assert summary["interrupted"] is False and summary["epochs_run"] == done + 2


@pytest.mark.slow
def test_sigkill_after_two_epochs_then_resume_equals_an_uninterrupted_run(tmp_path, prepared_data):
    config = tmp_path / "config.yml"
    config.write_text((ROOT / "config_template.yml").read_text())
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    four = ("--set", "num_epochs=4")
    baseline = subprocess.Popen(
        _train_command(config, prepared_data, whole, *four),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    proc = subprocess.Popen(
        _train_command(config, prepared_data, killed, *four),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while not killed.is_dir() or not list(killed.glob("ghost_*")):
            assert proc.poll() is None
            time.sleep(0.02)
        run = only_run(killed)
        _wait_for_epochs(run.metrics_csv, 2, proc)
    except BaseException:
        baseline.kill()
        raise
    finally:
        proc.kill()
    proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert len(epochs_in(run.metrics_csv)) < 4

    resumed = subprocess.run(
        [*_train_command(config, prepared_data, killed, *four), "--resume", "last"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert baseline.wait(timeout=900) == 0, baseline.stderr.read()
    reference = only_run(whole)
    assert epochs_in(run.metrics_csv) == [0, 1, 2, 3]
    assert run.metrics_csv.read_text() == reference.metrics_csv.read_text()
    mine = read_checkpoint(run.last_checkpoint)["state_dict"]
    theirs = read_checkpoint(reference.last_checkpoint)["state_dict"]
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_train_cli_help_documents_resume(capsys):
    with pytest.raises(SystemExit):
        train.parse_args(["--help"])
    assert "--resume" in capsys.readouterr().out


# ---- resuming an early-stopped run -------------------------------------------------------------
def test_an_early_stopped_run_resumes_only_with_more_patience(fast_config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # lr 0 cannot lower valid_loss: best at epoch 0, then stopped after epoch 1 (patience 1)
    config = fast_config(
        *TINY, "num_epochs=8", "optimizer_params={lr: 0.0}", "early_stop_patience=1"
    )
    first = run_training(config, progress_bar=False)
    assert first.summary["early_stopped"] is True and epochs_in(first.metrics_csv) == [0, 1]

    config, point = load_resume_config(str(first.run_dir), None, [], None)
    with pytest.raises(UserError, match=r"stopped early after epoch 1.*early_stop_patience=11"):
        run_training(config, progress_bar=False, resume=point)
    assert epochs_in(first.metrics_csv) == [0, 1]

    # the configured patience wins over the checkpoint's: two more epochs without improvement
    config, point = load_resume_config(str(first.run_dir), None, ["early_stop_patience=3"], None)
    resumed = run_training(config, progress_bar=False, resume=point)
    assert epochs_in(first.metrics_csv) == [0, 1, 2, 3]
    assert resumed.summary["early_stopped"] is True and resumed.summary["epochs_run"] == 4
    state = resume_point(first.run_dir, first.run_dir.parent).early_stopping
    assert state["patience"] == 3 and state["stopped_epoch"] == 3


def test_a_checkpoint_that_records_the_stop_only_in_the_summary_is_refused_too(tmp_path):
    """Checkpoints written before early stopping decided at validation end hold the state of the
    epoch before the stop; the run's summary.json says it stopped."""
    run = RunFolder(tmp_path)
    run.write_summary({"early_stopped": True, "epochs_run": 6})
    state = {"stopped_epoch": 0, "wait_count": 2, "patience": 3}
    point = ResumePoint(run=run, checkpoint=run.last_checkpoint, meta=None, epoch=5)
    point.early_stopping = state
    config = load_config(TEMPLATE_PATH, ["early_stop_patience=3"])
    with pytest.raises(UserError, match="stopped early after epoch 5.*early_stop_patience=13"):
        _check_early_stop(point, config)
    _check_early_stop(point, load_config(TEMPLATE_PATH, ["early_stop_patience=4"]))
    point.epoch = 4  # an earlier checkpoint (best.ckpt) of that run: not the stop
    _check_early_stop(point, config)
