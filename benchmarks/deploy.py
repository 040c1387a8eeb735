"""``deploy`` section of ``benchmarks/run.py``: what each phone-ready format costs and keeps.

For one trained checkpoint (``--deploy-checkpoint RUN``; without it a GhostNet trained here on
the generated sample data, 5 classes, at 227x227, or 64x64 with ``--quick``) every format, as
``export_model.py`` writes it into the run's ``export/`` folder (used when already there, else
exported first): the checkpoint on torch (its weights), ONNX fp32, ONNX int8 and, when
the executorch package is installed, ExecuTorch ``.pte`` fp32 and int8. Rows, each against ONNX
fp32 as the baseline (``ratio`` is "times better", as in every section):

- ``deploy/<format>/size``: file size in MB;
- ``deploy/<format>/latency_1_thread`` and ``latency_all_cores``: median single-image latency
  at the model's image size, one CPU thread and every core;
- ``deploy/<format>/agreement``: top-1 agreement with the checkpoint on the test split;
- ``deploy/<format>/top1``: top-1 accuracy on the test split.
"""

from __future__ import annotations

import importlib.util
import io
import multiprocessing
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from configuration import TEMPLATE_PATH, load_config
from datasets.prepare import prepare_dataset
from datasets.preprocessing import Preprocessing
from datasets.sample_data import make_sample_raw
from models.checkpoint import load_network
from utils.hardware import available_cpus
from utils.timer import median_ms
from workflows.inference.calibration import (
    VERIFY_SPLIT,
    reference_logits,
    split_images,
)
from workflows.inference.deploy import default_name, export_model
from workflows.inference.exported import open_exported, set_pte_threads
from workflows.runs.run_folder import RunFolder
from workflows.training.run import run_training

TEST_IMAGES = 500
IMAGE_SIZE = 227  # the thesis's


def train_sample(root: Path, image_size: int, epochs: int) -> Path:
    """A GhostNet trained on the generated sample data (5 classes); its best checkpoint."""
    raw = make_sample_raw(
        root / "raw", num_classes=5, train_per_class=24, test_per_class=10, seed=1
    )
    prepared = root / "prepared"
    prepare_dataset(raw, prepared, progress=False)
    config = load_config(
        TEMPLATE_PATH,
        overrides=[
            f"num_epochs={epochs}",
            f"image_size=[{image_size},{image_size}]",
            "batch_size=8",
            "num_workers=0",
            "log_to_mlflow=false",
            f"output_path={root / 'output'}",
            f"logging_dir={root / 'logs'}",
        ],
        data_path=str(prepared),
    )
    return run_training(config, progress_bar=False).best_checkpoint


def _runners(checkpoint: Path, folder: Path) -> dict[str, tuple[Path, Callable[[int], Callable]]]:
    """Format name -> (file, threads -> batch runner): the files in the run's ``export/`` folder
    (default names), exported there first when missing; the torch weights go to ``folder``."""
    net, _ = load_network(checkpoint)
    net = net.cpu().eval()
    weights = folder / "weights.pt"
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    weights.write_bytes(buffer.getvalue())

    def torch_runner(threads: int) -> Callable:
        torch.set_num_threads(threads or available_cpus())

        def run(images: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return net(torch.from_numpy(images)).numpy()

        return run

    formats: dict[str, tuple[Path, Callable[[int], Callable]]] = {"torch": (weights, torch_runner)}
    kinds = [("onnx_fp32", "onnx", None), ("onnx_int8", "onnx", "int8")]
    if importlib.util.find_spec("executorch") is not None:
        kinds += [("pte_fp32", "executorch", None), ("pte_int8", "executorch", "int8")]
    for name, fmt, quantize in kinds:
        path = RunFolder.of_checkpoint(checkpoint).export / default_name(fmt, quantize)
        if path.is_file():  # export_model.py checked it when it wrote it
            print(f"(using {path}: {path.stat().st_size / 1e6:.2f} MB)", flush=True)
        else:
            path = export_model(checkpoint, fmt, quantize=quantize, latency_runs=5).path
            print(f"(exported {path}: {path.stat().st_size / 1e6:.2f} MB)", flush=True)
        formats[name] = (path, lambda threads, p=path: open_exported(p, threads).run)
    # a .pte runs on ExecuTorch's default pool (all cores) here; its 1-thread latency is taken in
    # a separate process
    return formats


def _pte_latency(path: Path, threads: int, image: np.ndarray, runs: int) -> float:
    """Median latency of a ``.pte`` on ``threads`` threads, in a fresh process (see above)."""
    set_pte_threads(threads)
    run = open_exported(path).run
    return median_ms(lambda: run(image), runs, budget_s=20)


def bench_deploy(rows, root: Path, checkpoint: Path | None, quick: bool) -> None:
    """Export, time and score every format (see the module doc); ``rows`` is run.py's Rows."""
    if checkpoint is None:
        size, epochs = (64, 3) if quick else (IMAGE_SIZE, 8)
        checkpoint = train_sample(root / "deploy-data", size, epochs)
    checkpoint = RunFolder.checkpoint_of(checkpoint)
    net, meta = load_network(checkpoint)
    data = RunFolder.of_checkpoint(checkpoint).data_path(None, "int8 calibrates on its images")
    preprocessing = Preprocessing.from_dict(meta.preprocessing)
    images, labels = split_images(data, VERIFY_SPLIT, preprocessing, TEST_IMAGES, "deploy")
    expected = reference_logits(net.cpu().eval(), images).argmax(1)
    folder = root / "deploy-export"
    folder.mkdir(parents=True, exist_ok=True)
    formats = _runners(checkpoint, folder)
    runs = 10 if quick else 50
    threads_before = torch.get_num_threads()
    measured: dict[str, dict[str, float]] = {}
    for name, (path, make) in formats.items():
        values = {"size": path.stat().st_size / 1e6}
        for label, threads in (("latency_1_thread", 1), ("latency_all_cores", 0)):
            if path.suffix == ".pte":  # ExecuTorch's thread pool is set once per process
                with multiprocessing.get_context("spawn").Pool(1) as pool:
                    values[label] = pool.apply(_pte_latency, (path, threads, images[:1], runs))
            else:
                run = make(threads)
                values[label] = median_ms(lambda run=run: run(images[:1]), runs, budget_s=20)
        predicted = make(0)(images).argmax(1)
        values["agreement"] = float((predicted == expected).mean())
        values["top1"] = float((predicted == labels).mean())
        measured[name] = values
    torch.set_num_threads(threads_before)
    base = measured["onnx_fp32"]
    for name, values in measured.items():
        rows.add(f"deploy/{name}/size", base["size"], values["size"], "MB", False)
        for key in ("latency_1_thread", "latency_all_cores"):
            rows.add(f"deploy/{name}/{key}", base[key], values[key], "ms", False)
        for key in ("agreement", "top1"):
            rows.add(f"deploy/{name}/{key}", base[key], values[key], "fraction", True)
