"""Speed of the input pipeline, the training step and a full epoch, each as a ratio against a
baseline measured in the same run, on synthetic JPEGs of the real data's sizes.

    python benchmarks/run.py [--quick] [--json OUT] [--sections pipeline,step,epoch,deploy]
        [--workers N] [--no-compile] [--epoch-train 8144] [--epoch-valid 8041]

Rows ``{"name", "baseline", "value", "ratio", "unit"}``; ``ratio`` is always "times better"
(baseline / value for times, value / baseline for rates), printed and, with ``--json``,
rewritten after every row (a run cut short keeps what it measured):

1. ``pipeline/*``: CPU cost per training image on the loader-worker side (one process, one
   thread): the thesis's per-image PIL path vs ``cache_images`` vs ``cache_images`` +
   ``augment_on: device``; the cache's build cost per image; the device-side augmentation;
   the batch gathered from the cache's copy on the device (``cache_on_device``).
2. ``step/*``: GhostNet (320 output channels, 196 classes) forward + backward + AdamW at
   227x227: fp32 NCHW vs channels_last vs compile vs bf16 autocast (and all together), on the
   CPU and, when present, on CUDA, where compile reduce-overhead (CUDA graphs) is measured too.
3. ``epoch/*`` (CUDA only): one epoch of training + validation through Lightning (8,144 + 8,041
   images by default), the thesis's path vs fast ones (cache and device augmentation, with and
   without channels_last, with ``cache_on_device``, with compile default and reduce-overhead),
   with ``--workers`` and with 2 loader workers (a Colab-sized CPU).
4. ``deploy/*``: exported formats against ONNX fp32 (size, latency, accuracy): ``deploy.py``.

Only torch, torchvision, pytorch-lightning, numpy, pillow, pydantic and kornia are needed: no
experiment tracker is imported (``deploy`` adds onnxruntime).
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from configuration import TEMPLATE_PATH, load_config  # noqa: E402
from datasets.cache import open_or_build  # noqa: E402
from datasets.device_augment import DeviceAugmenter  # noqa: E402
from datasets.device_cache import DeviceImages  # noqa: E402
from datasets.stanford_data import StanfordCarsDataset  # noqa: E402
from datasets.stanford_data_module import StanfordCarsDataModule  # noqa: E402
from models.arch_dict import build_network  # noqa: E402
from models.net_module import NetModule  # noqa: E402
from models.optimization import build_loss  # noqa: E402
from models.speed import prepare_network  # noqa: E402
from utils.hardware import available_cpus  # noqa: E402

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


# ---- 1. input pipeline ------------------------------------------------------------------------
def per_item_ms(datasets: list, count: int) -> list[float]:
    """Milliseconds per item of each dataset, measured interleaved image by image so that a
    change in the machine's load affects every path alike."""
    totals = [0.0] * len(datasets)
    for dataset in datasets:
        dataset[0]  # first-touch costs (file cache, lazy imports) out of the timing
    for i in range(count):
        for position, dataset in enumerate(datasets):
            started = time.perf_counter()
            dataset[i % len(dataset)]
            totals[position] += time.perf_counter() - started
    return [total * 1000 / count for total in totals]


def bench_pipeline(rows: Rows, data: Path, config, count: int, device: torch.device) -> None:
    torch.set_num_threads(1)  # one loader worker's share
    pre, augs = config.preprocessing(), config.augmentations()
    thesis = StanfordCarsDataset(data, "train", pre, augs)
    started = time.perf_counter()
    cache = open_or_build(
        thesis.image_dir, "train", thesis.samples, pre, data / ".cache", available_cpus(), False
    )
    build_ms = (time.perf_counter() - started) * 1000 / len(thesis)
    cached = StanfordCarsDataset(data, "train", pre, augs, cache=cache)
    uint8 = StanfordCarsDataset(data, "train", pre, augs, cache=cache, uint8=True)
    thesis_ms, cached_ms, uint8_ms = per_item_ms([thesis, cached, uint8], count)
    rows.add(
        f"pipeline/cache_build ({available_cpus()} procs, wall)",
        thesis_ms,
        build_ms,
        "ms/img",
        False,
    )
    rows.add("pipeline/cache_images (cpu augment)", thesis_ms, cached_ms, "ms/img", False)
    rows.add("pipeline/cache_images + augment_on device", thesis_ms, uint8_ms, "ms/img", False)
    torch.set_num_threads(max(1, available_cpus()))
    augmenter = DeviceAugmenter(pre, augs).to(device)
    size = 64 if device.type == "cuda" else 4
    batch = torch.stack([uint8[i % len(uint8)][0] for i in range(size)]).to(device)
    for _ in range(2):
        augmenter(batch)
    _sync(device)
    repeats = 10 if device.type == "cuda" else 2
    started = time.perf_counter()
    for _ in range(repeats):
        augmenter(batch)
    _sync(device)
    device_ms = (time.perf_counter() - started) * 1000 / (repeats * len(batch))
    rows.add(
        f"pipeline/device augment ({device.type}, batched)", thesis_ms, device_ms, "ms/img", False
    )
    # cache_on_device: the batch gathered from the cache's copy on the device (the copy itself,
    # made once per run, is left out), instead of being read and collated by loader workers
    images = DeviceImages(cache)
    indices = torch.randint(0, len(cache), (size,), device=device)
    images.gather(indices)
    _sync(device)
    started = time.perf_counter()
    for _ in range(repeats):
        images.gather(indices)
    _sync(device)
    gather_ms = (time.perf_counter() - started) * 1000 / (repeats * size)
    rows.add(
        f"pipeline/cache_on_device gather ({device.type}, batched)",
        thesis_ms,
        gather_ms,
        "ms/img",
        False,
    )


