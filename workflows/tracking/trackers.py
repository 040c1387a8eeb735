"""Experiment trackers as Lightning loggers: MLflow (on by default, a SQLite store in
``output_path``), TensorBoard (event files in the run folder) and Neptune (the ``neptune`` client
directly; ``offline`` keeps the run in the run folder's ``.neptune/`` for ``neptune sync``).

Every tracker gets the run's name, the thesis's parameters (``thesis_params``), its tags and
description, the four metrics and ``lr`` once per epoch with the epoch as step, and the summary
at the end, apart from the per-epoch series (MLflow: tags ``summary.max_valid_acc``, ...; so
that a run's chart page shows only the curves); the end of a run names its MLflow page. A tracker that fails
or does not answer in time warns once, naming the fix, and is off for the rest of the run:
trackers never stop or stall training. A resumed run goes on in
the tracker runs it logged to before (``workflows.tracking.continuation``).
"""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import MLFlowLogger, TensorBoardLogger

from configuration import Config
from utils.text import shown_path, without_credentials
from workflows.runs.figures import plot_learning_curves
from workflows.runs.records import load_run
from workflows.runs.run_folder import RunFolder
from workflows.runs.stores import open_store, sqlite_url
from workflows.tracking.base import END_TIMEOUT_S, Tracker
from workflows.tracking.continuation import (
    MLFLOW,
    NEPTUNE,
    continue_mlflow_run,
    mlflow_identity,
    mlflow_run_to_continue,
    neptune_run_kwargs,
    public_uri,
)
from workflows.tracking.params import as_text_params, thesis_params

log = logging.getLogger(__name__)

MLFLOW_DB = "mlflow.db"
MLFLOW_ARTIFACTS = "mlartifacts"
TENSORBOARD_DIR = "tensorboard"
NEPTUNE_DIR = ".neptune"
LEARNING_CURVES = "learning_curves.png"
# Without these MLflow retries an unreachable server for minutes per call.
_MLFLOW_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
# MLflow gives its loggers a handler and format of its own when it is imported; without it they
# pass through the project's (console and log file, one format).
_MLFLOW_OWN_LOGGING = "MLFLOW_CONFIGURE_LOGGING"
SUMMARY_TAG = "summary."  # MLflow: the summary as tags, apart from the per-epoch series
_SUMMARY_METRICS = (
    "epochs_run",
    "best_epoch",
    "min_train_loss",
    "min_valid_loss",
    "max_train_acc",
    "max_valid_acc",
    "duration_s",
)


def mlflow_uri(config: Config) -> str:
    """The configured tracking URI, else the SQLite store ``<output_path>/mlflow.db``."""
    if config.mlflow_tracking_uri:
        return config.mlflow_tracking_uri
    return sqlite_url(config.output_path, MLFLOW_DB)


def neptune_token(config: Config) -> str | None:
    """The token from the config (a template placeholder counts as none), else from the
    ``NEPTUNE_API_TOKEN`` environment variable."""
    token = config.neptune_api_token.get_secret_value() if config.neptune_api_token else ""
    if token.strip() and not token.strip().startswith("<"):
        return token
    return os.environ.get("NEPTUNE_API_TOKEN") or None


