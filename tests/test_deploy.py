"""The phone route: int8 ONNX (and ExecuTorch .pte) exports of a run that learned the sample data,
evaluated and used for prediction by the same scripts as checkpoints."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from typing import NamedTuple

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import evaluate as evaluate_cli
import export_model as export_cli
import predict as predict_cli
from configuration import TEMPLATE_PATH, load_config
from datasets.prepare import prepare_dataset
from datasets.sample_data import make_sample_raw
from models.checkpoint import load_network
from utils.errors import UserError, run_cli
from workflows.inference.deploy import export_model
from workflows.inference.evaluation import evaluate_checkpoint
from workflows.inference.export import ExportReport
from workflows.inference.exported import open_exported
from workflows.inference.prediction import predict_paths
from workflows.training.run import run_training

METADATA_KEYS = ("class_names", "image_size", "mean", "std", "grayscale")
REPORT_FILES = ("metrics.json", "per_class.csv", "confusion.png", "most_confused.csv")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A GhostNet that learned the sample data (4 classes, 32x32; 100% on its test split after
    10 epochs, half a minute on one CPU thread): (best checkpoint, prepared data)."""
    tmp = tmp_path_factory.mktemp("deploy")
    raw = make_sample_raw(tmp / "raw", num_classes=4, train_per_class=10, test_per_class=5)
    prepared = tmp / "prepared"
    prepare_dataset(raw, prepared, progress=False)
    config = load_config(
        TEMPLATE_PATH,
        overrides=[
            "num_epochs=10",
            "image_size=[32,32]",
            "augment_images=false",
            "batch_size=8",
            "num_workers=0",
            "seed=0",
            "log_to_mlflow=false",
            "optimizer_params={lr: 0.01}",
            f"output_path={tmp / 'output'}",
            f"logging_dir={tmp / 'logs'}",
        ],
        data_path=str(prepared),
    )
    return run_training(config, progress_bar=False).best_checkpoint, prepared


class Exports(NamedTuple):
    fp32: ExportReport
    int8: ExportReport
    int8_code: int  # export_model.py's exit code and standard output for the int8 export
    int8_printed: str


@pytest.fixture(scope="module")
def exports(trained) -> Exports:
    """fp32 and int8 ONNX exports in the run's export/ folder (the defaults): fp32 through the
    API, int8 through export_model.py, whose report is caught on its way to the printout (each
    ONNX export traces the network for ~20 s, so the CLI's own test shares this one)."""
    checkpoint, _ = trained
    fp32 = export_model(checkpoint, latency_runs=2)
    reports = []

    def export_and_keep(*args, **kwargs):
        reports.append(export_model(*args, **kwargs))
        return reports[-1]

    argv = ["--checkpoint", str(checkpoint), "--quantize", "int8", "--calibration-images", "24"]
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        patch.setattr(export_cli, "export_model", export_and_keep)
        code = exit_code(export_cli.main, argv)
    assert len(reports) == 1, printed.getvalue()
    return Exports(fp32, reports[0], code, printed.getvalue())


def exit_code(main, argv) -> int:
    with pytest.raises(SystemExit) as exc:
        run_cli(lambda: main(argv))
    return exc.value.code


# ---- fp32 ONNX -----------------------------------------------------------------------------------
def test_onnx_export_metadata(trained, exports):
    checkpoint, _ = trained
    fp32 = exports.fp32
    assert fp32.path == checkpoint.parent.parent / "export" / "model.onnx"
    assert fp32.max_abs_diff <= 1e-4
    assert fp32.size_mb > 0 and fp32.latency_ms_runtime > 0
    props = {p.key: p.value for p in onnx.load(str(fp32.path)).metadata_props}
    parsed = {key: json.loads(props[key]) for key in METADATA_KEYS}
    _, meta = load_network(checkpoint)
    assert parsed["class_names"] == meta.class_names
    assert parsed["image_size"] == [32, 32]
    assert parsed["mean"] == pytest.approx([0.4707, 0.4602, 0.4550])  # the template's
    assert parsed["std"] == pytest.approx([0.2594, 0.2585, 0.2635])
    assert parsed["grayscale"] is False
    assert not list(fp32.path.parent.glob("*.tmp"))
    assert not list(fp32.path.parent.glob("*.data"))  # weights inside the one file


