"""Checkpoints written by the first release (format 1) still evaluate, predict and export."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import evaluate as evaluate_cli
import export_model as export_cli
import predict as predict_cli

RUN_V1 = Path(__file__).parent / "data" / "run_v1"
EXPECTED = json.loads((RUN_V1 / "expected.json").read_text())


@pytest.fixture
def run_v1(tmp_path) -> Path:
    """A writable copy of the format-1 run folder (evaluation writes into it)."""
    return Path(shutil.copytree(RUN_V1, tmp_path / RUN_V1.name))


def test_v1_checkpoint_evaluates_as_it_did(run_v1, prepared_data, capsys):
    checkpoint = run_v1 / "checkpoints" / "best.ckpt"
    code = evaluate_cli.main(
        [
            "--checkpoint",
            str(checkpoint),
            "-d",
            str(prepared_data),
            "--json",
            "--num-workers",
            "0",
            "--no-progress",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    metrics = json.loads(capsys.readouterr().out)
    expected = EXPECTED["evaluation"]
    assert metrics["loss"] == pytest.approx(expected["loss"], abs=1e-5)
    for key in ("top1", "top5"):
        assert metrics[key] == pytest.approx(expected[key], abs=1e-6)
    for key in ("num_images", "epoch", "top5_k", "num_classes", "loss_function"):
        assert metrics[key] == expected[key]
    assert (run_v1 / "evaluation" / "best-test" / "metrics.json").is_file()


def test_v1_checkpoint_predicts_as_it_did(run_v1, prepared_data, capsys):
    expected = EXPECTED["prediction"]
    image = prepared_data / "test" / expected["image"]
    code = predict_cli.main(
        [
            "--checkpoint",
            str(run_v1 / "checkpoints" / "best.ckpt"),
            str(image),
            "--json",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    best = json.loads(capsys.readouterr().out)[0]["predictions"][0]
    assert best["class_id"] == expected["class_id"]
    assert best["probability"] == pytest.approx(expected["probability"], abs=1e-6)


def test_v1_checkpoint_exports(run_v1, tmp_path, capsys):
    output = tmp_path / "model.pt"
    code = export_cli.main(
        [
            "--checkpoint",
            str(run_v1 / "checkpoints" / "best.ckpt"),
            "--format",
            "torchscript",
            "--output",
            str(output),
        ]
    )
    assert code == 0
    assert output.is_file()
    assert "max |logit difference|" in capsys.readouterr().out
