"""Experiment trackers: MLflow (SQLite store and a real server over HTTP), TensorBoard and
Neptune offline get the run's parameters under the thesis's names, every epoch's metrics with
the epoch as step, tags and description; a dead or hanging tracker never stops a run; the
Neptune token is written nowhere."""

from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from servers import free_port, mlflow_rest, mlflow_server
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from configuration import TEMPLATE_PATH, load_config
from utils.logger import setup_logging
from workflows.runs.run_folder import RunFolder
from workflows.tracking import base as tracker_base
from workflows.tracking import trackers as tracking
from workflows.tracking.base import Tracker
from workflows.tracking.continuation import public_uri
from workflows.tracking.trackers import (
    MlflowTracker,
    NeptuneTracker,
    finish_trackers,
    mlflow_uri,
    thesis_params,
)
from workflows.training import callbacks
from workflows.training.checkpoint_io import AtomicCheckpointIO
from workflows.training.epoch_log import epoch_line
from workflows.training.preflight import warn_small_data
from workflows.training.resume import load_resume_config
from workflows.training.run import run_training

THESIS_PARAMS = [
    "runtime",
    "architecture",
    "num_params",
    "img_size",
    "grayscale",
    "normalize",
    "norm_params_rgb",
    "norm_params_gray",
    "crop_to_bboxes",
    "erase_background",
    "augment_images",
    "image_augmentations",
    "augment_tensors",
    "tensor_augmentations",
    "batch_size",
    "max_num_epochs",
    "dropout",
    "out_channels",
    "loss_function",
    "loss_params",
    "optimizer",
    "learning_rate",
    "weight_decay",
    "all_optimizer_params",
    "lr_scheduler",
    "lr_scheduler_params",
]
METRICS = ("train_loss", "train_acc", "valid_loss", "valid_acc", "lr")
CONFIG_TOKEN = "tok-CONFIG-4f1d9a77c2"
ENV_TOKEN = "tok-ENV-8b2e61d0aa"


def _neptune_series(run_dir: Path) -> tuple[dict, dict]:
    """Parameters and metric series from the Neptune client's offline operation files."""
    params, series = {}, {}
    for log_file in (run_dir / tracking.NEPTUNE_DIR).rglob("data-*.log"):
        for line in log_file.read_text(encoding="utf-8").splitlines():
            op = json.loads(line)["obj"]
            path = op.get("path", [])
            if path[:1] == ["parameters"]:
                params[path[1]] = op.get("value")
            elif op.get("type") == "LogFloats":
                series.setdefault(path[0], []).extend(int(v["step"]) for v in op["values"])
    return params, series


def test_thesis_params_names_and_off_settings():
    config = load_config(
        TEMPLATE_PATH,
        ["normalize=false", "lr_scheduler=null", f"neptune_api_token={CONFIG_TOKEN}"],
    )
    params = thesis_params(config, 123, "local")
    assert list(params) == THESIS_PARAMS
    assert params["norm_params_rgb"] is None and params["norm_params_gray"] is None
    assert params["lr_scheduler"] is None and params["lr_scheduler_params"] is None
    assert params["tensor_augmentations"] is None  # augment_tensors is off in the template
    assert params["learning_rate"] == 0.001 and params["weight_decay"] == 0.6
    assert CONFIG_TOKEN not in repr(params)


