"""Shared helpers of the unit tests."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def import_bench(name: str):
    """A bench/ script as a module (bench/ scripts import each other by file name)."""
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCH))


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module's tests: the machine is shared, and one thread is
    much faster than two contended ones."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
