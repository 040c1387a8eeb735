"""Execution time measurement (the thesis's utils held one too): medians of repeated calls on
one CPU thread, so figures are comparable between runtimes and stable on a busy machine."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run the block with one intra-op thread, then restore the previous setting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def median_ms(
    fn: Callable[[], Any], runs: int = 10, warmup: int = 3, budget_s: float | None = None
) -> float:
    """Median wall time of ``fn`` in milliseconds after ``warmup`` calls; with ``budget_s``
    it stops early once that many seconds have passed (after at least 5 timed runs)."""
    runs = max(1, runs)
    for _ in range(warmup):
        fn()
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < runs:
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
        if budget_s is not None and len(times) >= 5 and time.perf_counter() - started > budget_s:
            break
    return statistics.median(times)
