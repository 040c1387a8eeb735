"""What this machine offers a run: CPUs for loader workers, the device to compute on, and
whether it is Google Colab (the thesis recorded the runtime of every run)."""

from __future__ import annotations

import importlib.util
import os

import torch

from utils.errors import UserError

DEVICES = ("auto", "cpu", "cuda")


def available_cpus() -> int:
    """CPUs this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_num_workers() -> int:
    """CPUs this process may use, at most 8."""
    return min(8, available_cpus())


def physical_memory_bytes() -> int | None:
    """The machine's memory in bytes; None where the system does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not on a POSIX system
        return None


def usable_workers(requested: int | None) -> tuple[int, str | None]:
    """``requested`` loader workers (None: ``default_num_workers()``), at most the CPUs this
    process may use; the second value is the warning to log when the request was lowered
    (each worker is a process holding a copy of the dataset: thousands of them exhaust the
    machine)."""
    if requested is None:
        return default_num_workers(), None
    cpus = available_cpus()
    if requested <= cpus:
        return requested, None
    return cpus, (
        f"num_workers {requested} is more than the {cpus} CPU(s) this process may use; "
        f"using {cpus} loader worker(s)"
    )


def resolve_device(device: str) -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device == "cuda":
        if not torch.cuda.is_available():
            raise UserError(
                "--device cuda was requested, but PyTorch sees no CUDA GPU on this machine. "
                "Use --device cpu (or auto)."
            )
        return torch.device("cuda")
    raise UserError(f"device '{device}' is not one of {', '.join(DEVICES)}. Pick one of them.")


def detect_runtime() -> str:
    """``colab`` when running inside Google Colab, else ``local``."""
    try:
        return "colab" if importlib.util.find_spec("google.colab") is not None else "local"
    except (ImportError, ValueError):
        return "local"


# ---- several processes for one run (DDP) ------------------------------------------------
def is_first_process() -> bool:
    """False in each process that a multi-process (DDP) launch started beside the first one:
    Lightning's own launcher marks them with LOCAL_RANK / NODE_RANK, torchrun with RANK, SLURM
    with SLURM_PROCID. The first process makes the run folder and reports to the trackers."""
    if any(os.environ.get(name, "0") != "0" for name in ("RANK", "LOCAL_RANK", "NODE_RANK")):
        return False
    return not (_slurm_tasks() > 1 and os.environ.get("SLURM_PROCID", "0") != "0")


def external_launch_id() -> str | None:
    """The id that every process of one torchrun or SLURM launch of several processes shares;
    None for a single process and under Lightning's own launcher (its processes inherit the
    first one's environment instead)."""
    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "")
    if run_id and _env_int("WORLD_SIZE", 1) > 1:
        return f"torchrun-{run_id}"
    job = os.environ.get("SLURM_JOB_ID", "")
    if job and _slurm_tasks() > 1:
        return f"slurm-{job}-{os.environ.get('SLURM_STEP_ID', '0')}"
    return None


def _slurm_tasks() -> int:
    return _env_int("SLURM_NTASKS", 1)


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default
