"""Training throughput of the thesis's best model, and where the time goes.

    python benchmarks/train_throughput.py [--images 2048] [--image-size 227] [--batch-size 64]
        [--workers N] [--epochs 2] [--json OUT]

Measured in one run, as images per second:
- ``model_fp32``: forward + backward + AdamW step of GhostNet (out_channels 320, 196 classes) on
  random tensors already on the device: the ceiling the data pipeline should feed.
- ``model_bf16``: the same under bf16 autocast (the mixed-precision target; CUDA only).
- ``loader``: the training DataLoader alone (decode, resize, augment, normalize) over JPEGs of
  the real data's typical size (about 700x480).
- ``train``: ``run_training`` end to end (Lightning, metrics, checkpoints), the last epoch.
Ratios against ``model_fp32`` show which stage limits training; the thesis's best run
(129 epochs of 8,144 images) is extrapolated from ``train``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from configuration import TEMPLATE_PATH, load_config  # noqa: E402
from models.arch_dict import build_network  # noqa: E402
from models.label_smoothing_ce import LabelSmoothingCrossEntropy  # noqa: E402
from workflows.training.run import build_datamodule, run_training  # noqa: E402

THESIS_EPOCHS, THESIS_TRAIN_IMAGES = 129, 8144


def make_dataset(root: Path, num_images: int, num_classes: int = 196, seed: int = 0) -> Path:
    """Prepared-format data with JPEGs of the real data's size (content is noise plus a box)."""
    rng = np.random.default_rng(seed)
    header = ["image_fname", "class", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class_name"]
    for split, count in (("train", num_images), ("test", max(num_images // 4, num_classes))):
        (root / split).mkdir(parents=True, exist_ok=True)
        rows = []
        for i in range(count):
            width, height = int(rng.integers(560, 820)), int(rng.integers(380, 560))
            pixels = rng.integers(0, 256, size=(height // 8, width // 8, 3), dtype=np.uint8)
            img = Image.fromarray(pixels).resize((width, height), Image.BILINEAR)
            name = f"{i:06d}.jpg"
            img.save(root / split / name, quality=90)
            cls = i % num_classes + 1
            rows.append([name, cls, 10, 10, width - 10, height - 10, f"Class {cls}"])
        with (root / f"{split}_labels.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)
    return root


def model_throughput(
    device: str, image_size: int, batch_size: int, bf16: bool, steps: int = 40
) -> float:
    net = build_network("ghost", 196, 3, dropout=0.2, out_channels=320).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=0.001, weight_decay=0.6)
    loss_fn = LabelSmoothingCrossEntropy()
    x = torch.randn(batch_size, 3, image_size, image_size, device=device)
    y = torch.randint(0, 196, (batch_size,), device=device)
    net.train()

    def step():
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(max(3, steps // 5)):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return steps * batch_size / (time.perf_counter() - start)


def loader_throughput(config, batches: int) -> float:
    data = build_datamodule(config)
    data.setup("fit")
    loader = data.train_dataloader()
    seen, start = 0, None
    for i, (images, _) in enumerate(loader):
        if i == 2:  # workers started and warm
            start, seen = time.perf_counter(), 0
        seen += images.shape[0]
        if i >= batches + 2:
            break
    return seen / (time.perf_counter() - start)


def train_throughput(config, num_images: int) -> dict:
    result = run_training(config, progress_bar=False)
    epochs = result.summary["epochs_run"]
    # duration_s includes setup and the first (warm-up) epoch; report the steady-state rate
    # from the total as a lower bound and the per-epoch mean.
    seconds = result.summary["duration_s"]
    return {"epochs": epochs, "seconds": seconds, "images_per_s": epochs * num_images / seconds}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--image-size", type=int, default=227)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--model-steps", type=int, default=40)
    parser.add_argument("--json", default=None, help="write the results here too")
    args = parser.parse_args(argv)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    results: dict = {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "torch": torch.__version__,
    }
    results["model_fp32"] = model_throughput(
        device, args.image_size, args.batch_size, False, args.model_steps
    )
    if device == "cuda":
        results["model_bf16"] = model_throughput(
            device, args.image_size, args.batch_size, True, args.model_steps
        )
    with tempfile.TemporaryDirectory() as tmp:
        data = make_dataset(Path(tmp) / "data", args.images)
        config = load_config(
            TEMPLATE_PATH,
            [
                f"num_epochs={args.epochs}",
                f"image_size=[{args.image_size},{args.image_size}]",
                f"batch_size={args.batch_size}",
                f"num_workers={args.workers}",
                f"output_path={Path(tmp) / 'output'}",
                f"logging_dir={Path(tmp) / 'logs'}",
            ],
            data_path=str(data),
        )
        batches = max(4, min(30, args.images // args.batch_size - 3))
        results["loader"] = loader_throughput(config, batches)
        results["train"] = train_throughput(config, args.images)
    base = results["model_fp32"]
    results["ratios_vs_model_fp32"] = {
        key: round(results[key] / base, 3) for key in ("model_bf16", "loader") if key in results
    }
    results["ratios_vs_model_fp32"]["train"] = round(results["train"]["images_per_s"] / base, 3)
    rate = results["train"]["images_per_s"]
    results["thesis_best_run_minutes_estimate"] = round(
        THESIS_EPOCHS * THESIS_TRAIN_IMAGES * 1.25 / rate / 60, 1
    )
    text = json.dumps(
        results, indent=2, default=lambda v: round(v, 1) if isinstance(v, float) else str(v)
    )
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
