"""Where and how a training run computes: the device, the arithmetic of forward passes
(precision), torch's thread count, deterministic algorithms and the seeds of a run's random
streams.

Reproducibility (docs/method.md#5-training): a run seeds torch's global generator and
derives independent ``torch.Generator`` seeds from its ``seed`` (:func:`_derived_seed`).
While it runs, ``torch.use_deterministic_algorithms(True, warn_only=True)`` is on (and
cuDNN's benchmark off, deterministic on); the previous settings are restored afterwards
(:func:`_deterministic`). On the CPU two runs with the same seed, on the same machine and
thread count, give bit-identical weights and metrics (tested). On CUDA, the backward passes
of ``ReplicationPad3d`` and ``AvgPool3d`` have no deterministic kernel (they accumulate
with atomic adds), so GPU runs with one seed agree only up to float rounding; torch warns
about these ops rather than failing.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np
import torch

from ..modelfiles import read_model_meta

#: Arithmetic of the network's forward passes in training and prediction
#: (``precision``): float32, or bfloat16 autocast (mixed precision, for GPUs; weights,
#: optimizer and loss stay float32). Relevance maps are always computed in float32.
PRECISIONS = ("fp32", "bf16")


def autocast(device: torch.device, precision: str = "fp32"):
    """The autocast context of ``precision`` (:data:`PRECISIONS`) on ``device``: bfloat16
    autocast for ``"bf16"``, nothing (float32) for ``"fp32"``."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


def model_precision(model_dir) -> str:
    """The precision a saved model was trained in (``model.json``; float32 when absent),
    which its predictions use too."""
    return (read_model_meta(model_dir).get("training") or {}).get("precision", "fp32")


def resolve_device(device="auto") -> torch.device:
    """``"auto"`` -> cuda when available, else cpu; anything else as ``torch.device``."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _derived_seed(seed: int, stream: int) -> int:
    """An independent 63-bit seed for a named random stream of a run."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(seed) >> 32 & 0xFFFFFFFF,
                                    stream]).generate_state(2, np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1


@contextlib.contextmanager
def _threads(n: int | None):
    if n is None:
        yield
        return
    if int(n) != n or n < 1:
        raise ValueError(f"num_threads must be a positive integer, got {n!r}")
    prev = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(prev)


@contextlib.contextmanager
def _deterministic(device: torch.device):
    prev_mode = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    prev_env = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    try:
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
        yield
    finally:
        torch.use_deterministic_algorithms(prev_mode, warn_only=prev_warn)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = prev_cudnn
        if prev_env is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