# ---- 2. training step ---------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_rate(
    device: torch.device,
    batch: int,
    steps: int,
    channels_last: bool = False,
    compile: bool = False,
    bf16: bool = False,
    compile_mode: str = "default",
) -> float:
    torch.manual_seed(0)
    if compile:
        torch.compiler.reset()  # each variant compiles afresh, within dynamo's recompile limit
    net = build_network("ghost", NUM_CLASSES, 3, dropout=0.2, out_channels=320).to(device)
    net = prepare_network(net, channels_last, compile, compile_mode).train()
    opt = torch.optim.AdamW(net.parameters(), lr=0.001, weight_decay=0.6)
    loss_fn = build_loss("LabelSmoothingCrossEntropy", None)
    x = torch.randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, NUM_CLASSES, (batch,), device=device)

    def step():
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3 if compile else 2):  # cuDNN / oneDNN set-up out of the timing
        step()
    _sync(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    rate = steps * batch / (time.perf_counter() - started)
    torch.backends.cudnn.benchmark = False
    return rate


def bench_step(
    rows: Rows, device: torch.device, batch: int, steps: int, compile: bool, bf16: bool = True
) -> None:
    torch.set_num_threads(max(1, available_cpus()))
    where = f"{device.type}, batch {batch}"
    base = step_rate(device, batch, steps)
    variants = [("channels_last", {"channels_last": True})]
    if bf16:
        variants += [
            ("bf16", {"bf16": True}),
            ("channels_last+bf16", {"channels_last": True, "bf16": True}),
        ]
    if compile:  # each compilation takes a minute or more: few combinations
        variants.append(("compile+channels_last", {"compile": True, "channels_last": True}))
        if device.type == "cuda":
            # CUDA graphs: one launch per step instead of hundreds (GhostNet at batch 64 is
            # launch-bound); NCHW, as channels_last made the step slower on an H200
            graphs = {"compile": True, "compile_mode": "reduce-overhead"}
            variants.append(("compile reduce-overhead", graphs))
    for label, options in variants:
        try:
            value = step_rate(device, batch, steps, **options)
        except Exception as err:  # e.g. no C compiler for the CPU backend of torch.compile
            print(f"step/{label} ({where}): failed ({type(err).__name__}: {err})", flush=True)
            continue
        rows.add(f"step/{label} ({where}) vs fp32 NCHW", base, value, "img/s", True)


# ---- 3. full epoch --------------------------------------------------------------------------------
class EpochTimer(pl.Callback):
    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        _sync(pl_module.device)
        self._start = time.perf_counter()

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            _sync(pl_module.device)
            self.seconds.append(time.perf_counter() - self._start)


# The fast input path: the image cache, augmentation on the device.
FAST = {"cache": True, "device_augment": True}


def epoch_seconds(
    data: Path,
    config,
    workers: int,
    epochs: int,
    cache: bool = False,
    device_augment: bool = False,
    channels_last: bool = False,
    cache_on_device: bool = False,
    compile_mode: str | None = None,
    valid_batch_size: int | None = None,
) -> float:
    """The last of ``epochs`` epochs (training + validation), after worker start-up, the
    cache's copy to the device and any compilation in the first one. ``compile_mode`` None:
    no torch.compile."""
    module = StanfordCarsDataModule(
        data,
        config.preprocessing(),
        config.augmentations(),
        batch_size=config.batch_size,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        cache_images=cache,
        augment_on="device" if device_augment else "cpu",
        channels_last=channels_last,
        progress=False,
        cache_on_device=cache_on_device,
        valid_batch_size=valid_batch_size,
    )
    if compile_mode is not None:
        torch.compiler.reset()
    net = build_network("ghost", module.num_classes, 3, **config.arch_options())
    net = prepare_network(net, channels_last, compile_mode is not None, compile_mode or "default")
    model = NetModule(
        net=net,
        loss_fn=build_loss(config.loss_function, config.loss_params),
        num_classes=module.num_classes,
        optimizer=config.optimizer,
        optimizer_params=config.optimizer_params,
        lr_scheduler=None,
    )
    timer = EpochTimer()
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="gpu" if torch.cuda.is_available() else "cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[timer],
    )
    trainer.fit(model, datamodule=module)
    torch.backends.cudnn.benchmark = False
    return timer.seconds[-1]


