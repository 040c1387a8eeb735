"""What the benchmarks share: synthetic JPEGs of the real data's sizes, the rows they print
(and rewrite to ``--json`` after each one), and waiting for the device before reading a clock."""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from utils.hardware import available_cpus

NUM_CLASSES = 196
IMAGE_SIZE = 227


# ---- synthetic data ---------------------------------------------------------------------------
def _write_images(job: tuple[str, int, int]) -> list[list]:
    """JPEGs of the real data's size distribution: widths around 700 px (100 to 1,600), the
    height about two thirds of the width; smooth noise so that JPEG decoding costs as much."""
    folder, start, stop = job
    rng = np.random.default_rng(start)
    rows = []
    for i in range(start, stop):
        width = int(np.clip(rng.lognormal(np.log(660), 0.35), 100, 1600))
        height = max(60, int(width * rng.uniform(0.55, 0.8)))
        pixels = rng.integers(0, 256, size=(max(1, height // 8), max(1, width // 8), 3))
        img = Image.fromarray(pixels.astype(np.uint8)).resize((width, height), Image.BILINEAR)
        name = f"{i:06d}.jpg"
        img.save(Path(folder) / name, quality=90)
        cls = i % NUM_CLASSES + 1
        box = [width // 10, height // 10, width - width // 10, height - height // 10]
        rows.append([name, cls, *box, f"Class {cls}"])
    return rows


def make_dataset(root: Path, train: int, valid: int) -> Path:
    header = ["image_fname", "class", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class_name"]
    processes = max(1, available_cpus())
    for split, count in (("train", train), ("test", valid)):
        (root / split).mkdir(parents=True, exist_ok=True)
        step = 64
        jobs = [(str(root / split), i, min(i + step, count)) for i in range(0, count, step)]
        with multiprocessing.get_context("fork").Pool(processes) as pool:
            rows = [row for chunk in pool.map(_write_images, jobs) for row in chunk]
        with (root / f"{split}_labels.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)
    return root


# ---- output -----------------------------------------------------------------------------------
class Rows:
    def __init__(self, json_path: Path | None, device: str) -> None:
        self.rows: list[dict] = []
        self.json_path = json_path
        self.device = device

    def add(self, name: str, baseline: float, value: float, unit: str, higher_is_better: bool):
        ratio = value / baseline if higher_is_better else baseline / value
        row = {
            "name": name,
            "baseline": round(baseline, 4),
            "value": round(value, 4),
            "ratio": round(ratio, 2),
            "unit": unit,
        }
        self.rows.append(row)
        print(f"{name:<62} {baseline:>12.3f} {value:>12.3f} {ratio:>7.2f}x  {unit}", flush=True)
        if self.json_path:
            tmp = self.json_path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"device": self.device, "rows": self.rows}, indent=2))
            os.replace(tmp, self.json_path)


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so that a clock read after it is its time."""
    if device.type == "cuda":
        torch.cuda.synchronize()
