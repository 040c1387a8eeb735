"""Beyond one machine, on the real parts the README names: a sweep shared through a real
PostgreSQL server (the session's ``postgres_server`` fixture), two torchrun "nodes" and two
SLURM tasks of DDP meeting at 127.0.0.1 (gloo on CPU), and a team MLflow server on PostgreSQL."""

from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import optuna
import pytest
import yaml
from servers import free_port, mlflow_rest, mlflow_server

import train
from utils.errors import run_cli
from workflows.inference.evaluation import evaluate_checkpoint
from workflows.sweep.study import HEARTBEAT_ENV

ROOT = Path(__file__).resolve().parent.parent
TINY = ("num_epochs=1", "image_size=[32,32]", "batch_size=4", "num_workers=0")


@pytest.fixture
def config_file(tmp_path, fast_config) -> Path:
    config = fast_config(*TINY)
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(config.to_public_dict()))
    return path


def _train(config: Path, *args: str, env: dict | None = None, launcher=()) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, *launcher, str(ROOT / "train.py"), "-c", str(config), *args],
        cwd=config.parent,
        # One thread each: two processes' OpenMP threads spinning on 2 cores slow both many times.
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finished_runs(output: Path) -> list[Path]:
    return sorted(p.parent for p in output.glob("*/summary.json"))


def _seeds(output: Path) -> list[int]:
    return sorted(
        yaml.safe_load((r / "config.yml").read_text())["seed"] for r in _finished_runs(output)
    )


def _trained_here(stdout: str) -> int:
    return int(stdout.split(" run(s) trained here")[0].rsplit(" ", 1)[-1])


# ---- sweeps on PostgreSQL ----------------------------------------------------------------------
@pytest.mark.slow
def test_two_sweep_processes_on_postgresql_train_each_combination_once(
    postgres_server, config_file, tmp_path
):
    url = postgres_server.create_database("two_processes")
    sweep = ["--sweep", "seed=1,2,3,4,5,6", "--sweep-storage", url, "--no-progress"]
    workers = [_train(config_file, *sweep) for _ in range(2)]
    results = [w.communicate(timeout=900) for w in workers]
    assert all(w.returncode == 0 for w in workers), [err[-3000:] for _, err in results]
    assert _seeds(tmp_path / "output") == [1, 2, 3, 4, 5, 6]
    assert sum(_trained_here(out) for out, _ in results) == 6
    study = optuna.load_study(study_name=None, storage=url)
    done = [t.params["seed"] for t in study.get_trials() if t.state.name == "COMPLETE"]
    assert sorted(done) == ["1", "2", "3", "4", "5", "6"]
    assert not any(postgres_server.password in out + err for out, err in results)


@pytest.mark.slow
def test_a_sweep_process_killed_mid_run_leaves_its_combination_to_the_survivor(
    postgres_server, config_file, tmp_path
):
    url = postgres_server.create_database("killed")
    sweep = ["--sweep", "seed=1,2,3", "--sweep-storage", url, "--no-progress"]
    env = {HEARTBEAT_ENV: "1"}  # a dead process's run is given back after 2 s, not 2 minutes
    victim, survivor = (_train(config_file, *sweep, "--set", "num_epochs=3", env=env) for _ in "ab")
    storage = optuna.storages.RDBStorage(url)
    deadline = time.monotonic() + 600
    while True:  # both processes in the middle of a run: kill one of them
        assert time.monotonic() < deadline, "the two processes never trained at once"
        assert victim.poll() is None and survivor.poll() is None, victim.stderr.read()[-3000:]
        try:
            trials = optuna.load_study(study_name=None, storage=storage).get_trials()
        except (KeyError, ValueError):  # no study yet
            trials = []
        if sum(t.state.name == "RUNNING" for t in trials) == 2:
            break
        time.sleep(0.2)
    time.sleep(1.5)  # its heartbeat has been written
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=60)
    out, err = survivor.communicate(timeout=900)
    assert survivor.returncode == 0, err[-3000:]
    assert _seeds(tmp_path / "output") == [1, 2, 3]  # the killed run's seed trained again
    study = optuna.load_study(study_name=None, storage=url)
    states = [t.state.name for t in study.get_trials()]
    assert "RUNNING" not in states and "FAIL" in states  # the killed trial, failed as stale
    assert "failed" not in out  # the table: its later run, not the killed attempt


@pytest.mark.parametrize("problem", ["wrong password", "unreachable host"])
def test_a_wrong_password_or_unreachable_database_is_one_error_line(
    postgres_server, config_file, tmp_path, capsys, problem
):
    postgres_server.create_database(f"refused_{problem[0]}")
    if problem == "wrong password":
        url = postgres_server.url(f"refused_{problem[0]}", password="Wr0ngPassw0rd")
    else:
        url = f"postgresql://cars:Wr0ngPassw0rd@127.0.0.1:{free_port()}/sweeps"
    argv = ["-c", str(config_file), "--sweep", "seed=1,2", "--sweep-storage", url]
    with pytest.raises(SystemExit) as exit_:
        run_cli(lambda: train.main([*argv, "--no-progress"]))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert exit_.value.code == 2 and len(lines) == 1 and lines[0].startswith("error:"), err
    assert "Wr0ngPassw0rd" not in err and "cannot be opened" in err
    assert ("password authentication failed" if problem == "wrong password" else "refused") in err
    output = tmp_path / "output"
    assert not output.exists() or not [p for p in output.iterdir() if p.name != "sweeps.db"]


