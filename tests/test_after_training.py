"""After training: evaluate.py, predict.py and export_model.py on a run trained once on tiny data."""

from __future__ import annotations

import csv
import json
import re
import runpy
import shlex
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

import evaluate as evaluate_cli
import export_model as export_cli
import predict as predict_cli
from configuration import TEMPLATE_PATH, load_config
from datasets.prepare import prepare_dataset
from datasets.preprocessing import Preprocessing
from datasets.sample_data import make_sample_raw
from datasets.transforms import build_transform, load_image
from models.checkpoint import load_network, read_checkpoint
from utils.errors import UserError
from workflows.inference import export as export_module
from workflows.inference.export import export_checkpoint, read_torchscript_metadata
from workflows.inference.prediction import predict_paths
from workflows.training.run import run_training

ROOT = Path(__file__).resolve().parents[1]
METADATA_KEYS = ("class_names", "image_size", "mean", "std", "grayscale")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One short training run on generated data: (RunResult, prepared data folder)."""
    tmp = tmp_path_factory.mktemp("after_training")
    raw = make_sample_raw(tmp / "raw", layout="updated", num_classes=3, train_per_class=4)
    prepared = tmp / "prepared"
    prepare_dataset(raw, prepared, progress=False)
    config = load_config(
        TEMPLATE_PATH,
        overrides=[
            "num_epochs=2",
            "image_size=[64,64]",
            "batch_size=4",
            "num_workers=0",
            f"output_path={tmp / 'output'}",
            f"logging_dir={tmp / 'logs'}",
        ],
        data_path=str(prepared),
    )
    return run_training(config, progress_bar=False), prepared


def logits_for(checkpoint: Path, image_path: Path) -> torch.Tensor:
    net, meta = load_network(checkpoint)
    transform = build_transform(Preprocessing.from_dict(meta.preprocessing))
    with torch.inference_mode():
        return net(transform(load_image(image_path)).unsqueeze(0))[0]


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# ---- evaluate.py ----------------------------------------------------------------------------------
def test_evaluate_matches_logged_validation_and_writes_files(run_script, run):
    result, _ = run
    done = run_script(evaluate_cli, ["--checkpoint", str(result.best_checkpoint)])
    assert done.code == 0
    assert "top-1" in done.out

    out = result.run_dir / "evaluation" / "best-test"  # the default: inside the run folder
    metrics = json.loads((out / "metrics.json").read_text())
    epoch = read_checkpoint(result.best_checkpoint)["epoch"]
    logged = next(r for r in read_csv(result.metrics_csv) if int(r["epoch"]) == epoch)
    assert metrics["top1"] == pytest.approx(float(logged["valid_acc"]), abs=1e-4)
    # The run's own loss (LabelSmoothingCrossEntropy in the template), as logged.
    assert metrics["loss_function"] == "LabelSmoothingCrossEntropy"
    assert metrics["loss"] == pytest.approx(float(logged["valid_loss"]), abs=1e-4)
    assert {"loss", "top1", "top5", "num_images", "split", "checkpoint"} <= metrics.keys()
    assert metrics["num_images"] == 6 and metrics["split"] == "test"
    assert metrics["top5_k"] == 3 and metrics["top5"] == pytest.approx(1.0)  # 3 classes only

    per_class = read_csv(out / "per_class.csv")
    assert list(per_class[0]) == ["class_id", "class_name", "images", "correct", "accuracy"]
    assert [int(r["class_id"]) for r in per_class] == [0, 1, 2]
    assert sum(int(r["images"]) for r in per_class) == 6
    correct = sum(int(r["correct"]) for r in per_class)
    assert correct / 6 == pytest.approx(metrics["top1"], abs=1e-6)

    confused = read_csv(out / "most_confused.csv")
    assert len(confused) <= 20
    for row in confused:
        assert row["true_class_id"] != row["predicted_class_id"]
        assert row["true_class_name"] and row["predicted_class_name"] and int(row["count"]) > 0
    assert sum(int(r["count"]) for r in confused) == 6 - correct  # 3 classes: all pairs fit

    with Image.open(out / "confusion.png") as png:
        assert png.format == "PNG" and png.width > 300


def test_evaluate_json_output(run_script, run, tmp_path):
    result, prepared = run
    argv = ["--checkpoint", str(result.best_checkpoint), "-d", str(prepared)]
    argv += ["--split", "train", "--batch-size", "5", "--out", str(tmp_path), "--json"]
    done = run_script(evaluate_cli, argv)
    assert done.code == 0
    printed = json.loads(done.out)
    assert printed == json.loads((tmp_path / "metrics.json").read_text())
    assert printed["split"] == "train" and printed["num_images"] == 12
    assert 0.0 <= printed["top1"] <= printed["top5"] <= 1.0


def test_evaluate_needs_data_path_without_run_config(run, tmp_path):
    result, _ = run
    lone = tmp_path / "lone.ckpt"  # no config.yml beside it
    shutil.copy(result.best_checkpoint, lone)
    with pytest.raises(UserError, match="-d DATA_PATH"):
        evaluate_cli.main(["--checkpoint", str(lone)])


# ---- predict.py -----------------------------------------------------------------------------------
def test_predict_top1_is_the_model_argmax(run_script, run):
    result, prepared = run
    image = sorted((prepared / "test").iterdir())[0]
    argv = ["--checkpoint", str(result.best_checkpoint), str(image), "--top-k", "10", "--json"]
    done = run_script(predict_cli, argv)
    assert done.code == 0
    (entry,) = json.loads(done.out)
    assert entry["path"] == str(image)
    preds = entry["predictions"]
    assert len(preds) == 3  # top-k is capped at the number of classes
    assert sum(p["probability"] for p in preds) == pytest.approx(1.0, abs=1e-6)
    assert [p["probability"] for p in preds] == sorted(
        (p["probability"] for p in preds), reverse=True
    )
    logits = logits_for(result.best_checkpoint, image)
    assert preds[0]["class_id"] == int(logits.argmax())
    probs = torch.softmax(logits.double(), 0)
    assert preds[0]["probability"] == pytest.approx(float(probs.max()), abs=1e-6)
    _, meta = load_network(result.best_checkpoint)
    assert preds[0]["class_name"] == meta.class_names[preds[0]["class_id"]]


def test_predict_reports_broken_files_and_predicts_the_rest(run_script, run, tmp_path):
    result, prepared = run
    good = sorted((prepared / "test").iterdir())[:2]
    folder = tmp_path / "mixed"
    folder.mkdir()
    for path in good:
        shutil.copy(path, folder / path.name.upper())  # upper-case extension still counts
    (folder / "zz_text.jpg").write_text("not an image")
    data = good[0].read_bytes()
    (folder / "zz_truncated.jpg").write_bytes(data[: len(data) // 3])
    (folder / "notes.txt").write_text("ignored: not an image extension")

    argv = ["--checkpoint", str(result.best_checkpoint), str(folder)]
    captured = run_script(predict_cli, argv)
    assert captured.code == 1
    assert "zz_text.jpg" in captured.err and "zz_truncated.jpg" in captured.err
    assert "notes.txt" not in captured.err + captured.out
    for path in good:
        assert path.name.upper() in captured.out

    results, failures = predict_paths(result.best_checkpoint, [folder], top_k=1)
    assert [Path(r["path"]).name for r in results] == sorted(p.name.upper() for p in good)
    reasons = {Path(f["path"]).name: f["error"] for f in failures}
    assert sorted(reasons) == ["zz_text.jpg", "zz_truncated.jpg"]
    assert reasons["zz_text.jpg"].startswith("not an image that can be read")
    assert reasons["zz_truncated.jpg"].startswith("damaged")


def test_predict_grayscale_and_cmyk(run, tmp_path):
    result, _ = run
    rng = np.random.default_rng(0)
    paths = []
    for mode, suffix in (("L", "jpg"), ("L", "png"), ("CMYK", "jpg"), ("RGBA", "png")):
        channels = {"L": 1, "CMYK": 4, "RGBA": 4}[mode]
        pixels = rng.integers(0, 256, size=(50, 70, channels), dtype=np.uint8)
        img = Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode=mode)
        path = tmp_path / f"{mode.lower()}.{suffix}"
        img.save(path)
        paths.append(path)
    results, failures = predict_paths(result.best_checkpoint, paths, top_k=2, device="cpu")
    assert failures == []
    assert [r["path"] for r in results] == [str(p) for p in paths]
    cmyk = paths[2]
    assert results[2]["predictions"][0]["class_id"] == int(
        logits_for(result.best_checkpoint, cmyk).argmax()
    )


# ---- export_model.py ------------------------------------------------------------------------------
def test_onnx_low_opset_and_fallback_use_the_legacy_exporter(
    run_script, run, tmp_path, monkeypatch
):
    result, _ = run

    def broken(*args, **kwargs):
        raise RuntimeError("simulated dynamo exporter failure")

    monkeypatch.setattr(export_module, "_export_dynamo", broken)
    report = export_checkpoint(result.best_checkpoint, output=tmp_path, latency_runs=1)
    assert report.path == tmp_path / "model.onnx" and report.exporter == "torch.onnx legacy"
    assert report.max_abs_diff <= 1e-4  # checked at batch 1 and 3: the batch axis is dynamic
    model = onnx.load(str(report.path))
    assert {p.key for p in model.metadata_props} >= set(METADATA_KEYS)

    monkeypatch.setattr(export_module, "LATENCY_BUDGET_S", 0.0)
    argv = ["--checkpoint", str(result.best_checkpoint), "--opset", "17"]
    assert run_script(export_cli, [*argv, "--output", str(tmp_path / "m17.onnx")]).code == 0
    assert onnx.load(str(tmp_path / "m17.onnx")).opset_import[0].version == 17


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_export_loads_and_matches(run_script, run, tmp_path, monkeypatch):
    result, _ = run
    monkeypatch.setattr(export_module, "LATENCY_BUDGET_S", 0.0)  # few timing runs in tests
    output = tmp_path / "model.pt"
    argv = ["--checkpoint", str(result.best_checkpoint), "--format", "torchscript"]
    done = run_script(export_cli, [*argv, "--output", str(output)])
    assert done.code == 0
    printed = done.out
    assert "MB" in printed and "TorchScript" in printed and "PyTorch eager" in printed

    module = torch.jit.load(str(output))
    net, meta = load_network(result.best_checkpoint)
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        assert (module(images) - net(images)).abs().max() <= 1e-4
    stored = read_torchscript_metadata(output)
    assert stored["class_names"] == meta.class_names  # plain JSON values, not JSON in strings
    assert stored["grayscale"] is False


def test_export_that_fails_its_check_leaves_no_file(run, tmp_path, monkeypatch):
    result, _ = run
    monkeypatch.setattr(export_module, "TOLERANCE", -1.0)  # every export now "differs"
    output = tmp_path / "model.pt"
    with pytest.raises(UserError, match="not kept"):
        export_checkpoint(result.best_checkpoint, "torchscript", output, latency_runs=1)
    assert list(tmp_path.iterdir()) == []


# ---- user errors ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("main", "extra"),
    [(evaluate_cli, []), (predict_cli, ["some.jpg"]), (export_cli, [])],
)
def test_missing_checkpoint_exits_2(main, extra, tmp_path, run_script):
    argv = ["--checkpoint", str(tmp_path / "missing.ckpt"), *extra]
    code, _, err = run_script(main, argv)
    assert code == 2
    assert "does not exist" in err and "Traceback" not in err


@pytest.mark.parametrize("script", ["evaluate.py", "predict.py", "export_model.py"])
def test_script_exit_code_without_traceback(script, tmp_path, monkeypatch, capsys):
    """The scripts' ``__main__`` blocks, run as ``python SCRIPT ...`` would run them."""
    argv = [script, "--checkpoint", str(tmp_path / "no.ckpt")]
    monkeypatch.setattr(sys, "argv", argv + (["x.jpg"] if script == "predict.py" else []))
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(str(ROOT / script), run_name="__main__")
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err


