"""How this process was started, resolved once per run: whether it is the first process of
its run, the id its launch shares, the run's seed and its run folder. Everything that asks
"am I the first process?" asks this object.

One process is the first of its run. In a multi-process (DDP) run the others take the first
one's seed and run folder: under Lightning's own launcher they inherit them through the
environment (it starts the other ranks by running the same command again); under torchrun and
SLURM every process starts on its own, so the seed is drawn from the launch's id and the first
process names the run folder in ``<output_path>/.launches/<launch id>.json``, which the others
wait for.

The seed is the config's ``seed``, or a fresh one per run when it is not set: the thesis ran
one config several times to measure the spread between runs (4.2.9), so runs differ by
default; the seed used is written to the run's ``config.yml`` and ``summary.json``, and
``--set seed=<that number>`` repeats the run exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from configuration import Config
from utils.errors import UserError
from utils.files import write_json_atomic
from utils.hardware import external_launch_id, is_first_process
from workflows.runs.run_folder import RunFolder

# What the first process hands to the others under Lightning's launcher.
RUN_SEED_ENV = "CARS_RUN_SEED"
RUN_DIR_ENV = "CARS_RUN_DIR"
# Under torchrun and SLURM the others wait up to half an hour for the first process to name
# the run folder: it reads the data (and may build the image cache) before it makes it.
LAUNCHES_DIR = ".launches"
LAUNCH_WAIT_ENV = "CARS_LAUNCH_WAIT_S"
LAUNCH_WAIT_S = 1800.0
# A pointer older than this process (less a margin for nodes that start a little apart) is
# left from an earlier launch that had the same id, e.g. torchrun's --rdzv-id used again.
_STARTED = time.time()
_LAUNCH_START_MARGIN_S = 120.0
_MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class Launch:
    """This process's place in its run (see the module's docstring)."""

    first: bool  # makes the run folder, writes its summary, reports to the trackers
    launch_id: str | None  # torchrun's or SLURM's id of a multi-process launch, else None

    @classmethod
    def resolve(cls) -> Launch:
        return cls(first=is_first_process(), launch_id=external_launch_id())

    def seed(self, config: Config) -> int:
        """The run's seed: the config's; else one every process of the run shares."""
        if config.seed is not None:
            return config.seed
        if self.launch_id is not None:  # the same number from the same id, in every process
            return int.from_bytes(hashlib.sha256(self.launch_id.encode()).digest()[:4], "big")
        inherited = os.environ.get(RUN_SEED_ENV, "")
        if not self.first and inherited.isdigit():
            return int(inherited)
        seed = secrets.randbelow(_MAX_SEED + 1)
        os.environ[RUN_SEED_ENV] = str(seed)
        return seed

    def run_folder(self, output_path: str | Path, architecture: str) -> tuple[RunFolder, bool]:
        """A new run folder in the first process; the first one's in the others. The flag
        says whether it was created here (only then does this process own it)."""
        if self.launch_id is not None:
            return self._launch_folder(output_path, architecture)
        if self.first:
            run = RunFolder.create(output_path, architecture)
            os.environ[RUN_DIR_ENV] = str(run.path)
            return run, True
        inherited = os.environ.get(RUN_DIR_ENV)
        if not inherited or not Path(inherited).is_dir():
            raise UserError(
                "this process belongs to a multi-process run (NODE_RANK / LOCAL_RANK are "
                "set) but was not started by the run's first process, so it cannot find the "
                "run folder. Start runs on several nodes with torchrun or SLURM (README, "
                "'Several GPUs and nodes')."
            )
        return RunFolder(inherited), False

    def _launch_folder(self, output_path: str | Path, architecture: str) -> tuple[RunFolder, bool]:
        pointer = Path(output_path) / LAUNCHES_DIR / f"{_safe_name(str(self.launch_id))}.json"
        if self.first:
            run = RunFolder.create(output_path, architecture)
            write_json_atomic(pointer, {"run_dir": str(run.path.resolve()), "created": time.time()})
            return run, True
        wait_s = float(os.environ.get(LAUNCH_WAIT_ENV, LAUNCH_WAIT_S))
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                named = json.loads(pointer.read_text(encoding="utf-8"))
                run_dir, created = Path(named["run_dir"]), float(named["created"])
            except (OSError, ValueError, KeyError, TypeError):
                time.sleep(0.2)
                continue
            if created >= _STARTED - _LAUNCH_START_MARGIN_S and run_dir.is_dir():
                return RunFolder(run_dir), False
            time.sleep(0.2)
        raise UserError(
            f"this process of launch '{self.launch_id}' waited {wait_s:.0f} s for the first "
            f"process to name the run folder in '{pointer}'. Put output_path on a folder that "
            "every node shares, and check that the first process (rank 0) started without an "
            "error."
        )


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)
