"""The group statistics in MNI152 (gamer_mril.assessment.groupstats,
docs/method.md#77-group-statistics-in-mni152): the GLM t against scipy and nilearn, the
permutation p by hand and by brute force, the FWE p's error rate under the null, the
cluster table on a constructed map, the normalisation of the relevance, and the jobs on
small files."""

from __future__ import annotations

import json
from itertools import permutations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from gamer_mril import CONTRASTS
from gamer_mril.assessment import groupstats as G
from gamer_mril.assessment import groupstats_jobs as J
from gamer_mril.io import sidecar_path


def _design(rng, n, n_severe):
    group = np.r_[np.ones(n_severe), np.zeros(n - n_severe)]
    age = rng.normal(45, 10, n) + 5 * group          # age and group correlated
    return group, age


# ------------------------------------------------------------------ (a) the t statistic
def test_t_is_scipys_two_sample_t_without_covariate():
    rng = np.random.default_rng(0)
    group, _ = _design(rng, 23, 9)
    y = rng.normal(size=(23, 40)) + 0.5 * group[:, None] * rng.random(40)
    expect = stats.ttest_ind(y[group == 1], y[group == 0], equal_var=True).statistic
    np.testing.assert_allclose(G.glm_t(y, group), expect, rtol=1e-10)
    res = G.permutation_test(y, group, None, n_permutations=99, seed=1)
    np.testing.assert_allclose(res.t, expect, rtol=1e-10)


def test_t_is_nilearns_permuted_ols_t_with_age():
    from nilearn.mass_univariate import permuted_ols

    rng = np.random.default_rng(1)
    group, age = _design(rng, 30, 12)
    y = rng.normal(size=(30, 60)) + 0.05 * age[:, None] + 0.8 * group[:, None]
    out = permuted_ols(group[:, None], y, confounding_vars=age[:, None],
                       model_intercept=True, n_perm=0, two_sided_test=True,
                       output_type="dict", verbose=0)
    np.testing.assert_allclose(G.glm_t(y, group, age[:, None]), out["t"][0], rtol=1e-9)
    res = G.permutation_test(y, group, age[:, None], n_permutations=99, seed=2)
    np.testing.assert_allclose(res.t, out["t"][0], rtol=1e-9)
    # the t of an ordinary least-squares fit, column by column
    x = np.column_stack([np.ones(30), age, group])
    for v in range(3):
        beta, rss = np.linalg.lstsq(x, y[:, v], rcond=None)[:2]
        se = np.sqrt(rss[0] / 27 * np.linalg.inv(x.T @ x)[2, 2])
        assert res.t[v] == pytest.approx(beta[2] / se, rel=1e-9)


def test_a_constant_voxel_has_t_0_and_p_1():
    rng = np.random.default_rng(2)
    group, age = _design(rng, 12, 5)
    y = rng.normal(size=(12, 3))
    y[:, 1] = 4.0
    res = G.permutation_test(y, group, age[:, None], n_permutations=200, seed=0)
    assert res.t[1] == 0 and res.p_fwe[1] == 1 and res.p_uncorrected[1] == 1
    assert np.isfinite(res.t).all()


# ------------------------------------------------------- (b) exhaustive, by hand and brute force
def test_four_subjects_two_voxels_by_hand():
    """2 severe (subjects 0, 1), 2 mild, no covariate: the 24 orderings give the 6 splits
    4 times each; both voxels hold 0..3, so |t| grows with the |mean difference| alike.
    Voxel 1 (0, 1, 2, 3): difference -2, t = -2 / sqrt(0.5) = -2 sqrt 2, matched only by
    the split {2, 3}: p = 2/6. Voxel 2 (0, 2, 1, 3): difference -1, t = -1/sqrt 2; splits
    with |difference| >= 1: {0,1}, {2,3}, {0,2}, {1,3}: p = 4/6. Maximum |difference|
    over the voxels per split: 2, 2, 2, 2, 0, 0, so both FWE p are 4/6."""
    y = np.array([[0, 0], [1, 2], [2, 1], [3, 3]], dtype=float)
    group = np.array([1, 1, 0, 0])
    res = G.permutation_test(y, group, None, n_permutations=23)
    assert res.exhaustive and res.n_permutations == 24
    np.testing.assert_allclose(res.t, [-2 * np.sqrt(2), -1 / np.sqrt(2)], rtol=1e-12)
    np.testing.assert_allclose(res.p_uncorrected, [2 / 6, 4 / 6], rtol=1e-12)
    np.testing.assert_allclose(res.p_fwe, [4 / 6, 4 / 6], rtol=1e-12)
    assert res.max_t.max() == pytest.approx(2 * np.sqrt(2), rel=1e-5)


