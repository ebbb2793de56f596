"""bench/focal_visibility.py on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import import_bench


@pytest.fixture(scope="module")
def focal():
    return import_bench("focal_visibility")


def test_region_spread_by_hand(focal):
    """Two sessions whose one-voxel regions lie 2 voxels apart along the last axis: the
    centre's sd is 1 voxel there (2 mm at 2 mm voxels), 0 elsewhere; no voxel is shared,
    so the largest share of sessions on one voxel is 1/2."""
    masks = np.zeros((2, 1, 1, 4), dtype=bool)
    masks[0, 0, 0, 0] = masks[1, 0, 0, 2] = True
    got = focal.region_spread(masks, voxel_mm=2.0)
    np.testing.assert_allclose(got["centre_sd_mm"], (0.0, 0.0, 2.0))
    assert got["largest_overlap"] == 0.5


def test_voxel_contrast_by_hand(focal):
    """Four sessions (mild, mild, severe, severe), three voxels of one contrast:
    voxel 0 = (0, 1 | 2, 3): means 0.5 and 2.5, pooled variance 0.5, t = 2 / sqrt(0.5);
    voxel 1 = (0, 1 | 1, 0): t = 0;  voxel 2 = (1, 0 | 3, 5): means 0.5 and 4, pooled
    variance (0.5 + 2) / 2, t = 3.5 / sqrt(1.25). The region is voxel 1: the strongest
    region voxel has |t| 0, the strongest outside 3.5 / sqrt(1.25), and sorted by |t| the
    region's first voxel comes third (rank 2)."""
    images = np.array([[0, 0, 1], [1, 1, 0], [2, 1, 3], [3, 0, 5]], float).reshape(4, 1, 1, 1, 3)
    labels = [0, 0, 1, 1]
    region = np.array([False, True, False]).reshape(1, 1, 3)
    cerebrum = np.ones((1, 1, 3), bool)
    row = focal.voxel_contrast(images, labels, region, cerebrum).iloc[0]
    assert row["max_t_region"] == pytest.approx(0.0)
    assert row["max_t_outside"] == pytest.approx(3.5 / np.sqrt(1.25))
    assert row["first_region_rank"] == 2
    # outside the cerebrum a voxel counts nowhere: without voxel 2 the strongest outside
    # is voxel 0, and the region's voxel comes second
    cerebrum[0, 0, 2] = False
    row = focal.voxel_contrast(images, labels, region, cerebrum).iloc[0]
    assert row["max_t_outside"] == pytest.approx(2 / np.sqrt(0.5))
    assert row["first_region_rank"] == 1