def test_bad_arguments_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        predict_cli.main(["--checkpoint", "x.ckpt"])  # no PATH
    assert exc.value.code == 2
    assert "PATH" in capsys.readouterr().err


# ---- the README's example outputs are real output (issue 13) ----------------------------------
# Each "$ python SCRIPT ARGS" block of the README's evaluate/predict/export section is run again on
# this module's run, and every printed line must have the README line's shape: the same words,
# numbers and paths left open. A change to what the scripts print fails here until the README
# shows it.
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?%?")
_SCRIPTS = {"evaluate.py": evaluate_cli, "predict.py": predict_cli, "export_model.py": export_cli}


def line_shape(line: str) -> str:
    """A printed line with each path as PATH and each number as #."""
    return " ".join(
        "PATH" if "/" in token or "\\" in token else _NUMBER.sub("#", token)
        for token in line.split()
    )


def readme_examples() -> list[tuple[list[str], list[str]]]:
    """(command words, printed lines) of every ``$ python SCRIPT`` example in the README."""
    examples: list[tuple[list[str], list[str]]] = []
    current: list[str] | None = None
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("```") or line.startswith("$ "):
            current = None
        # The photo walkthrough's examples ran on the user's own classes: only the examples of
        # the sample run (a .ckpt path) can be run again here.
        if line.startswith("$ python ") and line.split()[2] in _SCRIPTS and ".ckpt" in line:
            current = []
            examples.append((shlex.split(line[2:])[1:], current))
        elif current is not None:
            current.append(line)
    return examples