# ---- two nodes ---------------------------------------------------------------------------------
def _check_one_run(output: Path, data: Path, outputs: list[str]) -> None:
    """One run folder, one MLflow run, and the logged valid_acc / valid_loss equal to what
    evaluate.py gets from the best checkpoint: every validation image counted once."""
    (run,) = [p for p in output.iterdir() if p.is_dir() and not p.name.startswith((".", "ml"))]
    assert sum(o.count("Run folder:") for o in outputs) == 1
    with (run / "metrics.csv").open(newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    with sqlite3.connect(output / "mlflow.db") as db:
        assert db.execute("SELECT count(*) FROM runs").fetchone()[0] == 1
    metrics = evaluate_checkpoint(run, data, device="cpu")
    assert metrics["num_images"] == 9  # 3 classes x 3 validation images, none twice
    assert float(row["valid_acc"]) == pytest.approx(metrics["top1"], abs=1e-6)
    assert float(row["valid_loss"]) == pytest.approx(metrics["loss"], rel=1e-4)
    assert json.loads((run / "summary.json").read_text())["epochs_run"] == 1


def _two_nodes(config: Path, launcher, environments: list[dict]) -> list[tuple[str, str]]:
    settings = ["devices=1", "num_nodes=2", "strategy=ddp", "accelerator=cpu", "log_to_mlflow=true"]
    args = ["--no-progress", *(x for s in settings for x in ("--set", s))]
    nodes = [
        _train(config, *args, env=env, launcher=launcher(i)) for i, env in enumerate(environments)
    ]
    results = [n.communicate(timeout=600) for n in nodes]
    assert all(n.returncode == 0 for n in nodes), [e[-3000:] for _, e in results]
    return results


@pytest.mark.slow
def test_two_torchrun_nodes_train_one_run(config_file, tmp_path, prepared_data):
    """The README's two-machine torchrun command, both "machines" on this one."""
    port = free_port()

    def launcher(node: int) -> tuple[str, ...]:
        return ("-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1",
                "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}",
                "--rdzv-id=cars-two-nodes")  # fmt: skip

    results = _two_nodes(config_file, launcher, [{}, {}])
    _check_one_run(tmp_path / "output", prepared_data, [out for out, _ in results])


@pytest.mark.slow
def test_the_readme_slurm_job_trains_one_run_on_two_nodes(config_file, tmp_path, prepared_data):
    """What srun gives each task of the README's job (2 nodes, one task each), read by
    Lightning's SLURMEnvironment: world size, ranks, the first node's address, the job id."""
    job = {
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NAME": "cars",
        "SLURM_NTASKS": "2",
        "SLURM_NTASKS_PER_NODE": "1",
        "SLURM_NNODES": "2",
        "SLURM_NODELIST": "127.0.0.1",
        "SLURM_STEP_ID": "0",
        "MASTER_PORT": str(free_port()),
    }
    tasks = [
        {**job, "SLURM_PROCID": str(i), "SLURM_LOCALID": "0", "SLURM_NODEID": str(i)}
        for i in range(2)
    ]
    results = _two_nodes(config_file, lambda node: (), tasks)
    _check_one_run(tmp_path / "output", prepared_data, [out for out, _ in results])


# ---- a team MLflow server on PostgreSQL --------------------------------------------------------
@pytest.mark.slow
def test_two_processes_log_to_a_team_mlflow_server_on_postgresql(
    postgres_server, config_file, tmp_path
):
    store = postgres_server.create_database("mlflow")
    with mlflow_server(store, tmp_path / "team-artifacts") as base:
        sets = ["log_to_mlflow=true", f"mlflow_tracking_uri={base}", "mlflow_experiment=team"]
        args = ["--no-progress", *(x for s in sets for x in ("--set", s))]
        runs = [_train(config_file, *args, "--set", f"seed={i}") for i in (1, 2)]
        results = [r.communicate(timeout=600) for r in runs]
        assert all(r.returncode == 0 for r in runs), [e[-3000:] for _, e in results]

        name = urllib.parse.quote("team")
        experiment = mlflow_rest(base, f"experiments/get-by-name?experiment_name={name}")
        experiment_id = experiment["experiment"]["experiment_id"]
        found = mlflow_rest(base, "runs/search", {"experiment_ids": [experiment_id]})["runs"]
        local = {p.name for p in _finished_runs(tmp_path / "output")}
        assert {r["info"]["run_name"] for r in found} == local and len(local) == 2
        for run in found:
            params = {p["key"]: p["value"] for p in run["data"]["params"]}
            metrics = {m["key"] for m in run["data"]["metrics"]}
            assert params["architecture"] and {"valid_loss", "valid_acc"} <= metrics
            assert run["info"]["status"] == "FINISHED"
            files = mlflow_rest(base, f"artifacts/list?run_id={run['info']['run_id']}")["files"]
            assert "config.yml" in {f["path"] for f in files}
