"""The network-side speed settings of a run: memory format and torch.compile (precision goes
to the Trainer, the input pipeline's settings to the data module)."""

from __future__ import annotations

import torch
from torch import nn

# torch.compile's backend; inductor generates Triton kernels on CUDA and C++ on the CPU.
COMPILE_BACKEND = "inductor"
# torch.compile's modes: reduce-overhead records the compiled step as CUDA graphs and replays
# it with one launch, which pays when kernel launches dominate (small batches of a small
# network, as GhostNet at batch 64); max-autotune also benchmarks kernel choices (long compile).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


def prepare_network(
    net: nn.Module, channels_last: bool = False, compile: bool = False, mode: str = "default"
) -> nn.Module:
    """``net`` in channels-last memory format and/or compiled in place with torch.compile's
    ``mode`` (its state dict keeps its keys, so checkpoints load into an uncompiled network)."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile mode must be one of {COMPILE_MODES}, got {mode!r}")
    if channels_last or compile:
        # Fixed input sizes: let cuDNN pick its fastest kernels once.
        torch.backends.cudnn.benchmark = True
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    if compile:
        net.compile(backend=COMPILE_BACKEND, mode=mode)
    return net
