"""The Neptune token, from the config or from NEPTUNE_API_TOKEN, never lands in the console,
a log file, the run's config.yml, a checkpoint, a tracker's store or a report; nor does the
user name and password of a URL (an MLflow server's, a sweep's database)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml
from servers import free_port

import train
from utils.errors import UserError
from utils.text import without_credentials
from workflows.runs import stores
from workflows.sweep import liveness
from workflows.sweep import study as sweep_study
from workflows.training.run import run_training

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "nep-SECRET-0a1b2c3d4e5f-token"


@pytest.mark.slow
@pytest.mark.parametrize("way", ["config", "environment"])
def test_the_token_is_written_nowhere(tmp_path, prepared_data, way, monkeypatch, run_script):
    config = tmp_path / "config.yml"
    text = (ROOT / "config_template.yml").read_text()
    monkeypatch.delenv("NEPTUNE_API_TOKEN", raising=False)
    if way == "config":  # the template's placeholder line, filled in
        text = text.replace("'<neptune.ai API token>'", f"'{TOKEN}'", 1)
        assert TOKEN in text
    else:
        monkeypatch.setenv("NEPTUNE_API_TOKEN", TOKEN)
    config.write_text(text)
    sets = [
        "image_size=[48,48]",
        "batch_size=4",
        "num_workers=0",
        "accelerator=cpu",
        "num_epochs=1",
        "log_to_neptune=true",
        "neptune_mode=offline",
        "log_to_tensorboard=true",
        "loglevel=DEBUG",
        f"output_path={tmp_path / 'output'}",
        f"logging_dir={tmp_path / 'logs'}",
    ]
    argv = ["-c", str(config), "-d", str(prepared_data), "--no-progress"]
    for item in sets:
        argv += ["--set", item]
    code, out, err = run_script(train, argv, cwd=tmp_path)
    assert code == 0, err
    assert TOKEN not in out and TOKEN not in err
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p != config]
    assert any(p.suffix == ".ckpt" for p in written) and any(
        p.name == "config.yml" for p in written
    )
    leaks = [p for p in written if TOKEN.encode() in p.read_bytes()]
    assert leaks == []


URL_PASSWORD = "S3cretPw"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://alice:S3cretPw@127.0.0.1:5917", "http://127.0.0.1:5917"),
        ("postgresql://alice:S3c@ret@db:1/sweeps", "postgresql://db:1/sweeps"),
        (
            "failed: 'https://bob@h/api/x?a=b@c' (refused)",
            "failed: 'https://h/api/x?a=b@c' (refused)",
        ),
        ("sqlite:////data/a@b/mlflow.db", "sqlite:////data/a@b/mlflow.db"),
        ("write to alice@example.com", "write to alice@example.com"),
    ],
)
def test_url_credentials_are_removed_and_nothing_else(text, expected):
    assert without_credentials(text) == expected


def test_mlflow_url_password_is_not_written_or_logged(tmp_path, fast_config, caplog):
    # issue 23 A.6: the password landed in <run>/config.yml (which MLflow keeps as the run's
    # artifact) and, with the server down, in the log's warning
    uri = f"http://alice:{URL_PASSWORD}@127.0.0.1:{free_port()}"  # nothing listens there
    config = fast_config(
        "num_epochs=1", "image_size=[32,32]", "log_to_mlflow=true", f"mlflow_tracking_uri={uri}"
    )
    with caplog.at_level(logging.INFO):
        result = run_training(config, progress_bar=False)
    assert "MLflow tracker" in caplog.text and URL_PASSWORD not in caplog.text
    saved = yaml.safe_load((result.run_dir / "config.yml").read_text())
    assert saved["mlflow_tracking_uri"] == without_credentials(uri)
    leaks = [
        p for p in tmp_path.rglob("*") if p.is_file() and URL_PASSWORD.encode() in p.read_bytes()
    ]
    assert leaks == []


def test_sweep_storage_password_is_not_echoed(tmp_path, fast_config, monkeypatch, caplog):
    # issue 23 A.6: --sweep-storage 'postgresql://alice:S3cretPass@...' was echoed on stderr
    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump(fast_config("num_epochs=1").to_public_dict()))
    storage = f"postgresql://alice:{URL_PASSWORD}@127.0.0.1:1/sweeps"
    monkeypatch.setattr(stores.time, "sleep", lambda seconds: None)  # the opening retries
    with caplog.at_level(logging.INFO), pytest.raises(UserError) as info:
        sweep_study.run_sweep(config, [], None, ["seed=1,2"], storage=storage)
    assert "postgresql://127.0.0.1:1/sweeps" in str(info.value)
    assert URL_PASSWORD not in str(info.value) + caplog.text
    # a storage that opens: the sweep's log line and result name it without the password
    local = f"sqlite:///{(tmp_path / 'sweeps.db').as_posix()}"

    class LocalStorage(liveness.BeatingStorage):
        def __init__(self, url, **kwargs):
            super().__init__(local, **kwargs)

    monkeypatch.setattr(liveness, "BeatingStorage", LocalStorage)
    monkeypatch.setattr(sweep_study, "_waiting", lambda study: False)  # open it, train nothing
    caplog.clear()
    with caplog.at_level(logging.INFO):
        result = sweep_study.run_sweep(config, [], None, ["seed=1,2"], storage=storage)
    assert result.storage == "postgresql://127.0.0.1:1/sweeps"
    assert "postgresql://127.0.0.1:1/sweeps" in caplog.text and URL_PASSWORD not in caplog.text