def _brute_force(y, group, age):
    """Freedman-Lane by enumeration: every ordering of the reduced model's residuals,
    each fit by least squares."""
    n = len(group)
    z = np.column_stack([np.ones(n), age])
    x = np.column_stack([z, group])
    fitted = z @ np.linalg.lstsq(z, y, rcond=None)[0]
    resid = y - fitted

    def t_of(data):
        beta, rss = np.linalg.lstsq(x, data, rcond=None)[:2]
        return beta[2] / np.sqrt(rss / (n - 3) * np.linalg.inv(x.T @ x)[2, 2])

    t0 = t_of(y)
    ts = np.array([t_of(fitted + resid[list(order)]) for order in permutations(range(n))])
    tol = 1e-9 * np.abs(t0).max()
    p_unc = (np.abs(ts) >= np.abs(t0) - tol).mean(axis=0)
    p_fwe = (np.abs(ts).max(axis=1)[:, None] >= np.abs(t0)[None] - tol).mean(axis=0)
    return t0, p_unc, p_fwe


def test_six_subjects_with_age_agree_with_brute_force():
    rng = np.random.default_rng(3)
    group, age = _design(rng, 6, 3)
    y = rng.normal(size=(6, 2)) + np.array([1.5, 0.0]) * group[:, None]
    res = G.permutation_test(y, group, age[:, None], n_permutations=5000)
    assert res.exhaustive and res.n_permutations == 720
    t0, p_unc, p_fwe = _brute_force(y, group, age)
    np.testing.assert_allclose(res.t, t0, rtol=1e-9)
    np.testing.assert_allclose(res.p_uncorrected, p_unc, rtol=0, atol=1e-12)
    np.testing.assert_allclose(res.p_fwe, p_fwe, rtol=0, atol=1e-12)
    assert (res.p_fwe >= res.p_uncorrected).all()


def test_drawn_permutations_are_seeded_and_count_the_identity():
    rng = np.random.default_rng(4)
    group, age = _design(rng, 20, 8)
    y = rng.normal(size=(20, 30))
    one = G.permutation_test(y, group, age[:, None], 300, seed=G.map_seed(0, "scenario-03"))
    again = G.permutation_test(y, group, age[:, None], 300, seed=G.map_seed(0, "scenario-03"))
    other = G.permutation_test(y, group, age[:, None], 300, seed=G.map_seed(0, "scenario-04"))
    assert not one.exhaustive and one.n_permutations == 301
    np.testing.assert_array_equal(one.p_fwe, again.p_fwe)
    assert not np.array_equal(one.max_t, other.max_t)
    # p is a count over 301 permutations, the identity among them: never below 1/301
    assert np.allclose(one.p_fwe * 301, np.rint(one.p_fwe * 301))
    assert one.p_fwe.min() >= 1 / 301 and one.max_t[0] == pytest.approx(np.abs(one.t).max())
    # the FWE p is the share of permutations whose maximum |t| reaches the voxel's |t|
    for v in range(30):
        share = (one.max_t >= np.abs(one.t[v]) * (1 - 1e-4)).mean()
        assert one.p_fwe[v] == pytest.approx(share, abs=1 / 301 + 1e-12)


# --------------------------------------------------------------- (c) error rates
def test_family_wise_error_rate_under_the_null_is_about_alpha():
    rng = np.random.default_rng(5)
    reps, hits = 400, 0
    for r in range(reps):
        group, age = _design(rng, 16, 7)
        y = rng.normal(size=(16, 40)) + 0.03 * age[:, None]     # an age effect, no group's
        res = G.permutation_test(y, group, age[:, None], n_permutations=199, seed=r)
        hits += bool((res.p_fwe < 0.05).any())
    # binomial sd at 400 repetitions: 0.011
    assert 0.02 <= hits / reps <= 0.085, hits / reps