class MlflowTracker(Tracker):
    label = "MLflow"

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.uri = mlflow_uri(config)
        self.fix = (
            f"Check mlflow_tracking_uri ('{without_credentials(self.uri)}'): start the server or point it at a "
            "reachable one, or set log_to_mlflow: False."
        )
        if self.uri.startswith(("http://", "https://")):
            for key, value in _MLFLOW_HTTP_DEFAULTS.items():
                os.environ.setdefault(key, value)
        os.environ.setdefault(_MLFLOW_OWN_LOGGING, "false")
        self.experiment_name = config.mlflow_experiment
        self.artifact_location = None
        if not config.mlflow_tracking_uri:  # our own store: its artifacts beside it
            self.artifact_location = (
                Path(config.output_path).resolve() / MLFLOW_ARTIFACTS
            ).as_uri()
        self.inner: MLFlowLogger | None = None

    def _begin(self, run, params, tags, description):
        run_tags = {_mlflow_key(t): "true" for t in tags}
        run_tags["tags"] = ", ".join(tags)
        if description:
            run_tags["mlflow.note.content"] = description  # shown as the run's description
        # ---- resume: the MLflow run of trackers.json, when it can go on
        continued = None
        if self.resume_at is not None:
            client = importlib.import_module("mlflow.tracking").MlflowClient(self.uri)
            stored = run.read_trackers().get(MLFLOW)
            continued = mlflow_run_to_continue(stored, self.uri, client.get_run)
        self.inner = MLFlowLogger(
            experiment_name=self.experiment_name,
            run_name=run.name,
            tracking_uri=self.uri,
            tags=run_tags,
            artifact_location=self.artifact_location,
            synchronous=True,
            run_id=continued,
        )
        inner = self.inner

        def open_run() -> str:  # makes the store, the experiment and the run
            self._make_experiment()
            return inner.run_id

        open_store(self.uri, open_run)
        if continued is None:
            self.inner.log_hyperparams(as_text_params(params))
        else:
            continue_mlflow_run(
                self.inner.experiment,
                continued,
                as_text_params(params),
                run_tags,
                self.resume_at,
                self.inner.log_hyperparams,
            )
        run.record_tracker(
            MLFLOW, mlflow_identity(self.uri, self.inner.experiment_id, self.inner.run_id)
        )

    def _make_experiment(self) -> None:
        """Creates the experiment on a new store, as news rather than Lightning's warning that
        it was not found."""
        client = importlib.import_module("mlflow.tracking").MlflowClient(self.uri)
        if client.get_experiment_by_name(self.experiment_name) is not None:
            return
        try:
            client.create_experiment(self.experiment_name, artifact_location=self.artifact_location)
        except Exception:
            if client.get_experiment_by_name(self.experiment_name) is None:
                raise
            return  # another process of a sweep made it first
        log.info(
            "MLflow: created the experiment '%s' in %s",
            self.experiment_name,
            without_credentials(self.uri),
        )

    def _log(self, values, epoch):
        self.inner.log_metrics(values, step=epoch)

    def _end(self, run, summary):
        client, run_id = self.inner.experiment, self.inner.run_id
        # Tags, not metrics: MLflow 3 charts every metric, a one-value one as a bar, and puts
        # any prefixed group above the per-epoch series; tags show on the run's overview and
        # as columns of the runs table, and a resumed run overwrites them.
        for key in (*_SUMMARY_METRICS, "early_stopped", "interrupted"):
            client.set_tag(run_id, SUMMARY_TAG + key, _tag_value(summary.get(key)))
        for path in (run.config_yml, run.metrics_csv, run.summary_json, run.path / LEARNING_CURVES):
            if path.is_file():
                client.log_artifact(run_id, str(path))

    def _close(self, status):
        if self.inner is not None:
            self.inner.experiment.set_terminated(self.inner.run_id, status)

    def how_to_open(self) -> str | None:
        """Where to see this run: the ``mlflow ui`` command for a local store, and the run's
        page (``#/experiments/<id>/runs/<run id>``); None before the run exists."""
        # MLFlowLogger.run_id would make a run when there is none: its attribute says.
        if self.inner is None or self.inner._run_id is None:
            return None
        page = f"#/experiments/{self.inner.experiment_id}/runs/{self.inner.run_id}"
        page += "?workflowType=machine_learning"  # MLflow 3 opens on its GenAI pages otherwise
        if self.uri.startswith(("http://", "https://")):
            return f"MLflow: open {public_uri(self.uri).rstrip('/')}/{page}"
        if self.uri.startswith("sqlite:///"):
            store = Path(self.uri[len("sqlite:///") :])
            command = (
                f"mlflow ui --backend-store-uri sqlite:///{Path(shown_path(store)).as_posix()}"
            )
        else:
            command = f"mlflow ui --backend-store-uri {public_uri(self.uri)}"
        return f"MLflow: {command}, then open http://127.0.0.1:5000/{page}"


class TensorBoardTracker(Tracker):
    label = "TensorBoard"
    fix = "Check that the run folder is writable, or set log_to_tensorboard: False."

    def __init__(self) -> None:
        super().__init__()
        self.inner: TensorBoardLogger | None = None

    def _begin(self, run, params, tags, description):
        # resume: the same folder; the writer hides the values the interrupted process logged
        # from the resumed epoch on (TensorBoard's purge_step), and the texts go at that step
        resume = {} if self.resume_at is None else {"purge_step": self.resume_at}
        self.inner = TensorBoardLogger(
            save_dir=str(run.path),
            name=TENSORBOARD_DIR,
            version="",
            default_hp_metric=False,
            **resume,
        )
        writer = self.inner.experiment
        writer.add_text("run", run.name, self.resume_at)
        writer.add_text("tags", ", ".join(tags) or "(none)", self.resume_at)
        if description:
            writer.add_text("description", description, self.resume_at)
        if self.resume_at is not None:
            writer.add_text("resumed", f"resumed at epoch {self.resume_at}", self.resume_at)
        self.inner.log_hyperparams(as_text_params(params))

    def _log(self, values, epoch):
        self.inner.log_metrics(values, step=epoch)

    def _end(self, run, summary):
        writer = self.inner.experiment
        step = max(0, int(summary.get("epochs_run") or 1) - 1)
        for key in _SUMMARY_METRICS:
            value = summary.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                writer.add_scalar(f"summary/{key}", value, step)

    def _close(self, status):
        if self.inner is not None:
            self.inner.finalize("success" if status == "FINISHED" else "failed")