def bench_epoch(rows: Rows, data: Path, config, workers: int, compile: bool, images: int) -> None:
    """The thesis's path vs fast paths (cache + device augmentation, with or without
    channels_last, cache_on_device, a larger validation batch and compile), most telling
    first. The thesis's path has nothing to amortise: one epoch, worker start-up included; the
    fast ones are timed on their second epoch (the first builds the cache, copies it to the
    device, compiles)."""
    unit = f"s/epoch ({images} img)"

    def row(name: str, baseline: float, epochs: int = 2, workers: int = workers, **options):
        try:
            value = epoch_seconds(data, config, workers, epochs, **options)
        except Exception as err:  # e.g. CUDA graphs refusing the step: the other rows go on
            print(f"epoch/{name}: failed ({type(err).__name__}: {err})", flush=True)
            return None
        rows.add(f"epoch/{name}", baseline, value, unit, False)
        return value

    thesis = epoch_seconds(data, config, workers, 1)
    fast = row(f"fast vs thesis ({workers} workers)", thesis, **FAST, channels_last=True)
    row(f"fast without channels_last vs thesis ({workers} workers)", thesis, **FAST)
    gathered = {**FAST, "cache_on_device": True}
    row("fast + cache_on_device (no workers) vs thesis", thesis, **gathered)
    row(
        "fast + cache_on_device + valid_batch_size 256 vs thesis",
        thesis,
        **gathered,
        valid_batch_size=256,
    )
    if compile:
        row(
            "fast + cache_on_device + compile reduce-overhead vs thesis",
            thesis,
            **gathered,
            compile_mode="reduce-overhead",
        )
    if fast is not None:
        fast2 = row(
            f"fast, 2 workers vs {workers} workers", fast, workers=2, **FAST, channels_last=True
        )
        if fast2 is not None:
            thesis2 = epoch_seconds(data, config, 2, 1)
            rows.add("epoch/fast vs thesis (2 workers)", thesis2, fast2, unit, False)
    if compile:
        row(
            f"fast+compile vs thesis ({workers} workers)",
            thesis,
            **FAST,
            channels_last=True,
            compile_mode="default",
        )


# ---- main -----------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts, under 2 min on 2 CPUs")
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument("--sections", default="pipeline,step,epoch,deploy", help="in this order")
    parser.add_argument("--workers", type=int, default=None, help="loader workers (CPUs - 2)")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile rows")
    parser.add_argument("--epoch-train", type=int, default=8144)
    parser.add_argument("--epoch-valid", type=int, default=8041)
    parser.add_argument("--data", type=Path, help="reuse (or create) synthetic data here")
    parser.add_argument(
        "--epoch-on-cpu", action="store_true", help="run the epoch rows without CUDA (a check)"
    )
    parser.add_argument("--deploy-checkpoint", type=Path, help="deploy: this run (else trains one)")
    args = parser.parse_args()
    sections = [name.strip() for name in args.sections.split(",")]
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    name = torch.cuda.get_device_name(0) if cuda else f"CPU ({available_cpus()} cores)"
    print(f"device: {name}; torch {torch.__version__}", flush=True)
    print(f"{'name':<62} {'baseline':>12} {'value':>12} {'ratio':>8}  unit", flush=True)
    rows = Rows(args.json, name)
    workers = args.workers or max(2, available_cpus() - 2)
    # No key of the config is changed except the data path: the thesis's best run.
    config = load_config(TEMPLATE_PATH, ["log_to_mlflow=false"], data_path=".")
    compile = not args.no_compile and not (args.quick and not cuda)
    with tempfile.TemporaryDirectory(prefix="cars-bench-") as tmp:
        root = args.data or Path(tmp)
        for section in sections:
            if section == "pipeline":
                count = 16 if args.quick else 400
                data = root / "pipeline"
                if not (data / "test_labels.csv").exists():
                    make_dataset(data, count, 8)
                bench_pipeline(rows, data, config, count, device)
            elif section == "step":
                if cuda:
                    bench_step(rows, device, 64, 10 if args.quick else 40, compile)
                cpu_batch, cpu_steps = (2, 1) if args.quick else (64, 3)
                # --quick leaves out bf16 on the CPU: its first steps alone take minutes on 2
                # cores, and bf16 autocast is a GPU setting
                cpu_compile = compile and not cuda
                bench_step(
                    rows, torch.device("cpu"), cpu_batch, cpu_steps, cpu_compile, not args.quick
                )
            elif section == "epoch" and (cuda or args.epoch_on_cpu):
                train, valid = (args.epoch_train, args.epoch_valid)
                if args.quick:
                    train, valid = min(train, 512), min(valid, 512)
                data = root / "epoch"
                if not (data / "test_labels.csv").exists():
                    started = time.perf_counter()
                    make_dataset(data, train, valid)
                    print(f"(synthetic data: {time.perf_counter() - started:.0f} s)", flush=True)
                bench_epoch(rows, data, config, workers, compile, train + valid)
            elif section == "deploy":  # onnxruntime, executorch, training: this section's alone
                from benchmarks.deploy import bench_deploy  # noqa: PLC0415

                bench_deploy(rows, root, args.deploy_checkpoint, args.quick)


if __name__ == "__main__":
    main()