def test_every_tracker_gets_the_run_and_no_file_holds_the_token(
    fast_config, tmp_path, monkeypatch, capfd, caplog
):
    monkeypatch.setenv("NEPTUNE_API_TOKEN", ENV_TOKEN)
    config = fast_config(
        "log_to_mlflow=true",
        "log_to_tensorboard=true",
        "log_to_neptune=true",
        f"neptune_api_token={CONFIG_TOKEN}",
        "tags=['4.2.14', 'smoke']",
        "description='weight decay 0.6'",
    )
    caplog.set_level(logging.INFO)
    result = run_training(config, progress_bar=False)
    run_dir = result.run_dir
    assert result.summary["tags"] == ["4.2.14", "smoke"]
    assert result.summary["description"] == "weight decay 0.6"

    # MLflow: the SQLite store in output_path, read back with MLflow's own client
    client = MlflowClient(mlflow_uri(config))
    experiment = client.get_experiment_by_name("cars")
    (mlrun,) = client.search_runs([experiment.experiment_id])
    assert mlrun.info.run_name == run_dir.name and mlrun.info.status == "FINISHED"
    assert set(THESIS_PARAMS) <= set(mlrun.data.params)
    assert mlrun.data.params["architecture"] == "GhostNet"
    assert mlrun.data.params["img_size"] == "[64, 64]"
    assert mlrun.data.params["norm_params_gray"] == "None"
    for key in METRICS:
        history = client.get_metric_history(mlrun.info.run_id, key)
        assert sorted(m.step for m in history) == [0, 1], key
    valid_loss = {
        m.step: m.value for m in client.get_metric_history(mlrun.info.run_id, "valid_loss")
    }
    rows = result.summary
    assert min(valid_loss.values()) == pytest.approx(rows["min_valid_loss"])
    # the chart page: the five per-epoch series alone; the summary as tags, apart
    assert set(mlrun.data.metrics) == set(METRICS)
    summary_tag = float(mlrun.data.tags["summary.max_valid_acc"])
    assert summary_tag == pytest.approx(rows["max_valid_acc"], abs=1e-6)
    assert mlrun.data.tags["summary.epochs_run"] == "2"
    assert mlrun.data.tags["summary.early_stopped"] == "False"
    lr = client.get_metric_history(mlrun.info.run_id, "lr")
    assert {m.value for m in lr} == {0.001}  # not float32's 0.0010000000474974513
    # the end of the run says how to open it
    page = f"#/experiments/{experiment.experiment_id}/runs/{mlrun.info.run_id}"
    (hint,) = [r.getMessage() for r in caplog.records if page in r.getMessage()]
    assert "mlflow ui --backend-store-uri sqlite:///" in hint and "mlflow.db" in hint
    assert mlrun.data.tags["4.2.14"] == "true" and mlrun.data.tags["tags"] == "4.2.14, smoke"
    assert mlrun.data.tags["mlflow.note.content"] == "weight decay 0.6"
    artifacts = {a.path for a in client.list_artifacts(mlrun.info.run_id)}
    assert {"config.yml", "metrics.csv", "summary.json", "learning_curves.png"} <= artifacts

    # TensorBoard: event files in the run folder, read with TensorBoard's reader
    events = EventAccumulator(str(run_dir / tracking.TENSORBOARD_DIR))
    events.Reload()
    for key in METRICS:
        assert [e.step for e in events.Scalars(key)] == [0, 1], key

    # Neptune offline: in the run folder, for a later `neptune sync`
    params, series = _neptune_series(run_dir)
    assert set(THESIS_PARAMS) <= set(params) and params["architecture"] == "GhostNet"
    for key in METRICS:
        assert sorted(series[key]) == [0, 1], key

    # the token: in no file under the output, log and tracker folders, nor on the console
    captured = capfd.readouterr()
    for token in (CONFIG_TOKEN, ENV_TOKEN):
        assert token not in captured.out + captured.err + caplog.text
        for path in tmp_path.rglob("*"):
            if path.is_file():
                assert token.encode() not in path.read_bytes(), path
    assert not any(
        r.levelno >= logging.WARNING and "tracker" in r.getMessage() for r in caplog.records
    )


def test_dead_tracking_server_warns_once_and_the_run_goes_on(fast_config, caplog):
    config = fast_config(
        "num_epochs=1", "log_to_mlflow=true", f"mlflow_tracking_uri=http://127.0.0.1:{free_port()}"
    )
    caplog.set_level(logging.WARNING)
    result = run_training(config, progress_bar=False)
    assert result.summary["epochs_run"] == 1
    assert result.run.summary_json.is_file()
    warnings = [r.getMessage() for r in caplog.records if r.name.startswith("workflows.tracking")]
    assert len(warnings) == 1 and "MLflow" in warnings[0] and "mlflow_tracking_uri" in warnings[0]


