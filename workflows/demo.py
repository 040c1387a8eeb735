"""``make demo``: the whole workflow on a small generated dataset, on the CPU, in a few minutes.

Builds a sample download in the Stanford Cars "updated" format, prepares it, trains GhostNet
for a few epochs with the template's settings (smaller images), then evaluates the best
checkpoint, predicts a few images and exports ONNX, printing where every output is.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from configuration import TEMPLATE_PATH, load_config
from datasets.prepare import prepare_dataset
from datasets.sample_data import make_sample_raw
from utils.errors import UserError
from utils.files import write_yaml_atomic
from utils.logger import setup_logging
from workflows.inference.evaluation import evaluate_checkpoint
from workflows.inference.export import export_checkpoint
from workflows.inference.prediction import predict_paths
from workflows.training.run import run_training

# The template's settings, scaled down for a CPU. The sample classes differ by the colour of the
# car's box, so the hue jitter (which would repaint them) is off; small batches give GhostNet's
# BatchNorm layers enough steps to settle their running statistics on 72 images.
DEMO_OVERRIDES = (
    "num_epochs=12",
    "image_size=[64,64]",
    "batch_size=8",
    "image_augmentations.ColorJitter.hue=0",
    "accelerator=cpu",
    "devices=1",
    "num_workers=0",  # decoding 64-pixel images is cheaper than feeding worker processes
)


# Marks a folder as the demo's own: only such a folder (or a new or empty one) is written to,
# because the demo replaces its raw/, stanford/ and config.yml.
DEMO_MARK = ".cars-demo"


def run_demo(demo_dir: str | Path, epochs: int | None = None, classes: int = 6) -> dict:
    """Run the demo in ``demo_dir`` (new, empty, or an earlier demo's); returns the paths of
    everything it made."""
    demo_dir = Path(demo_dir)
    _claim(demo_dir)
    raw_dir = demo_dir / "raw"
    data_dir = demo_dir / "stanford"
    print(f"[1/6] Building a sample Stanford Cars download ('updated' format) in {raw_dir}")
    if raw_dir.exists():
        shutil.rmtree(raw_dir)
    make_sample_raw(
        raw_dir, layout="updated", num_classes=classes, train_per_class=12, test_per_class=6
    )

    print(f"[2/6] Preparing it into {data_dir}")
    prepare_dataset(raw_dir, data_dir, force=True, progress=False)

    overrides = [
        *DEMO_OVERRIDES,
        f"stanford_raw_data_path={raw_dir}",
        f"stanford_data_path={data_dir}",
        f"output_path={demo_dir / 'output'}",
        f"logging_dir={demo_dir / 'logs'}",
    ]
    if epochs is not None:
        overrides.append(f"num_epochs={epochs}")
    config = load_config(TEMPLATE_PATH, overrides)
    config_path = write_yaml_atomic(demo_dir / "config.yml", config.to_public_dict())
    setup_logging(config.logging_dir, "WARNING")
    print(
        f"[3/6] Training GhostNet for {config.num_epochs} epochs on the CPU (config: {config_path})"
    )
    result = run_training(config, progress_bar=True)
    summary = result.summary
    print(
        f"      {summary['epochs_run']} epochs; best epoch {summary['best_epoch']}: "
        f"min valid_loss {summary['min_valid_loss']:.4f}, max valid_acc {summary['max_valid_acc']:.2%}"
    )
    print(f"      run folder:      {result.run_dir}")
    print(f"      metrics:         {result.metrics_csv}")
    print(f"      summary:         {result.run_dir / 'summary.json'}")
    print(f"      best checkpoint: {result.best_checkpoint}")
    outputs = {"run_dir": str(result.run_dir), "best_checkpoint": str(result.best_checkpoint)}
    outputs.update(_after_training(result.best_checkpoint, data_dir))
    return outputs


def _claim(demo_dir: Path) -> None:
    """Make ``demo_dir`` the demo's, refusing a file or a folder holding anything else."""
    shown = str(demo_dir) or "."
    if demo_dir.exists() and not demo_dir.is_dir():
        raise UserError(f"--dir '{shown}' is a file. Pass a new folder, e.g. --dir demo.")
    if demo_dir.is_dir() and any(demo_dir.iterdir()) and not (demo_dir / DEMO_MARK).is_file():
        raise UserError(
            f"--dir '{shown}' holds files the demo did not make, and the demo replaces raw/, "
            "stanford/ and config.yml in its folder. Pass a new or empty folder (e.g. --dir "
            "demo2), or delete this one if an earlier version of the demo made it."
        )
    try:
        demo_dir.mkdir(parents=True, exist_ok=True)
        (demo_dir / DEMO_MARK).write_text("made by demo.py, which may replace what is here\n")
    except OSError as err:
        raise UserError(
            f"cannot write the demo folder '{shown}' ({err.strerror or err}). Pass a folder you "
            "can write to with --dir."
        ) from None


def _after_training(checkpoint: Path, data_dir: Path) -> dict:
    print(f"[4/6] Evaluating {checkpoint.name} on the test split")
    metrics = evaluate_checkpoint(checkpoint, data_path=data_dir, split="test")
    print(
        f"      top-1 {metrics['top1']:.2%}, top-5 {metrics['top5']:.2%}, loss {metrics['loss']:.4f}"
    )
    print(f"      outputs in:      {metrics['out_dir']}")

    images = sorted((data_dir / "test").iterdir())[:3]
    print(f"[5/6] Predicting {len(images)} test images")
    results, _failures = predict_paths(checkpoint, images, top_k=3, device="cpu")
    for item in results:
        best = item["predictions"][0]
        print(f"      {Path(item['path']).name}: {best['class_name']} ({best['probability']:.1%})")

    print("[6/6] Exporting to ONNX")
    report = export_checkpoint(checkpoint, fmt="onnx")
    print(
        f"      {report.path} ({report.size_mb:.1f} MB), max |logit diff| vs PyTorch "
        f"{report.max_abs_diff:.1e}, latency {report.latency_ms_runtime:.1f} ms (ONNX Runtime) vs "
        f"{report.latency_ms_eager:.1f} ms (PyTorch eager)"
    )
    return {"evaluation": str(metrics["out_dir"]), "onnx": str(report.path)}