def test_onnx_export_matches_torch_at_batch_1_and_3(trained, exports):
    checkpoint, _ = trained
    net, _ = load_network(checkpoint)
    session = ort.InferenceSession(str(exports.fp32.path), providers=["CPUExecutionProvider"])
    (model_input,) = session.get_inputs()
    assert model_input.name == "images"
    generator = torch.Generator().manual_seed(1)
    for batch in (1, 3):
        images = torch.rand(batch, 3, 32, 32, generator=generator)
        with torch.inference_mode():
            expected = net(images).numpy()
        (got,) = session.run(None, {"images": images.numpy()})
        assert got.shape == (batch, 4)
        assert np.abs(got - expected).max() <= 1e-4


# ---- int8 ONNX -----------------------------------------------------------------------------------
def test_int8_onnx_is_small_quantized_and_carries_the_metadata(trained, exports):
    checkpoint, _ = trained
    fp32, int8 = exports.fp32, exports.int8
    assert int8.path == checkpoint.parent.parent / "export" / "model-int8.onnx"
    assert int8.path.stat().st_size <= 0.35 * fp32.path.stat().st_size
    assert int8.fp32_size_mb == pytest.approx(fp32.size_mb, rel=0.01)
    model = onnx.load(str(int8.path))
    ops = {node.op_type for node in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    props = {p.key: p.value for p in model.metadata_props}
    fp32_props = {p.key: p.value for p in onnx.load(str(fp32.path)).metadata_props}
    assert {k: v for k, v in props.items() if k != "quantization"} == fp32_props
    quantization = json.loads(props["quantization"])
    assert (
        quantization["calibration_images"] == 24 and "per output channel" in quantization["weights"]
    )
    assert int8.agreement >= 0.9 and int8.verify_images == 20
    assert 0.0 <= int8.max_prob_diff < 0.5
    assert not [p for p in int8.path.parent.iterdir() if p.name.startswith(".")]  # no leftovers


def test_export_cli_prints_the_check(trained, exports):
    checkpoint, _ = trained
    assert exports.int8_code == 0
    out = exports.int8_printed
    assert "model-int8.onnx" in out and "held-out images" in out and "x the fp32" in out
    # C.4: what the wait is for is said before it, not only after
    assert out.startswith(f"Exporting {checkpoint} to onnx int8, then checking")
    assert exports.int8.path.is_file() and str(exports.int8.path) in out


# ---- evaluate.py and predict.py on exported files ------------------------------------------------
def test_evaluate_exported_models_match_the_checkpoint(trained, exports, capsys):
    checkpoint, _ = trained
    fp32, int8 = exports.fp32, exports.int8
    reference = evaluate_checkpoint(checkpoint, num_workers=0)
    assert reference["top1"] >= 0.7  # the run learned the sample data (chance: 0.25)
    assert exit_code(evaluate_cli.main, ["--checkpoint", str(int8.path), "--json"]) == 0
    quantized = json.loads(capsys.readouterr().out)
    run = checkpoint.parent.parent
    out = run / "evaluation" / "model-int8-test"
    for name in REPORT_FILES:
        assert (out / name).is_file()
    assert quantized == json.loads((out / "metrics.json").read_text())
    assert abs(quantized["top1"] - reference["top1"]) <= 0.1
    assert quantized["num_images"] == reference["num_images"] == 20
    assert quantized["quantization"]["calibration_images"] == 24
    plain = evaluate_checkpoint(fp32.path)
    assert plain["top1"] == pytest.approx(reference["top1"])  # same preprocessing, same network
    assert plain["top5"] == pytest.approx(reference["top5"])


def test_predict_with_int8_names_the_same_cars(trained, exports, capsys):
    checkpoint, prepared = trained
    int8 = exports.int8
    images = sorted((prepared / "test").iterdir())
    ours, failures = predict_paths(int8.path, images, top_k=2)
    reference, _ = predict_paths(checkpoint, images, top_k=2, device="cpu")
    assert not failures and len(ours) == len(reference) == 20
    same = sum(
        a["predictions"][0]["class_id"] == b["predictions"][0]["class_id"]
        for a, b in zip(ours, reference)
    )
    assert same >= 0.9 * len(images)
    for entry in ours:
        probs = [p["probability"] for p in entry["predictions"]]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    argv = ["--checkpoint", str(int8.path), str(images[0]), "--json"]
    assert exit_code(predict_cli.main, argv) == 0
    (printed,) = json.loads(capsys.readouterr().out)
    assert printed["predictions"][0] == ours[0]["predictions"][0]


# ---- bad input -----------------------------------------------------------------------------------
def test_unknown_quantize_is_refused(trained, capsys):
    checkpoint, _ = trained
    assert exit_code(export_cli.main, ["--checkpoint", str(checkpoint), "--quantize", "int4"]) == 2
    assert "int8" in capsys.readouterr().err
    with pytest.raises(UserError, match="--quantize 'int4'"):
        export_model(checkpoint, quantize="int4")


def test_missing_or_empty_calibration_split_leaves_nothing(trained, tmp_path, capsys):
    checkpoint, prepared = trained
    empty = tmp_path / "empty"
    shutil.copytree(prepared, empty)
    labels = empty / "train_labels.csv"
    labels.write_text(labels.read_text().splitlines()[0] + "\n")
    out = tmp_path / "out"
    out.mkdir()
    for data in (empty, tmp_path / "missing"):
        argv = ["--checkpoint", str(checkpoint), "--quantize", "int8", "-d", str(data)]
        assert exit_code(export_cli.main, [*argv, "--output", str(out)]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and any(
            w in err for w in ("no images", "no rows", "not found")
        ), err
    assert list(out.iterdir()) == []


def test_unwritable_output_folder(trained, tmp_path, capsys):
    checkpoint, _ = trained
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    argv = ["--checkpoint", str(checkpoint), "--quantize", "int8"]
    assert exit_code(export_cli.main, [*argv, "--output", str(blocker / "m.onnx")]) == 2
    assert "cannot write the export" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".onnx", ".pte"])
