"""The ``startup/*`` row of benchmarks/run.py: how soon a config mistake is reported.

    python benchmarks/startup.py [--repeats 5] [--json OUT]

``python train.py -c BAD`` (the template with one unknown key) against ``python -c "import
torch"``, each a fresh interpreter, run in turns so that the machine's load falls on both
alike; the median of each. The target is a ratio of at most 1.5: validating a config imports
torch (the optimizers and losses are checked against it) but no workflow, tracker, torchvision
or kornia.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import Rows  # noqa: E402

TARGET = 1.5


def seconds(command: list[str], expected_code: int) -> float:
    """Wall time of one run of ``command`` from the project folder; its exit code checked."""
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != expected_code:
        raise RuntimeError(f"{command} exited {done.returncode}: {done.stderr[-2000:]}")
    return elapsed


def bench_startup(rows: Rows, repeats: int) -> float:
    """Add the row; returns the ratio (train.py's time over torch's)."""
    with tempfile.TemporaryDirectory(prefix="cars-startup-") as tmp:
        bad = Path(tmp) / "bad.yml"
        template = (ROOT / "config_template.yml").read_text(encoding="utf-8")
        bad.write_text(template + "\nnot_a_setting: 1\n", encoding="utf-8")
        torch_import = [sys.executable, "-c", "import torch"]
        train = [sys.executable, str(ROOT / "train.py"), "-c", str(bad)]
        seconds(torch_import, 0)  # file cache warm for both
        seconds(train, 2)
        baseline, value = [], []
        for _ in range(repeats):
            baseline.append(seconds(torch_import, 0))
            value.append(seconds(train, 2))
    base, mistake = statistics.median(baseline), statistics.median(value)
    # Reported as "times better" like every row: at least 1 / TARGET (0.67) meets the target.
    rows.add(
        f"startup/config mistake reported vs import torch (target <= {TARGET}x the time)",
        base,
        mistake,
        "s",
        False,
    )
    return mistake / base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="write the row here")
    args = parser.parse_args()
    ratio = bench_startup(Rows(args.json, "CPU"), args.repeats)
    print(f"train.py -c BAD takes {ratio:.2f}x the time of import torch (target <= {TARGET})")


if __name__ == "__main__":
    main()
