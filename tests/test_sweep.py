"""Sweeps on Optuna: every combination once, a table at the end, the same command goes on where
it stopped, several processes share one study, a failed run is reported and the sweep goes on.
The bookkeeping tests replace training by a stand-in that writes a run folder; one slow test
trains for real through train.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import optuna
import pytest
import yaml

import train
from configuration import load_config
from datasets.prepare import prepare_dataset
from datasets.sample_data import make_sample_raw
from utils.errors import UserError, run_cli
from workflows.runs.run_folder import RunFolder
from workflows.sweep import study as sweep
from workflows.sweep.axes import parse_axes, sweep_name
from workflows.sweep.study import run_sweep
from workflows.sweep.table import COMBINATION, params_key
from workflows.training.interruptions import RunInterrupted

ROOT = Path(__file__).resolve().parent.parent
WD = "optimizer_params.weight_decay"

# Stands in for run_training: a run folder with two epochs whose valid_loss is the weight decay.
FAKE_TRAINING = """
import itertools, json
from types import SimpleNamespace
from workflows.runs.run_folder import RunFolder
from workflows.training.interruptions import RunInterrupted

_counter = itertools.count()

def fake_run_training(config, progress_bar=True, callbacks=None):
    run = RunFolder.create(config.output_path, f"ghost{next(_counter)}_{__import__('os').getpid()}")
    run.write_config(config.to_public_dict())
    wd = config.optimizer_params["weight_decay"]
    run.metrics_csv.write_text(
        "epoch,train_loss,train_acc,valid_loss,valid_acc,lr\\n"
        f"0,2.0,0.1,{wd + 1},0.2,0.001\\n1,1.0,0.3,{wd},0.4,0.001\\n"
    )
    summary = {"run_name": run.name, "min_valid_loss": wd, "interrupted": False}
    run.write_summary(summary)
    return SimpleNamespace(run_dir=run.path, summary=summary, stopped_by=None)
