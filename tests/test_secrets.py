"""The Neptune token, from the config or from NEPTUNE_API_TOKEN, never lands in the console,
a log file, the run's config.yml, a checkpoint, a tracker's store or a report."""

from __future__ import annotations

from pathlib import Path

import pytest

import train

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