@pytest.mark.slow
def test_readme_example_outputs_have_the_shape_of_real_output(
    run_script, run, tmp_path, monkeypatch
):
    result, prepared = run
    monkeypatch.setattr(export_module, "LATENCY_BUDGET_S", 0.0)
    photos = tmp_path / "photos"
    photos.mkdir()
    for image in sorted((prepared / "test").iterdir())[:2]:
        shutil.copy(image, photos / image.name)
    (photos / "broken.jpg").write_bytes(b"not an image")
    examples = readme_examples()
    assert {words[0] for words, _ in examples} == set(_SCRIPTS)
    for words, readme_lines in examples:
        argv = []
        for word in words[1:]:
            if word.endswith(".ckpt"):
                word = str(result.best_checkpoint)
            elif word.startswith("demo/photos/"):
                word = str(sorted(photos.glob("*.jpg"))[0])
            elif word == "demo/photos":
                word = str(photos)
            argv.append(word)
        if "--format" not in argv and words[0] == "export_model.py":
            argv += ["--output", str(tmp_path / "model.onnx")]
        elif words[0] == "export_model.py":
            argv += ["--output", str(tmp_path / "model.pt")]
        printed = run_script(_SCRIPTS[words[0]], argv)
        errors = [line for line in printed.err.splitlines() if line.startswith("error:")]
        real = [line for line in printed.out.splitlines() if line.strip()] + errors  # no bars
        expected = [line for line in readme_lines if line.strip()]
        assert [line_shape(x) for x in real] == [line_shape(x) for x in expected], words


def test_export_never_writes_over_a_checkpoint(run_script, run, tmp_path):
    result, _ = run
    before = result.best_checkpoint.read_bytes()
    for output in (result.best_checkpoint, tmp_path / "model.ckpt"):
        argv = ["--checkpoint", str(result.best_checkpoint), "--output", str(output)]
        code, _, err = run_script(export_cli, argv)
        assert code == 2 and "would overwrite a checkpoint" in err
    assert result.best_checkpoint.read_bytes() == before
    assert not (tmp_path / "model.ckpt").exists()