def test_a_planted_effect_is_found_where_it_is():
    rng = np.random.default_rng(6)
    group, age = _design(rng, 40, 16)
    y = rng.normal(size=(40, 500))
    block = np.arange(100, 130)
    y[:, block] += 3.0 * group[:, None]
    res = G.permutation_test(y, group, age[:, None], n_permutations=999, seed=1)
    significant = np.flatnonzero(res.p_fwe < 0.05)
    assert set(significant) <= set(block)
    assert len(significant) >= 0.8 * len(block)
    assert (res.t[significant] > 0).all()                   # severe > mild
    assert res.critical_t(0.05) <= res.t[significant].min()


# ------------------------------------------------------------------ (d) clusters
def test_cluster_table_on_a_constructed_map():
    t = np.zeros((12, 10, 8))
    p = np.ones_like(t)
    t[1:4, 1:3, 1:3] = 3.0                 # 12 voxels, severe > mild
    t[2, 2, 2] = 5.0                       # its peak
    t[8, 7, 5] = -4.0                      # two voxels touching at a corner: one cluster
    t[9, 8, 6] = -6.0
    t[6, 6, 6] = 7.0                       # large t, not significant
    p[t != 0] = 0.01
    p[6, 6, 6] = 0.2
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    affine[:3, 3] = [-90.0, -126.0, -72.0]
    table = G.cluster_table(t, p, affine)
    assert list(table.columns) == G.CLUSTER_COLUMNS
    assert list(table["direction"]) == ["severe > mild", "mild > severe"]
    pos, neg = table.iloc[0], table.iloc[1]
    assert (pos["voxels"], pos["volume_mm3"]) == (12, 12 * 64.0)
    assert (pos["i"], pos["j"], pos["k"], pos["peak_t"]) == (2, 2, 2, 5.0)
    assert (pos["x"], pos["y"], pos["z"]) == (-82.0, -118.0, -64.0)
    assert pos["mean_t"] == pytest.approx((11 * 3.0 + 5.0) / 12)
    assert (neg["voxels"], neg["peak_t"], neg["mean_t"]) == (2, -6.0, -5.0)
    assert (neg["x"], neg["y"], neg["z"]) == (-90 + 36.0, -126 + 32.0, -72 + 24.0)
    assert table["aal3"].map(type).eq(str).all()
    empty = G.cluster_table(t, np.ones_like(t), affine)
    assert empty.empty and list(empty.columns) == G.CLUSTER_COLUMNS


def test_clusters_are_split_by_sign():
    """Neighbouring voxels of opposite sign are two clusters."""
    t = np.zeros((5, 5, 5))
    t[1, 1, 1], t[1, 1, 2] = 3.0, -3.0
    table = G.cluster_table(t, np.where(t != 0, 0.0, 1.0), np.eye(4))
    assert sorted(table["voxels"]) == [1, 1]
    assert sorted(table["peak_t"]) == [-3.0, 3.0]


# ------------------------------------------------------------------ (e) normalisation
def test_normalisation_counts_the_positive_cerebrum_only():
    rng = np.random.default_rng(7)
    cerebrum = np.zeros((6, 5, 4), dtype=bool)
    cerebrum[1:5, 1:4, 1:3] = True
    maps = rng.normal(size=(3, 6, 5, 4))
    maps[1] = -np.abs(maps[1])                  # no positive voxel at all
    maps[2][~cerebrum] = 100.0                  # large values outside do not count
    normed, sums = G.normalise_relevance(maps, cerebrum)
    for v in (0, 2):
        expect = np.where(cerebrum & (maps[v] > 0), maps[v], 0) / \
            np.where(cerebrum & (maps[v] > 0), maps[v], 0).sum()
        np.testing.assert_allclose(normed[v], expect, rtol=1e-6)
        assert normed[v][cerebrum].sum() == pytest.approx(1.0, rel=1e-6)
        assert sums[v] == pytest.approx(maps[v][cerebrum & (maps[v] > 0)].sum())
    assert not normed[:, ~cerebrum].any() and (normed >= 0).all()
    assert sums[1] == 0 and not normed[1].any()


def test_one_session_per_subject_is_the_first_in_the_table():
    table = pd.DataFrame({"subject": ["b", "a", "b", "c"], "session": ["2", "1", "1", "1"],
                          "age": [40, 50, 39, 60]})
    labels = {("b", "2"): 1, ("a", "1"): 0, ("b", "1"): 0, ("c", "1"): 1}
    out = G.one_session_per_subject(table, labels)
    assert list(zip(out["subject"], out["session"], out["label"])) == \
        [("b", "2", 1), ("a", "1", 0), ("c", "1", 1)]
    with pytest.raises(ValueError, match="sub-c ses-1"):
        G.one_session_per_subject(table, {k: v for k, v in labels.items() if k[0] != "c"})


