"""Shared fixtures: miniature Stanford Cars data built in the real formats, never downloaded."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
from servers import free_port

from datasets.prepare import prepare_dataset
from datasets.sample_data import make_sample_raw
from utils.errors import run_cli

NUM_CLASSES = 3


# The longest modules of the quick suite, longest first: they run first, so that under
# pytest-xdist (make test: one process per core, a module whole in one process) the short
# modules fill in around them instead of one long module running alone at the end. The rest
# keep their order. A module missing here only costs time.
LONGEST_FIRST = (
    "test_deploy.py",
    "test_resume.py",
    "test_fine_tuning.py",
    "test_after_training.py",
    "test_architectures.py",
    "test_sweep.py",
    "test_training.py",
    "test_run_lifecycle.py",
    "test_tracking.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    first = {name: rank for rank, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: first.get(item.path.name, len(first)))


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """One intra-op thread for the whole suite: GhostNet's many small ops gain little from a
    second thread, and on a busy 2-core machine two threads spin against each other and run
    several times slower. Subprocesses (the CLI tests) keep torch's default."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def prepared_data(tmp_path_factory) -> Path:
    """A prepared dataset (train/, test/, *_labels.csv) of 3 classes; treat as read-only."""
    root = tmp_path_factory.mktemp("stanford")
    raw = make_sample_raw(
        root / "raw", layout="updated", num_classes=NUM_CLASSES, train_per_class=6, test_per_class=3
    )
    out = root / "prepared"
    prepare_dataset(raw, out, progress=False)
    return out


@pytest.fixture
def fast_config(tmp_path, prepared_data):
    """A config that trains GhostNet for 2 epochs on tiny images in a few seconds."""

    from configuration import TEMPLATE_PATH, load_config

    def make(*overrides: str, data_path=None):
        return load_config(
            TEMPLATE_PATH,
            [
                "num_epochs=2",
                "image_size=[64,64]",
                "batch_size=4",
                "num_workers=0",
                "accelerator=cpu",
                f"output_path={tmp_path / 'output'}",
                f"logging_dir={tmp_path / 'logs'}",
                "log_to_mlflow=false",  # trackers are tested in test_tracking.py
                *overrides,
            ],
            data_path=str(data_path or prepared_data),
        )

    return make


class ScriptResult(NamedTuple):
    code: int
    out: str
    err: str


@pytest.fixture
def run_script(capsys, monkeypatch):
    """Run a top-level script's ``main(argv)`` in this process as its command line does
    (``run_cli``: a UserError is one line on stderr and exit code 2), from ``cwd`` when given:
    the exit code, stdout and stderr. A fresh ``python script.py`` would pay seconds of imports
    to check the same; subprocesses are kept for what needs a process (signals, DDP)."""

    def run(module, argv: list[str], cwd: Path | None = None) -> ScriptResult:
        if cwd is not None:
            monkeypatch.chdir(cwd)
        capsys.readouterr()  # what came before is not this script's
        # A fresh interpreter's root logger has no handlers (pytest's are put back after), so
        # the script sets up its own console and log file as on the command line.
        root = logging.getLogger()
        handlers, level = root.handlers[:], root.level
        root.handlers.clear()
        try:
            with pytest.raises(SystemExit) as caught:
                run_cli(lambda: module.main(argv))
        finally:
            for handler in root.handlers:
                handler.close()
            root.handlers[:] = handlers
            root.setLevel(level)
        captured = capsys.readouterr()
        return ScriptResult(caught.value.code, captured.out, captured.err)

    return run


# ---- a real PostgreSQL server (tests/test_scale_out.py) ----------------------------------------
PG_BIN_DIRS = ("/usr/lib/postgresql/15/bin",)  # Debian's postgresql-15: not on PATH
PG_USER, PG_PASSWORD = "cars", "cars-test-pw"


class PostgresServer:
    """A PostgreSQL server started for the test session on a free loopback port."""

    def __init__(self, port: int) -> None:
        self.port, self.password = port, PG_PASSWORD

    def url(self, database: str, password: str = PG_PASSWORD, scheme: str = "postgresql") -> str:
        return f"{scheme}://{PG_USER}:{password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new, empty database; returns its URL."""
        import psycopg  # noqa: PLC0415 - the optional driver, only for these tests

        with psycopg.connect(self.url("postgres"), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _pg_binaries() -> tuple[str, str] | None:
    dirs = list(PG_BIN_DIRS)
    if shutil.which("dpkg"):
        listed = subprocess.run(
            ["dpkg", "-L", "postgresql-15"], capture_output=True, text=True, check=False
        ).stdout.split()
        dirs += [os.path.dirname(p) for p in listed if p.endswith("/bin/initdb")]
    for folder in dirs:
        initdb, pg_ctl = os.path.join(folder, "initdb"), os.path.join(folder, "pg_ctl")
        if os.access(initdb, os.X_OK) and os.access(pg_ctl, os.X_OK):
            return initdb, pg_ctl
    return None


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """Starts PostgreSQL 15 once for the session in a temporary data folder, as an unprivileged
    user when the tests run as root (PostgreSQL refuses root), and stops it by its PID at the
    end. Skipped, saying why, where the binaries or the driver are missing."""
    binaries = _pg_binaries()
    if binaries is None:
        pytest.skip("PostgreSQL 15 is not installed (no initdb/pg_ctl of Debian's postgresql-15)")
    pytest.importorskip("psycopg", reason="the PostgreSQL driver (postgres_requirements.txt)")
    initdb, pg_ctl = binaries
    as_user: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="cars-pg-"))
    if os.geteuid() == 0:
        if subprocess.run(["id", "-u", "postgres"], capture_output=True).returncode != 0:
            subprocess.run(["useradd", "--system", "--no-create-home", "postgres"], check=True)
        shutil.chown(folder, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, password_file = folder / "data", folder / "password"
    password_file.write_text(PG_PASSWORD)
    if as_user:
        shutil.chown(password_file, "postgres")
    port = free_port()
    quiet = {"capture_output": True, "text": True, "cwd": folder}
    made = subprocess.run(
        [*as_user, initdb, "-D", str(data), "-U", PG_USER, "--auth=scram-sha-256",
         f"--pwfile={password_file}"],
        **quiet,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c max_connections=100"
    started = subprocess.run(
        [*as_user, pg_ctl, "-D", str(data), "-o", options, "-l", str(folder / "log"), "-w",
         "-t", "120", "start"],
        **quiet,
    )  # fmt: skip
    log_text = (folder / "log").read_text() if (folder / "log").exists() else ""
    assert started.returncode == 0, started.stderr + log_text
    pid = int((data / "postmaster.pid").read_text().split()[0])
    try:
        yield PostgresServer(port)
    finally:
        os.kill(pid, signal.SIGINT)  # "fast" shutdown: ends the sessions, then the server
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.2)
        shutil.rmtree(folder, ignore_errors=True)