"""
namespace: dict = {}
exec(FAKE_TRAINING, namespace)  # noqa: S102 - the same stand-in as in the subprocesses
fake_run_training = namespace["fake_run_training"]


@pytest.fixture
def config_file(tmp_path, fast_config) -> Path:
    config = fast_config("num_epochs=1", "log_to_mlflow=false")
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(config.to_public_dict()))
    return path


def _trained_values(output: Path) -> list[float]:
    values = []
    for config in sorted(output.glob("*/config.yml")):
        values.append(yaml.safe_load(config.read_text())["optimizer_params"]["weight_decay"])
    return sorted(values)


def test_parse_axes():
    axes = parse_axes(
        [f"{WD}=0.3,0.4", "image_size=[64,64],[96,96]", "optimizer_params.lr=1e-4..1e-2:log"]
    )
    assert axes[0].values == (0.3, 0.4)
    assert axes[1].values == ([64, 64], [96, 96])
    assert (axes[2].low, axes[2].high, axes[2].log) == (1e-4, 1e-2, True)
    for bad in ("nokey", f"{WD}=", f"{WD}=0.3,0.3", "lr=2..1"):
        with pytest.raises(UserError):
            parse_axes([bad])


def test_the_sweep_name_follows_the_spec_and_the_settings_not_the_paths(fast_config, tmp_path):
    axes = parse_axes([f"{WD}=0.3,0.4"])
    base = fast_config()
    same = sweep_name(axes, False, fast_config(f"output_path={tmp_path / 'elsewhere'}"))
    assert sweep_name(axes, False, base) == same and same.startswith("weight_decay-")
    assert sweep_name(axes, False, fast_config("batch_size=8")) != same
    assert sweep_name(parse_axes([f"{WD}=0.3,0.5"]), False, base) != same


def test_two_values_make_two_runs_and_a_table(config_file, tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, "run_training", fake_run_training)
    result = run_sweep(config_file, [], None, [f"{WD}=0.3,0.6"])
    output = tmp_path / "output"
    assert result.trained == 2 and _trained_values(output) == [0.3, 0.6]
    runs_table = result.table.split("| Metric |")[0]  # the thesis's table follows, a column per run
    assert "optimizer_params.weight_decay" in runs_table and runs_table.count("ghost") == 2
    assert (result.report["summary.md"]).is_file()
    for config in output.glob("*/config.yml"):
        assert f"sweep:{result.name}" in yaml.safe_load(config.read_text())["tags"]
    # the same command again: nothing left to train
    assert run_sweep(config_file, [], None, [f"{WD}=0.3,0.6"]).trained == 0


def test_an_interrupted_sweep_goes_on_where_it_stopped(config_file, tmp_path, monkeypatch):
    calls, stop_once = [], [True]

    def stopped_on_second(config, progress_bar=True, callbacks=None):
        calls.append(config.optimizer_params["weight_decay"])
        result = fake_run_training(config)
        if len(calls) == 2 and stop_once and stop_once.pop():  # Ctrl-C during the 2nd run
            result.stopped_by = RunInterrupted(signal.SIGINT)
        return result

    monkeypatch.setattr(sweep, "run_training", stopped_on_second)
    spec = [f"{WD}=0.3,0.4,0.5"]
    first = run_sweep(config_file, [], None, spec)
    assert first.stopped and len(calls) == 2
    calls.clear()
    second = run_sweep(config_file, [], None, spec)
    assert not second.stopped
    assert sorted(calls) == [0.4, 0.5]  # the stopped one again, and the one never started


def test_a_failed_run_is_reported_and_the_sweep_goes_on(config_file, monkeypatch):
    def fails_on_04(config, progress_bar=True, callbacks=None):
        if config.optimizer_params["weight_decay"] == 0.4:
            raise UserError("the loss became NaN at epoch 0")
        return fake_run_training(config)

    monkeypatch.setattr(sweep, "run_training", fails_on_04)
    result = run_sweep(config_file, [], None, [f"{WD}=0.3,0.4,0.5"])
    assert result.trained == 2
    assert "failed" in result.table and "became NaN" in result.table


@pytest.mark.parametrize(
    "spec, fragment",
    [("bach_size=1,2", "did you mean 'batch_size'"), ("batch_size=4,abc", "batch_size")],
)
def test_a_bad_key_or_value_fails_before_any_run(config_file, monkeypatch, spec, fragment):
    monkeypatch.setattr(sweep, "run_training", lambda *a, **k: pytest.fail("a run started"))
    with pytest.raises(
        UserError, match=rf"--sweep {spec.split(',')[0].split('=')[0]}=.*{fragment}"
    ):
        run_sweep(config_file, [], None, [spec])


def test_a_sweep_whose_every_run_failed_exits_2(config_file, monkeypatch, capsys):
    def always_fails(config, progress_bar=True, callbacks=None):
        raise UserError("the loss became NaN at epoch 0")

    monkeypatch.setattr(sweep, "run_training", always_fails)
    code = train.main(["-c", str(config_file), "--sweep", f"{WD}=0.3,0.4", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 2 and "became NaN" in captured.out
    assert "error: all 2 run(s) of the sweep failed" in captured.err
    monkeypatch.setattr(sweep, "run_training", fake_run_training)  # fixed: the same command
    assert train.main(["-c", str(config_file), "--sweep", f"{WD}=0.3,0.4", "--no-progress"]) == 0


@pytest.mark.slow  # two fresh interpreters importing torch
def test_two_processes_train_each_combination_once(config_file, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(
        FAKE_TRAINING
        + textwrap.dedent(
            f"""
            import sys, time
            from workflows.sweep import study as sweep
            def slow(config, progress_bar=True, callbacks=None):
                time.sleep(0.3)
                return fake_run_training(config)
            sweep.run_training = slow
            result = sweep.run_sweep({str(config_file)!r}, [], None, ["{WD}=0.1,0.2,0.3,0.4,0.5,0.6"])
            print("trained", result.trained)
            """
        )
    )
    workers = [
        subprocess.Popen(
            [sys.executable, str(script)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [w.communicate(timeout=300) for w in workers]
    outputs = [out for out, _ in results]
    assert all(w.returncode == 0 for w in workers), [err[-3000:] for _, err in results]
    assert _trained_values(tmp_path / "output") == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    trained = [int(o.split("trained")[-1]) for o in outputs]
    assert sum(trained) == 6
    storage = f"sqlite:///{tmp_path / 'output' / 'sweeps.db'}"
    (summary,) = optuna.get_all_study_summaries(storage)
    assert summary.n_trials >= 6


def test_trials_search_with_a_range(config_file, tmp_path, monkeypatch):
    seen = []

    def record(config, progress_bar=True, callbacks=None):
        seen.append((config.optimizer_params["lr"], callbacks))
        return fake_run_training(config)

    monkeypatch.setattr(sweep, "run_training", record)
    result = run_sweep(config_file, [], None, ["optimizer_params.lr=1e-4..1e-2:log"], trials=3)
    assert result.trained == 3 and all(1e-4 <= lr <= 1e-2 for lr, _ in seen)
    assert all(isinstance(cb[0], sweep.PruneBehindMedian) for _, cb in seen)
    with pytest.raises(UserError, match="needs --trials"):
        run_sweep(config_file, [], None, ["optimizer_params.lr=1e-4..1e-2"])


@pytest.mark.slow
def test_sweep_from_the_command_line_trains_for_real(config_file, tmp_path, capsys):
    code = train.main(["-c", str(config_file), "--sweep", f"{WD}=0.3,0.6", "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    runs_table = printed.split("| Metric |")[0]  # the thesis's table follows, a column per run
    assert "2 run(s) trained here" in printed and runs_table.count("| ghost_") == 2
    runs = [RunFolder(p.parent) for p in (tmp_path / "output").glob("*/summary.json")]
    assert len(runs) == 2
    assert all(
        json.loads(r.summary_json.read_text())["tags"][-1].startswith("sweep:") for r in runs
    )


@pytest.mark.parametrize(
    "environment",
    [
        {"TORCHELASTIC_RUN_ID": "r1", "WORLD_SIZE": "2"},
        {"SLURM_JOB_ID": "77", "SLURM_NTASKS": "4"},
    ],
    ids=["torchrun", "srun"],
)
def test_a_sweep_refuses_one_launch_of_several_processes(
    config_file, monkeypatch, environment, tmp_path
):
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(sweep, "run_training", fake_run_training)
    with pytest.raises(UserError, match="job array") as err:
        run_sweep(config_file, [], None, ["optimizer_params.weight_decay=0.3,0.4"])
    assert "CUDA_VISIBLE_DEVICES" in str(err.value)
    assert not list(tmp_path.glob("**/sweeps.db"))  # refused before the study is opened


# ---- defects (issue 23): each test reproduces one ---------------------------------------------
def _never_more_than(limit: int, training):
    """``training``, but a run past ``limit`` ends the test instead of hanging it (a
    BaseException, which Optuna lets through)."""
    calls = []

    def counted(config, progress_bar=True, callbacks=None):
        calls.append(config)
        if len(calls) > limit:
            pytest.fail(f"the sweep started a run number {len(calls)}; it should have ended")
        return training(config, progress_bar, callbacks)

    return counted, calls


def _always_fails(config, progress_bar=True, callbacks=None):
    raise UserError("no image in the data folder")


def test_a_trials_search_whose_every_trial_fails_ends_with_exit_2(config_file, monkeypatch, capsys):
    training, calls = _never_more_than(20, _always_fails)
    monkeypatch.setattr(sweep, "run_training", training)
    argv = ["-c", str(config_file), "--sweep", "optimizer_params.lr=0.001..0.01", "--trials", "2"]
    assert train.main([*argv, "--no-progress"]) == 2
    assert len(calls) == 2  # failed trials count towards --trials
    assert "error: all 2 run(s) of the sweep failed" in capsys.readouterr().err


def test_a_long_trials_search_stops_after_failures_in_a_row(config_file, monkeypatch, capsys):
    training, calls = _never_more_than(20, _always_fails)
    monkeypatch.setattr(sweep, "run_training", training)
    argv = ["-c", str(config_file), "--sweep", "optimizer_params.lr=0.001..0.01", "--trials", "50"]
    assert train.main([*argv, "--no-progress"]) == 2
    assert len(calls) == sweep.MAX_FAILURES_IN_A_ROW
    assert f"error: {sweep.MAX_FAILURES_IN_A_ROW} runs in a row failed" in capsys.readouterr().err


def _states(output: Path) -> list[optuna.trial.TrialState]:
    """The states of the trials of the one study in ``output``'s sweeps.db."""
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{output / 'sweeps.db'}")
    return [t.state for t in study.get_trials()]


