"""bench/paper_scale.py's estimate, by hand (the measured run itself is a benchmark)."""

from __future__ import annotations

import pytest
from conftest import import_bench


@pytest.fixture(scope="module")
def paper_scale():
    return import_bench("paper_scale")


def test_estimate_by_hand(paper_scale):
    # 100 sessions, 20 held out, 4 folds: 60 training and 20 validation sessions per fold;
    # forward 1 s, forward+backward 2 s: an epoch 60 x 2 + 20 x 1 = 140 s, a fold 10 epochs
    kw = dict(sessions=100, epochs=10, folds=4, test_fraction=0.2, cores=16,
              nodes=2, relevance_passes=10, levels=9, scenarios=12)
    gpu = paper_scale.estimate(30.0, 1.0, 2.0, gpus=1, **kw)
    assert gpu["epoch"] == 140
    assert gpu["training"] == 2 * 1400                  # 4 folds on 2 GPUs: two rounds
    assert gpu["relevance_per_session"] == 10 * 2 + (12 * 9 + 1) * 1
    assert gpu["relevance"] == 50 * 129                 # 100 sessions on 2 GPUs
    assert gpu["preprocessing"] == pytest.approx(100 * 30 / 32)
    # the controls at 3 levels with 5 random masks: 12 x 3 x 6 forwards more
    ctl = paper_scale.estimate(30.0, 1.0, 2.0, gpus=1, control_levels=3, random_masks=5, **kw)
    assert ctl["relevance_per_session"] == 129 + 12 * 3 * 6
    cpu = paper_scale.estimate(30.0, 1.0, 2.0, gpus=0, **kw)
    assert cpu["training"] == 2 * 1400                  # a fold per node
    assert cpu["relevance"] == 4 * 129                  # 32 cores: ceil(100 / 32) rounds
