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


def usable_workers(requested: int) -> tuple[int, str | None]:
    """``requested`` loader workers, at most the CPUs this process may use; the second value
    is the warning to log when the request was lowered (each worker is a process holding a
    copy of the dataset: thousands of them exhaust the machine)."""
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