class NeptuneTracker(Tracker):
    """Our own small Lightning logger on the ``neptune`` client (Lightning 2.6 dropped its
    NeptuneLogger)."""

    label = "Neptune"

    def __init__(self, config: Config) -> None:
        self.token = neptune_token(config)
        super().__init__(secrets=(self.token or "",))
        self.mode = config.neptune_mode
        self.project = _neptune_project(config)
        self.fix = (
            "Check neptune_username, neptune_project_name and the token (neptune_api_token or "
            "NEPTUNE_API_TOKEN) and that the server is reachable, use neptune_mode: offline, "
            "or set log_to_neptune: False."
        )
        self.run = None

    def _begin(self, run, params, tags, description):
        # Imported only when asked for: the client takes seconds to import.
        neptune = importlib.import_module("neptune")
        local = self.mode in ("offline", "debug")
        stored = run.read_trackers().get(NEPTUNE) if self.resume_at is not None else None
        same_run, custom_id = neptune_run_kwargs(stored, local, self.resume_at)
        previous = os.environ.get("NEPTUNE_DATA_DIRECTORY")
        os.environ["NEPTUNE_DATA_DIRECTORY"] = str(run.path / NEPTUNE_DIR)
        try:
            self.run = neptune.init_run(
                project=self.project,
                api_token=None if local else self.token,
                mode=self.mode,
                name=run.name,
                description=description or "",
                tags=list(tags),
                source_files=[],
                capture_stdout=False,
                capture_stderr=False,
                capture_hardware_metrics=False,
                capture_traceback=False,
                git_ref=False,
                **same_run,
            )
        finally:
            if previous is None:
                os.environ.pop("NEPTUNE_DATA_DIRECTORY", None)
            else:
                os.environ["NEPTUNE_DATA_DIRECTORY"] = previous
        self.run["parameters"] = {k: _neptune_value(v) for k, v in params.items()}
        self.run["custom_run_id"] = custom_id  # links the segments of an offline run
        if self.resume_at is not None:
            self.run["resumed_at_epoch"].append(self.resume_at)
        identity = {"mode": self.mode, "custom_run_id": custom_id}
        if not local:
            identity["sys_id"] = self.run["sys/id"].fetch()
        run.record_tracker(NEPTUNE, identity)

    def _log(self, values, epoch):
        for key, value in values.items():
            self.run[key].append(value, step=epoch)

    def _end(self, run, summary):
        self.run["summary"] = {
            k: _neptune_value(v) for k, v in summary.items() if k != "best_checkpoint"
        }

    def _close(self, status):
        if self.run is not None:
            self.run.stop(seconds=END_TIMEOUT_S / 2)


def build_trackers(config: Config) -> list[Tracker]:
    """The trackers the config switches on, not yet started (``start_trackers``)."""
    trackers: list[Tracker] = []
    if config.log_to_mlflow:
        trackers.append(MlflowTracker(config))
    if config.log_to_tensorboard:
        trackers.append(TensorBoardTracker())
    if config.log_to_neptune:
        trackers.append(NeptuneTracker(config))
    return trackers


def start_trackers(
    trackers: list[Tracker],
    config: Config,
    run: RunFolder,
    num_params: int,
    runtime: str,
    resume_at: int | None = None,
) -> None:
    """Open each tracker's run: name, the thesis's parameters, tags and description. One
    that fails to start warns and stays off. ``resume_at``: the first epoch of a resumed run,
    which goes on in the tracker runs it logged to before."""
    if not trackers:
        return
    params = thesis_params(config, num_params, runtime)
    for tracker in trackers:
        tracker.begin(run, params, list(config.tags), config.description or "", resume_at)


def finish_trackers(
    trackers: list[Tracker],
    run: RunFolder | None = None,
    summary: dict[str, Any] | None = None,
    status: str = "FINISHED",
) -> None:
    """Send the summary and close every tracker; ``status`` FAILED or KILLED when the run
    ended badly."""
    if run is not None and any(isinstance(t, MlflowTracker) and t.active for t in trackers):
        record = load_run(run.path)  # drawn here: local work, not part of a tracker's time
        if record is not None and record.rows:
            plot_learning_curves(record, run.path / LEARNING_CURVES)
    for tracker in trackers:
        tracker.finish(run, summary, status)
        hint = tracker.how_to_open() if isinstance(tracker, MlflowTracker) else None
        if hint and tracker.active:
            log.info("%s", hint)


def _neptune_project(config: Config) -> str | None:
    parts = [config.neptune_username, config.neptune_project_name]
    if all(p and not p.strip().startswith("<") for p in parts):
        return f"{parts[0]}/{parts[1]}"
    return None  # the client then reads NEPTUNE_PROJECT; offline mode needs none


def _neptune_value(value: Any) -> Any:
    """Neptune keeps 32-bit integers only (a run seed can be larger) and no None or lists."""
    if isinstance(value, bool | float | str):
        return value
    if isinstance(value, int) and -(2**31) <= value < 2**31:
        return value
    return str(value)


def _tag_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _mlflow_key(tag: str) -> str:
    return "".join(c if c.isalnum() or c in "_-. /:" else "_" for c in tag)