def test_a_killed_sweeps_run_is_trained_on_the_next_start(config_file, monkeypatch, tmp_path):
    """kill -9 mid-run leaves its trial RUNNING; once its heartbeat is stale the next start
    trains that combination (it used to say "0 run(s) trained here" for good)."""
    monkeypatch.setenv(sweep.HEARTBEAT_ENV, "1")
    killed = []

    def killed_on_first(config, progress_bar=True, callbacks=None):
        if not killed:
            killed.append(config.seed)
            time.sleep(1.5)  # a heartbeat is written
            raise SystemExit(137)  # like SIGKILL: Optuna never hears of the trial again
        return fake_run_training(config)

    monkeypatch.setattr(sweep, "run_training", killed_on_first)
    spec = ["seed=1,2"]
    with pytest.raises(SystemExit):
        run_sweep(config_file, [], None, spec)
    time.sleep(2.5)  # past twice the heartbeat
    training, calls = _never_more_than(5, fake_run_training)
    monkeypatch.setattr(sweep, "run_training", training)
    result = run_sweep(config_file, [], None, spec)
    assert sorted(c.seed for c in calls) == [1, 2] and result.trained == 2
    assert "failed" not in result.table  # the killed attempt's row gave way to the new run
    assert optuna.trial.TrialState.RUNNING not in _states(tmp_path / "output")


