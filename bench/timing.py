"""Timing helpers shared by the benchmark scripts (not a test)."""

from __future__ import annotations

import time

import numpy as np


def sync(device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously)."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timeit(fn, device, repeats: int, warmup: bool = True) -> float:
    """Median seconds of ``repeats`` calls of ``fn`` (after one warm-up call: allocations,
    kernel selection)."""
    if warmup:
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))