# ------------------------------------------------------------------ the jobs
def _identity(tmp_path):
    import ants

    path = str(tmp_path / "identity.mat")
    ants.write_transform(ants.create_ants_transform(transform_type="AffineTransform",
                                                    dimension=3), path)
    return {"affine": path, "coreg": path}


def test_warp_relevance_normalises_then_warps(tmp_path):
    """A session grid on the screen grid's own voxel centres (4 mm) and identity
    transforms: the warped stack is the normalised map, voxel for voxel, summing to 1."""
    from gamer_mril.baselines import screen_grid
    from gamer_mril.scenario_stack import load_stack, save_stack

    shape, grid = screen_grid(4.0)
    corner = np.array([10, 12, 9])
    affine = grid.copy()
    affine[:3, 3] = (grid @ np.array([*corner, 1.0]))[:3]
    rng = np.random.default_rng(8)
    local = (8, 9, 7)
    cerebrum = np.zeros(local, dtype=bool)
    cerebrum[1:7, 1:8, 1:6] = True
    maps = {3: rng.normal(size=local), 5: rng.normal(size=local + (3,))}
    save_stack(maps, affine, tmp_path / "relmap.nii.gz")
    nib.save(nib.Nifti1Image(cerebrum.astype(np.uint8), affine), tmp_path / "cerebrum.nii.gz")
    out = tmp_path / "relnorm.nii.gz"
    J.run_warp_relevance(tmp_path / "relmap.nii.gz", tmp_path / "cerebrum.nii.gz",
                         _identity(tmp_path), out, screen_voxel_mm=4.0, subject="01",
                         session="1")
    warped, out_affine, table = load_stack(out)
    np.testing.assert_allclose(out_affine, grid)
    assert warped[3].shape == shape and warped[5].shape == shape + (3,)
    box = tuple(slice(c, c + n) for c, n in zip(corner, local))
    expect = G.normalise_relevance(np.moveaxis(maps[5], -1, 0).astype(np.float32), cerebrum)[0]
    np.testing.assert_allclose(np.moveaxis(warped[5][box], -1, 0), expect, atol=1e-6)
    assert warped[3].sum() == pytest.approx(1.0, rel=1e-4)
    facts = json.loads(sidecar_path(out).read_text())["Facts"]
    assert facts["scenarios"]["5"]["MWF"]["all_zero"] is False
    assert facts["scenarios"]["3"]["combined"]["template_sum"] == pytest.approx(1.0, rel=1e-4)


def _input_job(tmp_path, n_severe, effect=30.0, permutations=200):
    """Ten subjects (sub-00 with two sessions), ``n_severe`` of them severe with a planted
    qT1 difference in a block of the template cerebrum, through run_group_input_stats.
    Returns (outputs, the grid's cerebrum, the first sessions' files)."""
    from gamer_mril.baselines import screen_grid
    from gamer_mril.templates import cerebellum_mask, template_brain_mask, template_t1w

    shape, grid = screen_grid(4.0)
    brain, cereb, t1w = (tmp_path / f"{n}.nii.gz" for n in ("brain", "cereb", "t1w"))
    nib.save(template_brain_mask(2), brain)
    nib.save(cerebellum_mask(2), cereb)
    nib.save(template_t1w(2), t1w)
    cerebrum = G.template_cerebrum(nib.load(brain), nib.load(cereb), shape, grid)
    rng = np.random.default_rng(9)
    rows, labels, paths = [], [], []
    for k in range(10):
        for ses in (("1", "2") if k == 0 else ("1",)):
            rows.append(dict(subject=f"{k:02d}", session=ses, age=40 + k, edss=6 if k < 4 else 2))
            labels.append(int(k < n_severe))
            data = rng.normal(size=shape + (3,)).astype(np.float32)
            if k < n_severe:
                data[22:25, 30:33, 25:28, 0] += effect       # qT1, severe
            data[~cerebrum] = 0
            path = tmp_path / f"sub-{k:02d}_ses-{ses}_space-X_desc-screen_maps.nii.gz"
            nib.save(nib.Nifti1Image(data, grid), path)
            paths.append(str(path))
    table = pd.DataFrame(rows)
    table.to_csv(tmp_path / "analysed.tsv", sep="\t", index=False)
    pd.DataFrame({"subject": table["subject"], "session": table["session"],
                  "label": labels}).to_csv(tmp_path / "pred.tsv", sep="\t", index=False)
    outputs = {(c, k): tmp_path / "stats" / f"{c}_{k}.nii.gz" for c in CONTRASTS for k in J.STATS}
    J.run_group_input_stats(paths, tmp_path / "pred.tsv", tmp_path / "analysed.tsv", brain,
                            cereb, t1w, outputs, clusters_out=tmp_path / "clusters.tsv",
                            figure_out=tmp_path / "fig.png", group_permutations=permutations,
                            seed=0)
    return outputs, cerebrum, [p for p in paths if "_ses-2_" not in p]


