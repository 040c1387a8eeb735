"""The seed of a run: the config's ``seed``, or a fresh one per run when it is not set.

The thesis ran one config several times to measure the spread between runs (4.2.9), so runs
differ by default; the seed used is written to the run's ``config.yml`` and ``summary.json``,
and ``--set seed=<that number>`` repeats the run exactly.
"""

from __future__ import annotations

import hashlib
import os
import secrets

from configuration import Config
from utils.hardware import external_launch_id, is_first_process

# Lightning's DDP launcher starts the other ranks by running the same command again; they take
# the launcher's seed from this variable so that every process of one run shares it.
RUN_SEED_ENV = "CARS_RUN_SEED"
_MAX_SEED = 2**32 - 1


def with_run_seed(config: Config) -> Config:
    """``config`` with ``seed`` set: its own; else one that every process of a multi-process
    (DDP) run shares (the first process's, or under torchrun and SLURM one drawn from the
    launch's id); else a new one."""
    if config.seed is not None:
        return config
    inherited = os.environ.get(RUN_SEED_ENV, "")
    launch = external_launch_id()
    if launch is not None:  # processes started on their own: the same number from the same id
        seed = int.from_bytes(hashlib.sha256(launch.encode()).digest()[:4], "big")
    elif not is_first_process() and inherited.isdigit():
        seed = int(inherited)
    else:
        seed = secrets.randbelow(_MAX_SEED + 1)
        os.environ[RUN_SEED_ENV] = str(seed)
    return config.model_copy(update={"seed": seed})
