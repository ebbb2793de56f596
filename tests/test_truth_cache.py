"""bench/truth_cache.py: the network inputs made from a synthetic cohort's ground truth,
in the NDI grid (as the workflow makes them) or in a grid fixed to the head."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import import_bench

from gamer_mril.synthetic import generate_cohort
from gamer_mril.training import open_cache


@pytest.fixture(scope="module")
def two_subjects_twice(tmp_path_factory):
    """Two subjects, each scanned twice in other head poses (same anatomy)."""
    cohort = tmp_path_factory.mktemp("cohort")
    generate_cohort(cohort, n_subjects=2, followup_fraction=1.0, severe_fraction=0.5,
                    scale=3.0, seed=0, log=lambda *_: None)
    return cohort


def test_aligned_inputs_undo_the_head_pose(two_subjects_twice, tmp_path):
    """The two sessions of one subject differ by their head poses only (and noise). In
    the native grid that moves the head between them; in the aligned grid it is undone,
    so their maps agree better than native ones do, and every aligned map has the same
    grid."""
    truth_cache = import_bench("truth_cache")
    agreement = {}
    for space in truth_cache.SPACES:
        truth_cache.build_truth_cache(two_subjects_twice, tmp_path / space, (32, 32, 38),
                                      space=space)
        cache = open_cache(tmp_path / space / "cache")
        images = np.asarray(cache.images, dtype=np.float64)
        subjects = cache.index["subject"].to_numpy()
        agreement[space] = []
        for s in np.unique(subjects):
            i, j = np.flatnonzero(subjects == s)
            for c in range(images.shape[1]):
                agreement[space].append(np.corrcoef(images[i, c].ravel(),
                                                    images[j, c].ravel())[0, 1])
    native, aligned = np.array(agreement["native"]), np.array(agreement["aligned"])
    assert len(aligned) == 6
    assert (aligned > native).all(), (native, aligned)
    assert (aligned - native).mean() > 0.1          # here 0.13 on average (3 contrasts x 2)
    import nibabel as nib
    grids = {nib.load(p).affine.tobytes()
             for p in (tmp_path / "aligned" / "maps").glob("*.nii.gz")}
    assert len(grids) == 1


def test_an_unknown_space_is_refused(tmp_path):
    truth_cache = import_bench("truth_cache")
    with pytest.raises(ValueError, match="space must be one of"):
        truth_cache.build_truth_cache(tmp_path, tmp_path / "out", space="template")