class _Hanging(Tracker):
    label = "Hanging"
    fix = "Fix it."

    def _begin(self, run, params, tags, description):
        pass

    def _log(self, values, epoch):
        time.sleep(30)

    def _close(self, status):
        raise AssertionError("never reached: the tracker is off")


def test_a_tracker_that_hangs_is_given_up_after_its_time_limit(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(tracker_base, "CALL_TIMEOUT_S", 0.2)
    caplog.set_level(logging.WARNING)
    hanging = _Hanging().begin(RunFolder(tmp_path), {}, [], "")
    for epoch in range(3):
        hanging.log_metrics({"valid_loss": 1.0, "epoch": epoch}, step=99)
    finish_trackers([hanging], RunFolder(tmp_path), {"epochs_run": 3})
    assert not hanging.active
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "Hanging tracker" in warning and "no answer" in warning and "Fix it." in warning


@pytest.mark.slow
def test_a_run_is_logged_to_an_mlflow_server_over_http(tmp_path):
    store = f"sqlite:///{tmp_path / 'server.db'}"
    with mlflow_server(store, tmp_path / "server-artifacts") as base:
        config = load_config(
            TEMPLATE_PATH,
            [f"mlflow_tracking_uri={base}", "mlflow_experiment=http-test", "tags=['4.2.11']"],
        )
        run = RunFolder(tmp_path / "ghost_20260101000000")
        run.path.mkdir()
        run.metrics_csv.write_text(
            "epoch,train_loss,train_acc,valid_loss,valid_acc,lr\n0,2,0.1,2.5,0.2,0.001\n"
        )
        tracker = MlflowTracker(config).begin(
            run, thesis_params(config, 5, "local"), ["4.2.11"], ""
        )
        tracker.log_metrics({"valid_loss": 2.5, "epoch": 0})
        tracker.log_metrics({"valid_loss": 2.0, "epoch": 1})
        finish_trackers([tracker], run, {"epochs_run": 2, "min_valid_loss": 2.0})
        assert tracker.active

        experiment = mlflow_rest(base, "experiments/get-by-name?experiment_name=http-test")
        experiment_id = experiment["experiment"]["experiment_id"]
        (found,) = mlflow_rest(base, "runs/search", {"experiment_ids": [experiment_id]})["runs"]
        assert found["info"]["run_name"] == run.name
        params = {p["key"]: p["value"] for p in found["data"]["params"]}
        assert params["optimizer"] == "AdamW" and set(THESIS_PARAMS) <= set(params)
        assert {t["key"]: t["value"] for t in found["data"]["tags"]}["4.2.11"] == "true"


# ---- resume: a resumed run goes on in the same tracker runs ------------------------------------
def _resume(run_dir: Path, *overrides: str):
    config, point = load_resume_config(str(run_dir), None, list(overrides), None)
    return run_training(config, progress_bar=False, resume=point)


def _neptune_segments(run_dir: Path) -> list[dict]:
    """Each offline Neptune run in the run folder (oldest first): its fields, and each series'
    steps (its values where no step was given)."""
    segments = []
    for folder in (run_dir / tracking.NEPTUNE_DIR / "offline").iterdir():
        created = json.loads((folder / "metadata.json").read_text())["createdAt"]
        fields, series = {}, {}
        for log_file in folder.rglob("data-*.log"):
            for line in log_file.read_text(encoding="utf-8").splitlines():
                op = json.loads(line)["obj"]
                key = "/".join(op.get("path", []))
                if op.get("type") == "LogFloats":
                    series.setdefault(key, []).extend(
                        int(v["value"] if v.get("step") is None else v["step"])
                        for v in op["values"]
                    )
                elif "value" in op:
                    fields[key] = op["value"]
        segments.append((created, fields, series))
    return [{"fields": f, "series": s} for _, f, s in sorted(segments, key=lambda x: x[0])]


def _tensorboard_steps(run_dir: Path, key: str) -> list[int]:
    events = EventAccumulator(str(run_dir / tracking.TENSORBOARD_DIR))
    events.Reload()
    return [e.step for e in events.Scalars(key)]


@pytest.mark.slow  # about a minute on 2 busy cores: resumes a run under every tracker
def test_a_resumed_run_goes_on_in_the_same_tracker_runs(fast_config, tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    config = fast_config(
        "image_size=[48,48]", "log_to_mlflow=true", "log_to_tensorboard=true", "log_to_neptune=true"
    )
    first = run_training(config, progress_bar=False)  # epochs 0 and 1 of num_epochs 2
    stored = json.loads(first.run.trackers_json.read_text())
    assert set(stored) == {"mlflow", "neptune"}
    caplog.set_level(logging.WARNING)
    resumed = _resume(first.run_dir, "num_epochs=3")
    assert resumed.run_dir == first.run_dir and resumed.summary["epochs_run"] == 3

    client = MlflowClient(mlflow_uri(config))
    (mlrun,) = client.search_runs([client.get_experiment_by_name("cars").experiment_id])
    assert mlrun.info.run_id == stored["mlflow"]["run_id"] and mlrun.info.status == "FINISHED"
    for key in METRICS:
        steps = [m.step for m in client.get_metric_history(mlrun.info.run_id, key)]
        assert sorted(steps) == [0, 1, 2], key
    # MLflow keeps a parameter's first value: the change is a tag
    assert mlrun.data.params["max_num_epochs"] == "2"
    assert mlrun.data.tags["resumed.max_num_epochs"] == "3"
    assert mlrun.data.tags["resumed_at_epoch"] == "2"
    assert mlrun.data.tags["summary.epochs_run"] == "3"

    for key in METRICS:
        assert _tensorboard_steps(first.run_dir, key) == [0, 1, 2], key
    assert len(list((first.run_dir / tracking.TENSORBOARD_DIR).glob("events.out.*"))) == 2

    # Neptune offline: the resumed segment is a second offline run, linked to the first
    before, after = _neptune_segments(first.run_dir)
    assert sorted(before["series"]["valid_loss"]) == [0, 1]
    assert after["series"]["valid_loss"] == [2] and after["series"]["resumed_at_epoch"] == [2]
    assert after["fields"]["custom_run_id"] == before["fields"]["custom_run_id"]
    assert after["fields"]["sys/name"] == first.run.name
    assert after["fields"]["parameters/max_num_epochs"] == 3
    assert stored["neptune"]["custom_run_id"] == before["fields"]["custom_run_id"]
    assert not [
        r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("workflows")
    ]


@pytest.mark.slow  # about a minute on 2 busy cores: trains, interrupts and resumes
def test_tensorboard_hides_what_the_interrupted_process_logged_after_its_checkpoint(
    fast_config, tmp_path, monkeypatch
):
    """Killed after logging epoch 2 but before its last.ckpt: the resumed epoch 2 replaces it."""
    real_save = AtomicCheckpointIO.save_checkpoint

    def no_last_checkpoint_of_epoch_2(self, checkpoint, path, storage_options=None):
        if not (checkpoint["epoch"] == 2 and Path(path).name == "last.ckpt"):
            real_save(self, checkpoint, path, storage_options)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", no_last_checkpoint_of_epoch_2)
    config = fast_config("image_size=[48,48]", "num_epochs=3", "log_to_tensorboard=true")
    first = run_training(config, progress_bar=False)
    assert _tensorboard_steps(first.run_dir, "valid_loss") == [0, 1, 2]
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    _resume(first.run_dir, "num_epochs=4")
    events = EventAccumulator(str(first.run_dir / tracking.TENSORBOARD_DIR))
    events.Reload()
    logged = {e.step: e.value for e in events.Scalars("valid_loss")}
    assert sorted(logged) == [0, 1, 2, 3] and len(events.Scalars("valid_loss")) == 4
    with first.run.metrics_csv.open() as handle:
        rows = {int(r["epoch"]): float(r["valid_loss"]) for r in csv.DictReader(handle)}
    assert logged == pytest.approx(rows)  # epoch 2 as the resumed run trained it


@pytest.mark.slow  # about a minute on 2 busy cores: trains, interrupts and resumes
def test_a_deleted_mlflow_run_gets_a_new_one_and_one_warning(
    fast_config, tmp_path, monkeypatch, caplog
):
    monkeypatch.chdir(tmp_path)
    config = fast_config("image_size=[48,48]", "num_epochs=1", "log_to_mlflow=true")
    first = run_training(config, progress_bar=False)
    client = MlflowClient(mlflow_uri(config))
    old_id = json.loads(first.run.trackers_json.read_text())["mlflow"]["run_id"]
    client.delete_run(old_id)
    caplog.set_level(logging.WARNING)
    _resume(first.run_dir, "num_epochs=2")
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name.startswith("workflows")
    ]
    assert len(warnings) == 1 and old_id in warnings[0] and "new MLflow run" in warnings[0]
    (mlrun,) = client.search_runs([client.get_experiment_by_name("cars").experiment_id])
    assert mlrun.info.run_id != old_id and mlrun.info.status == "FINISHED"
    assert mlrun.data.params["max_num_epochs"] == "2"
    assert [m.step for m in client.get_metric_history(mlrun.info.run_id, "valid_loss")] == [1]
    assert json.loads(first.run.trackers_json.read_text())["mlflow"]["run_id"] == mlrun.info.run_id


class _FakeNeptuneRun:
    def __init__(self):
        self.fields: dict = {}

    def __setitem__(self, key, value):
        self.fields[key] = value

    def __getitem__(self, key):
        run = self

        class Field:
            def append(self, value, step=None):
                run.fields.setdefault(key, []).append(value)

            def fetch(self):
                return "CARS-7" if key == "sys/id" else run.fields[key]

        return Field()

    def stop(self, seconds=None):
        pass


def test_neptune_online_continues_the_stored_run(tmp_path, monkeypatch):
    """Online modes need a Neptune server: the client's init_run is replaced by a recorder."""
    calls, runs = [], []

    def init_run(**kwargs):
        calls.append(kwargs)
        runs.append(_FakeNeptuneRun())
        return runs[-1]

    monkeypatch.setattr("neptune.init_run", init_run)
    config = load_config(
        TEMPLATE_PATH,
        [
            "log_to_neptune=true",
            "neptune_mode=async",
            "neptune_username=me",
            "neptune_project_name=cars",
            f"neptune_api_token={CONFIG_TOKEN}",
        ],
    )
    run = RunFolder(tmp_path)
    NeptuneTracker(config).begin(run, {"max_num_epochs": 2}, [], "").finish(None, None, "KILLED")
    first_id = calls[0]["custom_run_id"]
    assert "with_id" not in calls[0] and len(first_id) <= 36
    assert json.loads(run.trackers_json.read_text())["neptune"] == {
        "mode": "async",
        "custom_run_id": first_id,
        "sys_id": "CARS-7",
    }
    NeptuneTracker(config).begin(run, {"max_num_epochs": 3}, [], "", resume_at=2)
    assert calls[1]["with_id"] == "CARS-7" and "custom_run_id" not in calls[1]
    assert runs[1].fields["resumed_at_epoch"] == [2]
    assert runs[1].fields["custom_run_id"] == first_id
    assert CONFIG_TOKEN not in run.trackers_json.read_text()


def test_the_stored_tracking_uri_holds_no_password():
    assert public_uri("http://me:s3cret@host:5000/x") == "http://host:5000/x"
    assert public_uri("sqlite:////data/out/mlflow.db") == "sqlite:////data/out/mlflow.db"


def test_a_run_without_bars_logs_one_line_per_epoch_to_console_and_file(
    fast_config, tmp_path, monkeypatch, capfd
):
    monkeypatch.setattr(callbacks, "on_terminal", lambda: True)  # bars asked for and possible
    log_file = setup_logging(tmp_path / "logs")
    try:
        # batch_size above the 18 training images: one step per epoch, warned about
        run_training(fast_config("batch_size=32"), progress_bar=False)
    finally:
        root = logging.getLogger()
        for handler in [h for h in root.handlers if hasattr(h, "_cars_handler")]:
            root.removeHandler(handler)
            handler.close()
    err = capfd.readouterr().err
    written = log_file.read_text(encoding="utf-8")
    for text in (err, written):
        lines = [line for line in text.splitlines() if " - INFO - " in line and "epoch " in line]
        epochs = [line.split(" - ")[-1] for line in lines if "train_loss" in line]
        assert [e.split("  ")[0] for e in epochs] == ["epoch 1/2", "epoch 2/2"], text
        assert epochs[0].endswith("  best")  # the first epoch is the best so far
        for field in ("train_loss ", "train_acc ", "valid_loss ", "valid_acc ", "lr 1.0e-03"):
            assert field in epochs[1]
        assert "batch_size 32 is at or above the 18 training images" in text
        assert "--set batch_size=4 (5 steps per epoch)" in text
    assert "it/s" not in err  # no bars were drawn


def test_epoch_line_format_and_small_data_warning(caplog):
    metrics = {
        "epoch": 2,
        "train_loss": 1.2341,
        "train_acc": 0.5512,
        "valid_loss": 1.4563,
        "valid_acc": 0.4821,
        "lr": 0.001,
    }
    assert epoch_line(metrics, 129, 12.34) == (
        "epoch 3/129  train_loss 1.234  train_acc 55.1%  valid_loss 1.456  valid_acc 48.2%  "
        "lr 1.0e-03  12.3 s"
    )
    assert "valid_loss -" in epoch_line({"epoch": 0}, "?", 1.0)
    caplog.set_level(logging.WARNING)
    warn_small_data(64, 65)
    assert not caplog.records
    warn_small_data(64, 40)
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "batch_size 64 is at or above the 40 training images" in warning
    assert "--set batch_size=8 (5 steps per epoch)" in warning


def test_progress_bars_only_on_a_terminal(monkeypatch):
    monkeypatch.setattr(callbacks, "on_terminal", lambda: False)
    trainer = callbacks.make_trainer(
        max_epochs=1, accelerator="cpu", devices=1, callbacks=[], progress_bar=True
    )
    assert not any(isinstance(c, callbacks.EpochProgressBar) for c in trainer.callbacks)


@pytest.mark.slow  # a fresh interpreter's train.py with a new MLflow store: ~15 s
def test_c5_a_first_mlflow_run_speaks_in_the_project_format_and_warns_of_nothing(
    prepared_data, tmp_path
):
    # A fresh interpreter: MLflow sets up its own log format when it is first imported.
    config = tmp_path / "config.yml"
    config.write_text(
        f"stanford_data_path: {prepared_data}\noutput_path: {tmp_path / 'out'}\n"
        f"logging_dir: {tmp_path / 'logs'}\nimage_size: [32, 32]\nbatch_size: 4\n"
        "num_epochs: 1\nnum_workers: 0\naccelerator: cpu\n"
    )
    done = subprocess.run(
        [sys.executable, "train.py", "-c", str(config), "--no-progress"],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    logged = [line for line in done.stderr.splitlines() if line[:4].isdigit()]
    assert logged and all(" - INFO - " in line or " - WARNING - " in line for line in logged)
    assert not [line for line in logged if " - WARNING - " in line], done.stderr
    assert any("MLflow: created the experiment 'cars'" in line for line in logged)
    assert not any("alembic" in line for line in logged)
