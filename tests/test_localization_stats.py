"""bench/localization_stats.py: the permutation maps' figures against the planted region,
by hand on small arrays and end to end on a hand-built results folder."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import import_bench

from gamer_mril import templates


@pytest.fixture(scope="module")
def ls():
    return import_bench("localization_stats")


def test_figures_by_hand(ls):
    cerebrum = np.ones((8, 8, 8), bool)
    cerebrum[0] = False                       # 448 voxels
    region = np.zeros_like(cerebrum)
    region[3:5, 3:5, 3:5] = True              # 8 voxels
    p = np.ones(cerebrum.shape)
    t = np.zeros(cerebrum.shape)
    p[3, 3, 3] = p[3, 3, 4] = 0.01            # two inside the region, t > 0
    t[3, 3, 3] = t[3, 3, 4] = 4.0
    p[5, 3, 3] = 0.02                         # touching the region (one voxel out), t < 0
    t[5, 3, 3] = -3.0
    p[7, 7, 7] = 0.04                         # far away
    p[0, 3, 3] = 0.0                          # outside the cerebrum: never counted
    p[1, 1, 1] = 0.05                         # not below alpha
    f = ls.significance_figures(p, t, region, cerebrum, alpha=0.05)
    assert f["n_significant"] == 4 and f["n_positive"] == 2
    assert f["inside"] == pytest.approx(2 / 4)
    assert f["inside_tol1"] == pytest.approx(3 / 4)
    assert f["chance"] == pytest.approx(8 / 448)
    assert f["found"] == pytest.approx(2 / 8)
    assert f["region_voxels"] == 8


def test_nothing_significant_is_not_a_share(ls):
    cerebrum = np.ones((4, 4, 4), bool)
    region = np.zeros_like(cerebrum)
    region[1, 1, 1] = True
    f = ls.significance_figures(np.ones((4, 4, 4)), np.zeros((4, 4, 4)), region, cerebrum)
    assert f["n_significant"] == 0 and f["found"] == 0.0
    assert math.isnan(f["inside"]) and math.isnan(f["inside_tol1"])


#: a 10^3 grid of 2 mm in the left deep white matter (inside the template brain)
AFFINE = np.array([[2.0, 0, 0, -30], [0, 2.0, 0, -30], [0, 0, 2.0, 0], [0, 0, 0, 1]])


def _save(data, path, affine=AFFINE):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data, np.float32), affine), str(path))


def test_table_end_to_end(ls, tmp_path):
    brain = templates.template_brain_mask(2)
    i, j, k = (int(round(v)) for v in np.linalg.solve(brain.affine, AFFINE)[:3, 3])
    assert np.asarray(brain.dataobj)[i:i + 10, j:j + 10, k:k + 10].all()   # precondition

    results, cohort = tmp_path / "results", tmp_path / "cohort"
    region = np.zeros((10, 10, 10))
    region[2:4, 2:4, 2:4] = 1
    _save(region, cohort / "ground_truth"
          / "space-MNI152NLin2009cAsym_res-2_desc-planted_mask.nii.gz")
    _save(np.zeros((10, 10, 10)), results / "templates"
          / "tpl-MNI152NLin2009cAsym_res-01_desc-cerebellum_mask.nii.gz")
    stats = results / "group" / "stats"
    tpl = "tpl-MNI152NLin2009cAsym"
    # scenario 1: three volumes; qT1's one significant voxel in the region, MWF's outside
    p4, t4 = np.ones((10, 10, 10, 3)), np.ones((10, 10, 10, 3))
    p4[2, 2, 2, 0] = 0.001
    p4[8, 8, 8, 1] = 0.001
    _save(p4, stats / f"{tpl}_scenario-01_desc-relnorm_stat-pfwe_statmap.nii.gz")
    _save(t4, stats / f"{tpl}_scenario-01_desc-relnorm_stat-t_statmap.nii.gz")
    # the MWF input map: the whole region significant, with t < 0
    p3, t3 = np.ones((10, 10, 10)), np.zeros((10, 10, 10))
    p3[region > 0] = 0.0
    t3[region > 0] = -5.0
    _save(p3, stats / f"{tpl}_map-MWF_desc-screen_stat-pfwe_statmap.nii.gz")
    _save(t3, stats / f"{tpl}_map-MWF_desc-screen_stat-t_statmap.nii.gz")

    out = tmp_path / "stats.tsv"
    assert ls.main([str(results), str(cohort), "--out", str(out)]) == 0
    t = pd.read_csv(out, sep="\t", keep_default_na=False, na_values=["n/a"])
    assert list(t.columns) == ls.COLUMNS and len(t) == 4
    row = {(r.test, r.map): r for r in t.itertuples()}
    assert row[("relevance", "qT1")].n_significant == 1
    assert row[("relevance", "qT1")].inside == 1.0
    assert row[("relevance", "qT1")].found == pytest.approx(1 / 8)
    assert row[("relevance", "MWF")].inside == 0.0
    assert row[("relevance", "NDI")].n_significant == 0
    assert math.isnan(row[("relevance", "NDI")].inside)
    mwf = row[("input", "MWF")]
    assert (mwf.n_significant, mwf.n_positive, mwf.inside, mwf.found) == (8, 0, 1.0, 1.0)
    assert mwf.chance == pytest.approx(8 / 1000)
    assert set(t.loc[t.test == "relevance", "scenario"].astype(int)) == {1}