def test_files_without_this_projects_metadata_are_refused(trained, tmp_path, suffix, capsys):
    checkpoint, prepared = trained
    path = tmp_path / f"foreign{suffix}"
    if suffix == ".onnx":  # a valid ONNX model, just not one of ours
        node = onnx.helper.make_node("Identity", ["x"], ["y"])
        info = [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [1]) for n in "xy"]
        onnx.save(
            onnx.helper.make_model(onnx.helper.make_graph([node], "g", info[:1], info[1:])), path
        )
    else:
        path.write_bytes(b"not an ExecuTorch program")
    image = sorted((prepared / "test").iterdir())[0]
    for main, argv in (
        (
            evaluate_cli.main,
            ["--checkpoint", str(path), "-d", str(prepared), "--out", str(tmp_path / "ev")],
        ),
        (predict_cli.main, ["--checkpoint", str(path), str(image)]),
    ):
        assert exit_code(main, argv) == 2
        err = capsys.readouterr().err
        assert "not a model exported by this project" in err or "executorch" in err, err
    assert not (tmp_path / "ev").exists()


# ---- ExecuTorch ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_executorch_fp32_and_int8(trained, exports, tmp_path):
    pytest.importorskip("executorch")
    checkpoint, prepared = trained
    fp32 = export_model(checkpoint, "executorch", tmp_path, latency_runs=2)
    int8 = export_model(
        checkpoint, "executorch", tmp_path, quantize="int8", calibration_images=16, latency_runs=2
    )
    assert fp32.path.name == "model.pte" and int8.path.name == "model-int8.pte"
    assert int8.path.stat().st_size <= 0.35 * fp32.path.stat().st_size
    assert fp32.max_abs_diff <= 1e-3 and int8.agreement >= 0.9
    model = open_exported(int8.path)
    assert model.class_names == open_exported(exports.fp32.path).class_names
    assert "quantization" in model.metadata
    reference = evaluate_checkpoint(checkpoint, num_workers=0, out_dir=tmp_path / "ref")
    scored = evaluate_checkpoint(int8.path, prepared, out_dir=tmp_path / "pte")
    assert abs(scored["top1"] - reference["top1"]) <= 0.1
    images = sorted((prepared / "test").iterdir())[:4]
    results, failures = predict_paths(fp32.path, images, top_k=1)
    expected, _ = predict_paths(checkpoint, images, top_k=1, device="cpu")
    assert not failures
    assert [r["predictions"][0]["class_id"] for r in results] == [
        r["predictions"][0]["class_id"] for r in expected
    ]
    assert np.isclose(
        results[0]["predictions"][0]["probability"],
        expected[0]["predictions"][0]["probability"],
        atol=1e-4,
    )
