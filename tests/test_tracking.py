"""Experiment trackers: MLflow (SQLite store and a real server over HTTP), TensorBoard and
Neptune offline get the run's parameters under the thesis's names, every epoch's metrics with
the epoch as step, tags and description; a dead or hanging tracker never stops a run; the
Neptune token is written nowhere."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from configuration import TEMPLATE_PATH, load_config
from workflows import tracking
from workflows.run_folder import RunFolder
from workflows.tracking import (
    MlflowTracker,
    Tracker,
    finish_trackers,
    mlflow_uri,
    thesis_params,
)
from workflows.training import run_training

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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
    assert mlrun.data.params["architecture"] == "ghost"
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
    assert mlrun.data.metrics["max_valid_acc"] == pytest.approx(rows["max_valid_acc"])
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
    assert set(THESIS_PARAMS) <= set(params) and params["architecture"] == "ghost"
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
        "num_epochs=1", "log_to_mlflow=true", f"mlflow_tracking_uri=http://127.0.0.1:{_free_port()}"
    )
    caplog.set_level(logging.WARNING)
    result = run_training(config, progress_bar=False)
    assert result.summary["epochs_run"] == 1
    assert result.run.summary_json.is_file()
    warnings = [r.getMessage() for r in caplog.records if r.name == "workflows.tracking"]
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
    monkeypatch.setattr(tracking, "CALL_TIMEOUT_S", 0.2)
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
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination",
            str(tmp_path / "server-artifacts"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its workers go with it at the end
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300  # a busy machine starts it in minutes
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, "mlflow server exited"
            assert time.monotonic() < deadline, "mlflow server did not start"
            time.sleep(0.5)

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

        request = urllib.request.Request(
            f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=http-test"
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            experiment_id = json.load(answer)["experiment"]["experiment_id"]
        search = urllib.request.Request(
            f"{base}/api/2.0/mlflow/runs/search",
            data=json.dumps({"experiment_ids": [experiment_id]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(search, timeout=10) as answer:
            (found,) = json.load(answer)["runs"]
        assert found["info"]["run_name"] == run.name
        params = {p["key"]: p["value"] for p in found["data"]["params"]}
        assert params["optimizer"] == "AdamW" and set(THESIS_PARAMS) <= set(params)
        assert {t["key"]: t["value"] for t in found["data"]["tags"]}["4.2.11"] == "true"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
