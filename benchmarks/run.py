"""Speed of the input pipeline, the training step and a full epoch, each as a ratio against a
baseline measured in the same run, on synthetic JPEGs of the real data's sizes.

    python benchmarks/run.py [--quick] [--json OUT] [--sections startup,pipeline,step,epoch,deploy]
        [--workers N] [--no-compile] [--epoch-train 8144] [--epoch-valid 8041]

Rows ``{"name", "baseline", "value", "ratio", "unit"}``; ``ratio`` is always "times better"
(baseline / value for times, value / baseline for rates), printed and, with ``--json``,
rewritten after every row (a run cut short keeps what it measured):

0. ``startup/*``: how soon ``python train.py -c BAD`` (an unknown key) reports the mistake,
   against ``python -c "import torch"`` (benchmarks/startup.py; target at most 1.5x the time).
1. ``pipeline/*``: CPU cost per training image on the loader-worker side (one process, one
   thread): the thesis's per-image PIL path vs ``cache_images`` vs ``cache_images`` +
   ``augment_on: device``; the cache's build cost per image; the device-side augmentation;
   the batch gathered from the cache's copy on the device (``cache_on_device``).
2. ``step/*``: GhostNet (320 output channels, 196 classes) forward + backward + AdamW at
   227x227: fp32 NCHW vs channels_last vs compile vs bf16 autocast (and all together), on the
   CPU and, when present, on CUDA, where compile reduce-overhead (CUDA graphs) is measured too.
3. ``epoch/*`` (CUDA only; benchmarks/epoch.py): one epoch of training + validation through
   Lightning (8,144 + 8,041 images by default), the thesis's path vs fast ones (cache and device
   augmentation, with and without channels_last, with ``cache_on_device``, with compile default
   and reduce-overhead), with ``--workers`` and with 2 loader workers (a Colab-sized CPU).
4. ``deploy/*``: exported formats against ONNX fp32 (size, latency, accuracy): ``deploy.py``.

Only torch, torchvision, pytorch-lightning, numpy, pillow, pydantic and kornia are needed: no
experiment tracker is imported (``deploy`` adds onnxruntime).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import IMAGE_SIZE, NUM_CLASSES, Rows, make_dataset, sync  # noqa: E402
from benchmarks.epoch import bench_epoch  # noqa: E402
from benchmarks.startup import bench_startup  # noqa: E402
from configuration import TEMPLATE_PATH, load_config  # noqa: E402
from datasets.cache.device import DeviceImages  # noqa: E402
from datasets.cache.images import open_or_build  # noqa: E402
from datasets.device_augment import DeviceAugmenter  # noqa: E402
from datasets.stanford_data import StanfordCarsDataset  # noqa: E402
from models.arch_dict import build_network  # noqa: E402
from models.optimization import build_loss  # noqa: E402
from models.speed import prepare_network  # noqa: E402
from utils.hardware import available_cpus  # noqa: E402


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
    sync(device)
    repeats = 10 if device.type == "cuda" else 2
    started = time.perf_counter()
    for _ in range(repeats):
        augmenter(batch)
    sync(device)
    device_ms = (time.perf_counter() - started) * 1000 / (repeats * len(batch))
    rows.add(
        f"pipeline/device augment ({device.type}, batched)", thesis_ms, device_ms, "ms/img", False
    )
    # cache_on_device: the batch gathered from the cache's copy on the device (the copy itself,
    # made once per run, is left out), instead of being read and collated by loader workers
    images = DeviceImages(cache)
    indices = torch.randint(0, len(cache), (size,), device=device)
    images.gather(indices)
    sync(device)
    started = time.perf_counter()
    for _ in range(repeats):
        images.gather(indices)
    sync(device)
    gather_ms = (time.perf_counter() - started) * 1000 / (repeats * size)
    rows.add(
        f"pipeline/cache_on_device gather ({device.type}, batched)",
        thesis_ms,
        gather_ms,
        "ms/img",
        False,
    )


# ---- 2. training step ---------------------------------------------------------------------------
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
    sync(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
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


# ---- main -----------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts, under 2 min on 2 CPUs")
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument(
        "--sections", default="startup,pipeline,step,epoch,deploy", help="run in this order"
    )
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
            if section == "startup":
                bench_startup(rows, 2 if args.quick else 5)
            elif section == "pipeline":
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