def test_group_input_stats_job(tmp_path):
    """The files, the t against glm_t (sub-00's first session only), the cluster table of
    the planted block and the sidecar's numbers."""
    outputs, cerebrum, first = _input_job(tmp_path, n_severe=4)
    assert cerebrum[22:25, 30:33, 25:28].all()
    y = np.stack([np.asarray(nib.load(p).dataobj)[..., 0][cerebrum] for p in first])
    t = np.asarray(nib.load(outputs[("qT1", "t")]).dataobj)
    assert t.shape == cerebrum.shape
    np.testing.assert_allclose(t[cerebrum], G.glm_t(y, np.r_[np.ones(4), np.zeros(6)],
                                                    np.arange(40, 50)[:, None]), rtol=1e-5)
    mean = np.asarray(nib.load(outputs[("qT1", "mean-severe")]).dataobj)
    np.testing.assert_allclose(mean[cerebrum], y[:4].mean(axis=0), rtol=1e-5, atol=1e-6)
    clusters = pd.read_csv(tmp_path / "clusters.tsv", sep="\t")
    assert list(clusters.columns) == ["contrast"] + G.CLUSTER_COLUMNS
    top = clusters[clusters["contrast"] == "qT1"].iloc[0]
    assert top["direction"] == "severe > mild" and 22 <= top["i"] <= 24
    assert top["voxels"] >= 20
    side = json.loads(sidecar_path(outputs[("qT1", "pfwe")]).read_text())
    assert side["Parameters"]["group_permutations"] == 200
    facts = side["Facts"]
    assert facts["groups"] == {"severe": 4, "mild": 6} and len(facts["subjects"]) == 10
    assert facts["per_volume"]["qT1"]["n_permutations"] == 201
    assert "one session per subject" in facts["exchangeability"]
    assert (tmp_path / "fig.png").stat().st_size > 10_000


def test_one_group_only_gives_no_test(tmp_path):
    outputs, cerebrum, _ = _input_job(tmp_path, n_severe=0, permutations=100)
    assert not np.asarray(nib.load(outputs[("qT1", "t")]).dataobj).any()
    assert (np.asarray(nib.load(outputs[("NDI", "pfwe")]).dataobj) == 1).all()
    assert pd.read_csv(tmp_path / "clusters.tsv", sep="\t").empty
    facts = json.loads(sidecar_path(outputs[("MWF", "t")]).read_text())["Facts"]
    assert facts["groups"] == {"severe": 0, "mild": 10}
    assert facts["per_volume"]["MWF"]["tested"] is False


def test_the_viewer_shows_the_t_maps_where_significant(tmp_path):
    from gamer_mril.templates import template_t1w
    from gamer_mril.viewer import t_panels

    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    affine[:3, 3] = [-90.0, -126.0, -72.0]
    t = np.zeros((46, 55, 46, 3), dtype=np.float32)
    t[20:23, 25:28, 20:23, 1] = 6.0
    p = np.where(t > 0, 0.001, 1.0).astype(np.float32)
    nib.save(nib.Nifti1Image(t, affine), tmp_path / "t.nii.gz")
    nib.save(nib.Nifti1Image(p, affine), tmp_path / "p.nii.gz")
    panels = t_panels({"scenario 5": (tmp_path / "t.nii.gz", tmp_path / "p.nii.gz")},
                      template_t1w(2))
    headings = [h for h, _ in panels]
    assert len(panels) == 3
    assert headings[1] == "Severe vs mild, t, scenario 5, MWF: 27 voxels with FWE p < 0.05"
    assert "no voxel with FWE p < 0.05" in headings[0]
    assert "brainsprite" in panels[1][1].get_iframe()
