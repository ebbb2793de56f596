"""Progress bars of the long steps go to the job's log as plain lines."""

from __future__ import annotations

import logging

import numpy as np

from gamer_mril.assessment import inverting
from gamer_mril.progress import bar


def test_a_bar_writes_lines_without_carriage_returns(caplog):
    caplog.set_level(logging.INFO, logger="gamer_mril")
    with bar(5, "counting", unit="step", interval=0) as b:
        for _ in range(5):
            b.update()
    lines = [r.getMessage() for r in caplog.records if r.name == "gamer_mril"]
    assert lines and all("\r" not in line for line in lines)
    assert lines[-1].startswith("counting: 100%") and "5/5" in lines[-1]
    assert len(lines) == len(set(lines))                 # no line repeated


def test_voxel_inverting_reports_its_progress(caplog):
    caplog.set_level(logging.INFO, logger="gamer_mril")
    images = np.zeros((2, 3, 2, 2, 2), np.float32)
    masks = {n: np.zeros((2, 1, 3, 2, 2, 2), bool) for n in (1, 2)}
    inverting.inverting_auc(lambda b, a: np.full(len(b), 0.5), images, [40, 50], [0, 1], masks,
                    levels=[40], batch_size=1)
    last = [r.getMessage() for r in caplog.records if "voxel inverting" in r.getMessage()][-1]
    assert "4/4" in last                                 # 2 batches x 2 scenarios


def test_a_bar_writes_at_most_one_line_per_interval(caplog):
    caplog.set_level(logging.INFO, logger="gamer_mril")
    with bar(50, "quiet", interval=3600) as b:
        for i in range(50):
            b.set_postfix(step=i, refresh=False)
            b.update()
    lines = [r.getMessage() for r in caplog.records if r.name == "gamer_mril"]
    assert len(lines) == 2 and "0/50" in lines[0] and "50/50" in lines[1]
