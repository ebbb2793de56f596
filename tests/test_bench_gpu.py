"""bench/gpu.sh, the GPU benchmark, runs on the CPU on a tiny grid and prints every
figure it promises (the figures themselves are measured on a GPU; docs/benchmarks.md)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_benchmark_runs_on_cpu_tiny():
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(REPO / "bench" / "gpu.sh"), "--device", "cpu", "--tiny"],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    header = next(line for line in out.splitlines() if "train fp32 /s" in line)
    assert "train bf16 /s" in header and "loader 2nd /s" in header
    row = next(line for line in out.splitlines() if line.split()[:2] == ["cpu", "16x16x20"])
    fields = row.split()
    assert len(fields) == 13                  # device, shape, batch, threads + 9 figures
    figures = [float(v) for v in fields[4:]]
    assert all(v > 0 for v in figures)
    for n in range(1, 13):            # every scenario's line, with its ratio
        assert re.search(rf"^\s+{n}\s+\S.*\s[0-9.]+\s+[0-9.]+\s+(-|[0-9.]+)$", out, re.M), n
    assert "integrated gradients f(x)" in out and "integrated gradients AW" in out