def test_a_run_killed_before_its_first_heartbeat_is_trained_and_nobody_waits_for_it(
    config_file, monkeypatch, tmp_path
):
    """kill -9 between Optuna's ask() and its heartbeat thread's first beat leaves a RUNNING
    trial with no heartbeat, which Optuna never finds stale: the sweep used to wait for it
    forever. It is failed once it has shown no sign of life for four heartbeats."""
    monkeypatch.setenv(sweep.HEARTBEAT_ENV, "1")
    spec = ["seed=1,2"]
    base = load_config(config_file, [], None)
    axes = parse_axes(spec)
    name = sweep_name(axes, False, base, data=sweep.data_identity(base.stanford_data_path))
    study = optuna.create_study(
        study_name=name, storage=sweep.storage_url(base, None), direction="minimize"
    )
    params = {"seed": axes[0].choices[0]}  # queued as the sweep queues it, then taken
    study.enqueue_trial(params, user_attrs={COMBINATION: params_key(params)})
    dead = study.ask()  # ... by a process killed at once: no heartbeat is ever written
    training, calls = _never_more_than(5, fake_run_training)
    monkeypatch.setattr(sweep, "run_training", training)
    outcome: list = []

    def sweep_in_thread():
        try:
            outcome.append(run_sweep(config_file, [], None, spec))
        except BaseException as err:  # handed to the test below, pytest.fail included
            outcome.append(err)

    thread = threading.Thread(target=sweep_in_thread, daemon=True)
    thread.start()
    thread.join(timeout=30)  # a few seconds when it works
    assert not thread.is_alive(), "the sweep still waits for the dead run"
    (result,) = outcome
    if isinstance(result, BaseException):
        raise result
    assert result.name == name and result.trained == 2
    assert sorted(c.seed for c in calls) == [1, 2]
    assert study.get_trials()[dead.number].state == optuna.trial.TrialState.FAIL
    assert optuna.trial.TrialState.RUNNING not in _states(tmp_path / "output")


