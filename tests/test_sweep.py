"""Sweeps on Optuna: every combination once, a table at the end, the same command goes on where
it stopped, several processes share one study, a failed run is reported and the sweep goes on.
The bookkeeping tests replace training by a stand-in that writes a run folder; one slow test
trains for real through train.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import yaml

import train
from utils.errors import UserError
from workflows.runs.run_folder import RunFolder
from workflows.sweep import study as sweep
from workflows.sweep.axes import parse_axes, sweep_name
from workflows.sweep.study import run_sweep

ROOT = Path(__file__).resolve().parent.parent
WD = "optimizer_params.weight_decay"

# Stands in for run_training: a run folder with two epochs whose valid_loss is the weight decay.
FAKE_TRAINING = """
import itertools, json
from types import SimpleNamespace
from workflows.runs.run_folder import RunFolder

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
            result.stopped_by = SimpleNamespace(signal_name="SIGINT", exit_code=130)
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
    assert "2 run(s) trained here" in printed and printed.count("| ghost_") == 2
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