def test_sigterm_between_runs_exits_143_and_the_run_is_trained_next_time(
    config_file, monkeypatch, capsys, tmp_path
):
    def sigterm_while_setting_up_the_second(config, progress_bar=True, callbacks=None):
        if config.optimizer_params["weight_decay"] == 0.4:
            os.kill(os.getpid(), signal.SIGTERM)  # the sweep's handler raises here
            time.sleep(5)
        return fake_run_training(config)

    def unhandled(signum, frame):  # in place of the default action, which would end pytest
        raise AssertionError("SIGTERM reached the default handler")

    previous = signal.signal(signal.SIGTERM, unhandled)
    try:
        monkeypatch.setattr(sweep, "run_training", sigterm_while_setting_up_the_second)
        argv = ["-c", str(config_file), "--sweep", f"{WD}=0.3,0.4,0.5", "--no-progress"]
        assert train.main(argv) == 143
        assert "stopped by SIGTERM" in capsys.readouterr().err
        assert optuna.trial.TrialState.RUNNING not in _states(tmp_path / "output")
        monkeypatch.setattr(sweep, "run_training", fake_run_training)
        assert train.main(argv) == 0
        assert "2 run(s) trained here" in capsys.readouterr().out  # 0.4 again, and 0.5
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_sigterm_during_a_sweeps_run_exits_143(config_file, monkeypatch):
    def stopped_by_sigterm(config, progress_bar=True, callbacks=None):
        result = fake_run_training(config)
        result.stopped_by = RunInterrupted(signal.SIGTERM)
        return result

    monkeypatch.setattr(sweep, "run_training", stopped_by_sigterm)
    argv = ["-c", str(config_file), "--sweep", f"{WD}=0.3,0.4", "--no-progress"]
    assert train.main(argv) == 143


def test_the_same_sweep_on_other_data_trains_again(config_file, monkeypatch, tmp_path):
    raw = make_sample_raw(tmp_path / "raw5", num_classes=5, train_per_class=2, test_per_class=1)
    five = tmp_path / "five"
    prepare_dataset(raw, five, progress=False)
    monkeypatch.setattr(sweep, "run_training", fake_run_training)
    spec = [f"{WD}=0.3,0.6"]
    three = run_sweep(config_file, [], None, spec)
    other = run_sweep(config_file, [], str(five), spec)
    assert three.trained == 2 and other.trained == 2 and other.name != three.name


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_a_sweep_with_an_unusable_output_path_is_one_error_line(
    config_file, tmp_path, monkeypatch, capsys, where
):
    monkeypatch.setattr(sweep, "run_training", lambda *a, **k: pytest.fail("a run started"))
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    output = blocker if where == "a file" else blocker / "output"
    argv = ["-c", str(config_file), "--set", f"output_path={output}", "--sweep", f"{WD}=0.3,0.4"]
    with pytest.raises(SystemExit) as exit_:
        run_cli(lambda: train.main(argv))
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("error: key 'output_path'")
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_finished_sweep_run_again_says_it_is_done_and_prints_its_table(
    config_file, monkeypatch, capsys
):
    monkeypatch.setattr(sweep, "run_training", fake_run_training)
    argv = ["-c", str(config_file), "--sweep", f"{WD}=0.3,0.6", "--no-progress"]
    assert train.main(argv) == 0
    capsys.readouterr()
    assert train.main(argv) == 0
    out = capsys.readouterr().out
    assert "All 2 combinations of this sweep are already done" in out
    runs_table = out.split("| Metric |")[0]  # the thesis's table follows, a column per run
    assert runs_table.count("| ghost") == 2


def test_a_postgresql_storage_without_its_driver_says_what_to_install(config_file, monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg -> ImportError
    url = "postgresql://alice:S3cretPass@127.0.0.1:1/sweeps"
    with pytest.raises(UserError, match="postgres_requirements.txt") as err:
        run_sweep(config_file, [], None, [f"{WD}=0.3,0.4"], storage=url)
    assert "S3cretPass" not in str(err.value)
