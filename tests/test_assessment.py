"""Hand-computed checks of gamer_mril.assessment (docs/method.md#7-assessment)."""

from __future__ import annotations

from gamer_mril.assessment import correlation, figures, heatmaps, inverting
from gamer_mril.assessment import masks as QM
from gamer_mril import statistics
import itertools
import logging
import math

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import stats


LOGGER = "gamer_mril.assessment"

# MNI152 2 mm grid of nilearn's template (the one the workflow warps to).
MNI2_AFFINE = np.array([[2.0, 0, 0, -98], [0, 2.0, 0, -134], [0, 0, 2.0, -72], [0, 0, 0, 1]])
MNI2_SHAPE = (99, 117, 95)


def mni_to_voxel(xyz):
    ijk = np.linalg.solve(MNI2_AFFINE, np.array([*xyz, 1.0]))[:3]
    assert np.allclose(ijk, np.rint(ijk))
    return tuple(int(v) for v in np.rint(ijk))


# --------------------------------------------------------------------------------------
# Quantile masks
# --------------------------------------------------------------------------------------

def _one_to_ten_map():
    """(2, 3, 4) map: 1..10 inside the brain (scattered), zeros and negatives inside,
    large positives and a NaN outside."""
    rng = np.random.default_rng(3)
    flat = np.zeros(24)
    brain = np.zeros(24, dtype=bool)
    pos = rng.permutation(24)
    flat[pos[:10]] = np.arange(1, 11)            # positive, in brain
    flat[pos[10:12]] = [-5.0, -100.0]            # negative, in brain
    flat[pos[12:14]] = 0.0                       # zero, in brain
    brain[pos[:14]] = True
    flat[pos[14]] = 1000.0                       # outside the brain
    flat[pos[15]] = 50.0
    flat[pos[16]] = np.nan
    return flat.reshape(2, 3, 4), brain.reshape(2, 3, 4)


@pytest.mark.parametrize("n, kept", [
    (10, {10}),                   # 90th pct of 1..10 = 1 + 0.9 * 9 = 9.1
    (30, {8, 9, 10}),             # 70th pct = 7.3 ("lower"/"nearest" would keep 7 too)
    (50, {6, 7, 8, 9, 10}),       # 50th pct = 5.5
    (90, set(range(2, 11))),      # 10th pct = 1.9
    (100, set(range(1, 11))),     # 0th pct = 1
])
def test_quantile_mask_known_percentiles(n, kept):
    rel, brain = _one_to_ten_map()
    mask = QM.quantile_mask(rel, brain, n)
    assert mask.dtype == bool and mask.shape == rel.shape
    expected = brain & np.isin(np.nan_to_num(rel), sorted(kept))
    np.testing.assert_array_equal(mask, expected)
    assert not (mask & ~brain).any()               # nothing outside the brain
    assert not (mask & (np.nan_to_num(rel) <= 0)).any()


def test_quantile_mask_ties_are_kept():
    rel = np.array([1.0, 2.0, 3.0, 3.0, 3.0, 3.0, 0.0, -1.0]).reshape(2, 2, 2)
    brain = np.ones(rel.shape, bool)
    threes = rel == 3.0
    # 90th pct of [1, 2, 3, 3, 3, 3]: index 4.5 -> 3, so all four tied voxels (4/6 > 10 %)
    np.testing.assert_array_equal(QM.quantile_mask(rel, brain, 10), threes)
    np.testing.assert_array_equal(QM.quantile_mask(rel, brain, 70), threes)   # 30th pct: 2.5
    # 10th pct: index 0.5 -> 1.5: keeps 2 and the threes
    np.testing.assert_array_equal(QM.quantile_mask(rel, brain, 90), rel >= 2.0)


def test_quantile_mask_float32_threshold_in_float64():
    # float32 values; the percentile is linear in float64 so the 50 % mask keeps 2 of 4
    rel = np.array([0.1, 0.2, 0.3, 0.4], dtype=np.float32).reshape(1, 2, 2)
    mask = QM.quantile_mask(rel, np.ones(rel.shape, bool), 50)
    np.testing.assert_array_equal(mask.ravel(), [False, False, True, True])


def test_quantile_mask_empty_warns(caplog):
    rel = np.array([0.0, -1.0, -2.0, 5.0]).reshape(1, 2, 2)
    brain = np.array([True, True, True, False]).reshape(1, 2, 2)   # the positive is outside
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        mask = QM.quantile_mask(rel, brain, 40)
    assert mask.shape == rel.shape and mask.dtype == bool and not mask.any()
    assert any(r.name == LOGGER and r.levelno == logging.WARNING for r in caplog.records)


@pytest.mark.parametrize("n", [0, -10, 100.5, 150, float("nan"), "ten"])
def test_quantile_mask_bad_level(n):
    rel, brain = _one_to_ten_map()
    with pytest.raises(ValueError, match="level"):
        QM.quantile_mask(rel, brain, n)


def test_quantile_mask_bad_shapes_and_values():
    rel, brain = _one_to_ten_map()
    with pytest.raises(ValueError, match="brain mask shape"):
        QM.quantile_mask(rel, brain[:1], 10)
    with pytest.raises(ValueError, match=r"\(D, H, W\)"):
        QM.quantile_mask(rel[0], brain[0], 10)
    bad = rel.copy()
    bad[brain] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        QM.quantile_mask(bad, brain, 10)


def test_quantile_masks_individual_and_combined(caplog):
    rel, brain = _one_to_ten_map()
    maps = np.stack([rel, -np.abs(np.nan_to_num(rel)),
                     np.where(brain & (np.nan_to_num(rel) > 0), 11 - rel, 0)])
    levels = (10, 30, 50)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        ind = QM.quantile_masks(maps, brain, levels=levels, kind="individual")
    assert ind.shape == (3, 3, 2, 3, 4) and ind.dtype == bool
    # contrast 1 has no positive relevance: empty and one warning naming it
    assert not ind[:, 1].any()
    assert sum("contrast 1" in r.getMessage() for r in caplog.records) == 1
    for k, n in enumerate(levels):
        for c in range(3):
            np.testing.assert_array_equal(ind[k, c], QM.quantile_mask(maps[c], brain, n))
    # contrast 2 reverses the order: its top 10 % is the voxel of value 1 in contrast 0
    np.testing.assert_array_equal(ind[0, 2], brain & (rel == 1))

    comb = QM.quantile_masks(rel, brain, levels=levels, kind="combined")
    assert comb.shape == (3, 3, 2, 3, 4) and comb.dtype == bool
    for k, n in enumerate(levels):
        for c in range(3):
            np.testing.assert_array_equal(comb[k, c], QM.quantile_mask(rel, brain, n))
    assert comb[1, 0].sum() == 3          # top 30: 8, 9, 10
    comb[0, 0, 0, 0, 0] = ~comb[0, 0, 0, 0, 0]      # a real, writable array
    assert comb[0, 1, 0, 0, 0] != comb[0, 0, 0, 0, 0]

    with pytest.raises(ValueError, match="individual maps"):
        QM.quantile_masks(rel, brain, kind="individual")
    with pytest.raises(ValueError, match="combined map"):
        QM.quantile_masks(maps, brain, kind="combined")
    with pytest.raises(ValueError, match="kind"):
        QM.quantile_masks(rel, brain, kind="both")


# --------------------------------------------------------------------------------------
# Voxel inverting
# --------------------------------------------------------------------------------------

def test_inverting_auc_inverts_exactly_inside_the_masks():
    """The inversion the workflow runs (inside inverting_auc): x -> 1 - x bit for bit
    inside the mask, every other voxel untouched, the dtype kept, the input unchanged;
    individual masks per contrast and one mask shared by the contrasts."""
    rng = np.random.default_rng(0)
    images = rng.random((2, 3, 2, 3, 4)).astype(np.float32)
    before = images.copy()
    individual = rng.random((2, 1) + images.shape[1:]) < 0.4     # (S, levels, L, D, H, W)
    shared = rng.random((2, 1) + images.shape[2:]) < 0.4         # (S, levels, D, H, W)
    seen = []

    def predict(batch, ages):
        seen.append(batch.copy())
        return np.full(len(batch), 0.5)

    inverting.inverting_auc(predict, images, [50.0, 60.0], [0, 1],
                            {1: individual, 3: shared}, levels=[40], batch_size=1)
    # per session: the baseline, then scenario 1, then scenario 3 (one image per call)
    assert len(seen) == 6 and all(b.dtype == np.float32 for b in seen)
    np.testing.assert_array_equal(images, before)
    for i in range(2):
        base, ind, sh = seen[3 * i:3 * i + 3]
        np.testing.assert_array_equal(base[0], images[i])
        m = individual[i, 0]
        np.testing.assert_array_equal(ind[0][m], np.float32(1) - images[i][m])
        np.testing.assert_array_equal(ind[0][~m], images[i][~m])
        for c in range(3):
            m = shared[i, 0]
            np.testing.assert_array_equal(sh[0][c][m], np.float32(1) - images[i, c][m])
            np.testing.assert_array_equal(sh[0][c][~m], images[i, c][~m])
    # hand values: 0.25 -> 0.75 inside, 0.75 stays outside
    tiny = np.array([0.25, 0.75, 0.0, 1.0], dtype=np.float32).reshape(1, 1, 1, 1, 4)
    mask = np.array([True, False, True, False]).reshape(1, 1, 1, 1, 1, 4)
    seen.clear()
    inverting.inverting_auc(predict, tiny, [50.0], [1], {1: mask}, levels=[10],
                            batch_size=1, return_probabilities=True, with_aucs=False)
    np.testing.assert_array_equal(seen[1].reshape(-1), [0.75, 0.75, 1.0, 1.0])
    with pytest.raises(ValueError, match="boolean"):
        inverting.inverting_auc(predict, images, [50.0, 60.0], [0, 1],
                                {1: individual.astype(int)}, levels=[40])
    with pytest.raises(ValueError, match="expected"):
        inverting.inverting_auc(predict, images, [50.0, 60.0], [0, 1],
                                {1: individual[..., :2]}, levels=[40])


def _inverted(x, mask):
    """x -> 1 - x inside ``mask`` (broadcast over the contrasts), by hand."""
    return np.where(mask, np.asarray(1, dtype=x.dtype) - x, x)


class LazyMasks:
    """Per-session masks served on demand, counting the reads."""

    def __init__(self, arrays):
        self.arrays = arrays
        self.reads = 0

    def __len__(self):
        return len(self.arrays)

    def __getitem__(self, i):
        self.reads += 1
        return self.arrays[i]


def test_inverting_auc_hand_computed():
    v = np.array([0.125, 0.25, 0.75, 0.875], dtype=np.float32)   # dyadic: 1 - v exact
    labels = np.array([0, 0, 1, 1])
    ages = np.array([30.0, 41.0, 52.0, 63.0])
    images = np.full((4, 3, 2, 2, 2), 0.25, dtype=np.float32)
    images[:, 0, 0, 0, 0] = v
    levels = (10, 20, 30)

    # scenario 1: individual masks (levels, L, D, H, W) per session
    m1 = np.zeros((4, 3, 3, 2, 2, 2), bool)
    m1[[2, 3], 0, 0, 0, 0, 0] = True     # N=10: invert v in sessions 2, 3
    m1[:, 1, 0, 0, 0, 0] = True          # N=20: invert v everywhere
    m1[2, 2, 0, 0, 0, 0] = True          # N=30: session 2 only
    m1[:, 2, 1, 1, 1, 1] = True          # ... plus a voxel predict does not read
    # scenario 4: one mask shared by the contrasts (levels, D, H, W), served lazily
    m4 = np.zeros((4, 3, 2, 2, 2), bool)
    m4[:, 0, 1, 1, 1] = True             # N=10: a voxel predict does not read
    m4[0, 1, 0, 0, 0] = True             # N=20: session 0 only
    lazy = LazyMasks(list(m4))           # N=30: empty masks

    calls = []

    def predict(batch, batch_ages):
        calls.append((batch.copy(), np.asarray(batch_ages).copy()))
        return batch[:, 0, 0, 0, 0].astype(np.float64)

    res, probs = inverting.inverting_auc(predict, images, ages, labels, {4: lazy, 1: list(m1)},
                                 levels=levels, batch_size=3, return_probabilities=True)
    # after inverting: scenario 1 N=10 -> [.125, .25, .25, .125]: pairs 1, 1/2, 1/2, 0
    #                  N=20 -> [.875, .75, .25, .125]: 0;  N=30 -> [.125, .25, .25, .875]:
    #                  1 + 1/2 + 1 + 1 = 3.5 of 4; scenario 4 N=20 -> [.875, .25, .75,
    #                  .875]: 0 + 1 + 1/2 + 1 = 2.5 of 4; N=10, N=30 unchanged.
    expected = pd.DataFrame(dict(scenario=[1, 1, 1, 4, 4, 4], N=[10, 20, 30] * 2,
                                 auc=[0.5, 0.0, 0.875, 1.0, 0.625, 1.0]))
    assert list(res.columns) == ["scenario", "N", "auc", "baseline_auc", "auc_drop",
                                 "n_sessions"]
    np.testing.assert_array_equal(res["scenario"], expected["scenario"])
    np.testing.assert_array_equal(res["N"], expected["N"])
    np.testing.assert_allclose(res["auc"], expected["auc"], rtol=0, atol=1e-12)
    assert (res["baseline_auc"] == 1.0).all()
    np.testing.assert_allclose(res["auc_drop"], 1.0 - expected["auc"], atol=1e-12)
    assert (res["n_sessions"] == 4).all()

    p = probs.set_index(["scenario", "N", "session"])["prob"]
    np.testing.assert_array_equal(p.loc[0, 0].to_numpy(), v)                 # baseline
    np.testing.assert_array_equal(p.loc[1, 10].to_numpy(), [0.125, 0.25, 0.25, 0.125])
    np.testing.assert_array_equal(p.loc[4, 20].to_numpy(), [0.875, 0.25, 0.75, 0.875])

    # batches of at most 3 sessions: (0, 1, 2) and (3,). The first: 1 baseline call, then
    # per scenario one call per level (3 sessions fill a call); the second: 1 baseline
    # call, then per scenario one call holding its three levels (3 x 1 session).
    assert len(calls) == (1 + 2 * 3) + (1 + 2 * 1)
    assert sorted(len(b) for b, _ in calls) == [1] + [3] * 9
    assert {tuple(a) for _, a in calls} == {(30.0, 41.0, 52.0), (63.0,), (63.0, 63.0, 63.0)}
    assert all(len(b) == len(a) for b, a in calls)
    assert lazy.reads == 4                       # each session's masks read once
    # every inverted batch predict saw is exactly the images inverted inside the masks
    for s, per_session in ((1, m1), (4, m4)):
        for k in range(len(levels)):
            want = np.stack([_inverted(images[i], per_session[i][k])
                             for i in range(3)])
            assert any(np.array_equal(want, b) for b, _ in calls)
        # session 3 alone: its three levels in one call, in level order
        want = np.stack([_inverted(images[3], per_session[3][k])
                         for k in range(len(levels))])
        assert any(np.array_equal(want, b) for b, _ in calls)
    np.testing.assert_array_equal(images[:, 0, 0, 0, 0], v)     # input untouched

    assert inverting.choose_scenario(res, n=10) == 1     # drops 0.5 vs 0
    assert inverting.choose_scenario(res, n=20) == 1     # drops 1.0 vs 0.375


def test_inverting_auc_rejects_bad_input():
    images = np.zeros((2, 3, 2, 2, 2), np.float32)
    masks = {1: np.zeros((2, 9, 3, 2, 2, 2), bool)}

    def predict(b, a):
        return np.zeros(len(b))

    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        inverting.inverting_auc(predict, images, [1, 2], [0, 2], masks)
    with pytest.raises(ValueError, match="expected"):
        inverting.inverting_auc(predict, images, [1, 2], [0, 1], masks, levels=(10, 20))
    with pytest.raises(ValueError, match="masks for 1 sessions"):
        inverting.inverting_auc(predict, images, [1, 2], [0, 1], {1: masks[1][:1]})
    with pytest.raises(ValueError, match="returned 1 values"):
        inverting.inverting_auc(lambda b, a: [0.5], images, [1, 2], [0, 1], masks)


def test_choose_scenario_ties_and_nan():
    df = pd.DataFrame(dict(scenario=[7, 3, 5, 9, 3], N=[40, 40, 40, 40, 30],
                           auc=[0.6, 0.6, np.nan, 0.7, 0.0], baseline_auc=0.9))
    assert inverting.choose_scenario(df, n=40) == 3      # 3 and 7 tie at 0.3; 5 is NaN
    assert inverting.choose_scenario(df, n=30) == 3
    with pytest.raises(ValueError, match="N = 50"):
        inverting.choose_scenario(df, n=50)


# --------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------

def _exact_two_sided_p(x, y):
    """scipy's two-sided definition, by enumerating every pairing of the ranks."""
    rx, ry = stats.rankdata(x), stats.rankdata(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    obs = rx @ ry
    perms = np.array(list(itertools.permutations(range(len(x)))))
    null = rx[perms] @ ry
    tol = 1e-9 * abs(obs)
    p_less = np.mean(null <= obs + tol)
    p_greater = np.mean(null >= obs - tol)
    return min(1.0, 2 * min(p_less, p_greater)), len(perms)


X7 = np.array([1.2, 3.4, 2.2, 5.0, 4.1, 0.3, 6.6])
Y7 = np.array([1.0, 3.0, 2.0, 2.0, 5.0, 0.0, 4.0])          # a tie in EDSS


def test_spearman_permutation_exact_small_n():
    rho, p = correlation.spearman_permutation(X7, Y7)
    assert rho == pytest.approx(stats.spearmanr(X7, Y7).statistic, abs=1e-12)
    p_exact, n_perm = _exact_two_sided_p(X7, Y7)
    assert n_perm == 5040 and 0.01 < p_exact < 0.5
    # 7! = 5040 <= 20000 pairings: scipy enumerates them, so p is the exact p
    assert p == pytest.approx(p_exact, abs=1e-12)


def test_spearman_permutation_random_close_to_exact_and_seeded():
    x = np.array([0.31, 0.52, 0.18, 0.77, 0.64, 0.45, 0.90, 0.26])
    y = np.array([2.0, 3.5, 4.0, 6.0, 2.5, 3.0, 6.5, 1.0])
    rho, p = correlation.spearman_permutation(x, y, n_resamples=20000, seed=0)
    assert rho == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    p_exact, n_perm = _exact_two_sided_p(x, y)
    assert n_perm == 40320                    # > 20000: scipy draws at random
    assert 0.02 < p_exact < 0.5
    # p = 2 (k + 1) / 20001 with k ~ Binomial(20000, p_exact / 2): sd of p ~ 2 sqrt(...)
    sd = 2 * math.sqrt((p_exact / 2) * (1 - p_exact / 2) / 20000)
    assert abs(p - p_exact) < 4 * sd + 2 / 20001
    assert correlation.spearman_permutation(x, y, seed=0) == (rho, p)           # reproducible
    assert correlation.spearman_permutation(x, y, seed=1)[1] != p               # seed matters
    # pairs with a NaN are dropped
    xn, yn = np.append(x, np.nan), np.append(y, 3.0)
    assert correlation.spearman_permutation(xn, yn, seed=0) == (rho, p)


def test_spearman_permutation_constant_and_tiny_input():
    for values, edss in (([0.5] * 6, [1, 2, 3, 4, 5, 6]), ([1, 2, 3, 4], [2.0] * 4),
                         ([1.0, 2.0], [1.0, 2.0]), ([np.nan] * 4, [1, 2, 3, 4])):
        rho, p = correlation.spearman_permutation(values, edss)
        assert math.isnan(rho) and math.isnan(p)
    with pytest.raises(ValueError, match="EDSS"):
        correlation.spearman_permutation([1, 2, 3], [1, 2])


def test_bh_adjust_by_hand():
    p = [0.01, 0.04, 0.03, np.nan, 0.2]
    # finite m = 4; sorted 0.01, 0.03, 0.04, 0.2 -> p m / rank = 0.04, 0.06, 0.05333, 0.2;
    # cumulative minimum from the top: 0.04, 0.05333, 0.05333, 0.2
    out = statistics.bh_adjust(p)
    np.testing.assert_allclose(out, [0.04, 0.16 / 3, 0.16 / 3, np.nan, 0.2], rtol=1e-12)
    assert np.isnan(statistics.bh_adjust([np.nan, np.nan])).all()
    with pytest.raises(ValueError):
        statistics.bh_adjust([0.5, 1.5])


def test_mean_in_mask():
    images = np.arange(16, dtype=np.float32).reshape(2, 2, 2, 2) / 16
    masks = np.zeros((2, 2, 2, 2, 2), bool)
    masks[0, 0, 0, 0, :] = True          # level 0, contrast 0: values 0/16, 1/16
    masks[0, 1, 1, 1, 1] = True          # level 0, contrast 1: value 15/16
    masks[1, 1] = True                   # level 1, contrast 1: 8/16 .. 15/16; contrast 0 empty
    out = QM.mean_in_mask(images, masks)
    assert out.shape == (2, 2)
    np.testing.assert_allclose(out, [[0.5 / 16, 15 / 16], [np.nan, 11.5 / 16]], rtol=1e-12)
    np.testing.assert_allclose(QM.mean_in_mask(images, masks[0]), [0.5 / 16, 15 / 16])
    with pytest.raises(ValueError):
        QM.mean_in_mask(images, masks[..., :1])


def test_correlation_table_hand_computed():
    sessions = [f"s{i}" for i in range(6)]
    edss = dict(zip(sessions, [1.0, 2.0, 3.5, 4.0, 6.0, 6.5]))
    rows = []
    up = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    for scn in (3, 4):
        for n in (30, 40, 50, 60):
            for c, vals in (("qT1", up[::-1]), ("MWF", np.full(6, 0.3)), ("NDI", up)):
                if scn == 4 and c == "NDI":
                    vals = up[[1, 0, 2, 3, 4, 5]]          # one swap: rho = 1 - 6*2/210
                for s, val in zip(sessions, vals):
                    rows.append(dict(session=s, scenario=scn, N=n, contrast=c, value=val))
    means = pd.DataFrame(rows)
    corr = correlation.correlation_table(means, edss, scenario=3, n=40, n_resamples=999)
    # scenarios 3, 4 x levels 30, 40, 50 (60 is in neither table) x 3 contrasts
    assert len(corr) == 18 and set(corr["N"]) == {30, 40, 50}
    r = corr.set_index(["scenario", "N", "contrast"])
    np.testing.assert_allclose(r.xs("qT1", level="contrast")["rho"], -1.0, rtol=1e-12)
    assert r.loc[(3, 40, "NDI"), "rho"] == pytest.approx(1.0)
    assert r.loc[(4, 30, "NDI"), "rho"] == pytest.approx(1 - 12 / 210)
    assert r.xs("MWF", level="contrast")["rho"].isna().all()
    # Table IV rows: exact test (6! = 720 <= 999); rho = +-1 is the most extreme of 720
    # pairings, so p = 2 / 720, and BH over the two defined p-values keeps 1/360
    iv = corr[corr["table_iv"]]
    assert list(iv["contrast"]) == ["qT1", "MWF", "NDI"] and (iv["scenario"] == 3).all()
    np.testing.assert_allclose(iv["p"], [1 / 360, np.nan, 1 / 360], rtol=1e-9)
    np.testing.assert_allclose(iv["p_bh"], [1 / 360, np.nan, 1 / 360], rtol=1e-9)
    assert corr.loc[~corr["table_iv"], ["p", "p_bh"]].isna().all().all()
    assert (corr["n_sessions"] == 6).all()

    t3 = correlation.table_iii(corr)
    assert t3.shape == (6, 3) and list(t3.columns) == ["qT1", "MWF", "NDI"]
    assert t3.loc[(4, 50), "NDI"] == pytest.approx(1 - 12 / 210)
    t4 = correlation.table_iv(corr)
    assert list(t4.index) == ["rho", "p", "p_bh"] and t4.loc["rho", "qT1"] == -1.0

    with pytest.raises(ValueError, match="no EDSS"):
        correlation.correlation_table(means, {s: 1.0 for s in sessions[:5]}, scenario=3, n=40)
    with pytest.raises(ValueError, match="scenario 5"):
        correlation.correlation_table(means, edss, scenario=5, n=40)


def test_spearman_columns_equal_scipy_column_by_column():
    from scipy import stats

    rng = np.random.default_rng(5)
    y = np.round(rng.uniform(0, 8, 30) * 2) / 2                      # EDSS steps, ties
    x = np.round(rng.normal(size=(30, 5)) + 0.2 * y[:, None], 1)
    x[3, 1] = np.nan                                                  # a pair dropped
    x[:, 4] = 0.7                                                     # constant: undefined
    got = correlation.spearman_columns(x, y)
    for j in range(4):
        ok = np.isfinite(x[:, j])
        assert got[j] == pytest.approx(stats.spearmanr(x[ok, j], y[ok]).statistic, abs=1e-12)
    assert np.isnan(got[4])


def test_correlation_intervals_resample_subjects():
    """With subjects, every rho gets a grouped-bootstrap interval: a perfect monotone
    relation stays +-1 in every resample with at least three distinct EDSS."""
    sessions = [f"s{i}" for i in range(10)]
    subjects = {s: f"p{i // 2}" for i, s in enumerate(sessions)}      # two sessions each
    edss = dict(zip(sessions, np.linspace(1, 7, 10)))
    rows = []
    for n in (30, 40, 50):
        for c, vals in (("qT1", np.linspace(0.9, 0.1, 10)), ("MWF", np.full(10, 0.3)),
                        ("NDI", np.linspace(0.1, 0.9, 10)[[1, 0, 2, 3, 5, 4, 6, 7, 9, 8]])):
            rows += [dict(session=s, scenario=1, N=n, contrast=c, value=v)
                     for s, v in zip(sessions, vals)]
    corr = correlation.correlation_table(pd.DataFrame(rows), edss, scenario=1, n=40, n_resamples=99,
                               subjects=subjects, n_bootstrap=300, seed=2)
    r = corr.set_index(["N", "contrast"])
    assert (r.xs("qT1", level="contrast")[["rho_low", "rho_high"]] == -1.0).all().all()
    assert r[["rho_low", "rho_high"]].xs("MWF", level="contrast").isna().all().all()
    nd = r.xs("NDI", level="contrast")
    # ties within subjects' pairs: resamples vary, never above 1
    assert (nd["rho_low"] < nd["rho"]).all() and (nd["rho_high"] <= 1.0).all()
    t4 = correlation.table_iv(corr)
    assert list(t4.index) == ["rho", "rho_low", "rho_high", "p", "p_bh"]
    t3 = correlation.table_iii(corr)
    assert list(t3.columns) == ["qT1", "MWF", "NDI", "qT1_low", "MWF_low", "NDI_low",
                                "qT1_high", "MWF_high", "NDI_high"]


# --------------------------------------------------------------------------------------
# Group heatmap and peaks
# --------------------------------------------------------------------------------------

def test_group_heatmap_fractions():
    masks = np.zeros((4, 2, 2, 2), bool)
    masks[:, 0, 0, 0] = True                 # 4/4
    masks[:3, 1, 1, 1] = True                # 3/4
    masks[[0, 2], 0, 1, 0] = True            # 2/4
    masks[3, 1, 0, 1] = True                 # 1/4
    h = heatmaps.group_heatmap(masks)
    assert h.dtype == np.float32 and h.shape == (2, 2, 2)
    expected = np.zeros((2, 2, 2), np.float32)
    expected[0, 0, 0], expected[1, 1, 1], expected[0, 1, 0], expected[1, 0, 1] = 1, .75, .5, .25
    np.testing.assert_array_equal(h, expected)
    np.testing.assert_array_equal(heatmaps.group_heatmap(m for m in masks), expected)   # streamed
    np.testing.assert_array_equal(heatmaps.group_heatmap(masks[:3])[0, 1, 0], np.float32(2 / 3))
    with pytest.raises(ValueError, match="no mask"):
        heatmaps.group_heatmap(np.zeros((0, 2, 2, 2), bool))
    with pytest.raises(ValueError, match="boolean"):
        heatmaps.group_heatmap(masks.astype(np.uint8))
    # one volume per contrast, counted together: each volume its own fraction
    count = heatmaps.HeatmapCount()
    for m in masks:
        count.add(np.stack([m, ~m]))
    h4 = count.fraction()
    assert h4.shape == (2, 2, 2, 2) and count.n == 4
    np.testing.assert_array_equal(h4[0], expected)
    np.testing.assert_array_equal(h4[1], 1 - expected)
    with pytest.raises(ValueError, match="shapes differ"):
        count.add(masks[0])


def _peaks_heatmap():
    h = np.zeros(MNI2_SHAPE, np.float32)
    a = mni_to_voxel((-24, 4, 2))            # left putamen: a peak on a 0.3 cube
    h[a[0] - 1:a[0] + 2, a[1] - 1:a[1] + 2, a[2] - 1:a[2] + 2] = 0.3
    h[a] = 0.6
    h[a[0] + 2, a[1], a[2]] = 0.35           # a secondary maximum 4 mm away
    b = mni_to_voxel((14, 12, 10))           # right caudate: a 3x3x3 plateau
    h[b[0] - 1:b[0] + 2, b[1] - 1:b[1] + 2, b[2] - 1:b[2] + 2] = 0.4
    c = mni_to_voxel((-38, -20, 56))         # left precentral gyrus
    h[c] = 0.2
    h[0, 0, 0] = 0.1                         # (-98, -134, -72): outside the AAL3 grid
    return h


def test_heatmap_peaks_mni_and_labels():
    h = _peaks_heatmap()
    peaks = heatmaps.heatmap_peaks(h, MNI2_AFFINE, n_peaks=10, min_distance_mm=8)
    assert list(peaks["peak"]) == [1, 2, 3, 4]
    np.testing.assert_array_equal(peaks[["x", "y", "z"]].to_numpy(),
                                  [[-24, 4, 2], [14, 12, 10], [-38, -20, 56], [-98, -134, -72]])
    np.testing.assert_allclose(peaks["value"], [0.6, 0.4, 0.2, 0.1], rtol=1e-6)
    assert list(peaks["plateau_voxels"]) == [1, 27, 1, 1]
    assert list(peaks["aal3"]) == ["Putamen_L", "Caudate_R", "Precentral_L", "Undefined"]
    assert tuple(peaks.loc[1, ["i", "j", "k"]]) == mni_to_voxel((14, 12, 10))

    close = heatmaps.heatmap_peaks(h, MNI2_AFFINE, min_distance_mm=3)    # 4 mm apart now allowed
    assert list(close["value"].round(6)) == [0.6, 0.4, 0.35, 0.2, 0.1]
    assert tuple(close.loc[2, ["x", "y", "z"]]) == (-20, 4, 2)
    top2 = heatmaps.heatmap_peaks(h, MNI2_AFFINE, n_peaks=2)
    assert list(top2["aal3"]) == ["Putamen_L", "Caudate_R"]
    above = heatmaps.heatmap_peaks(h, MNI2_AFFINE, threshold=0.15)
    assert list(above["aal3"]) == ["Putamen_L", "Caudate_R", "Precentral_L"]
    none = heatmaps.heatmap_peaks(np.zeros((4, 4, 4)), MNI2_AFFINE)
    assert none.empty and "aal3" in none.columns


# --------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------

def _is_png(path):
    data = path.read_bytes()
    return len(data) > 2000 and data[:8] == b"\x89PNG\r\n\x1a\n"


def test_random_band_at_one_level_is_drawn(monkeypatch):
    """Controls at N = 40 only: each scenario's band is a visible span around N = 40
    (fill_between over a single x would have no width), at the band's AUC limits."""
    captured = []
    monkeypatch.setattr(figures, "save_png", lambda fig, path: captured.append(fig))
    rows = []
    for s in range(1, 13):
        for n in QM.LEVELS:
            row = dict(scenario=s, N=n, auc=0.5, baseline_auc=0.9)
            if n == 40:
                row.update(random_auc=0.45, random_low=0.40 + s / 100, random_high=0.55)
            rows.append(row)
    figures.plot_inverting(pd.DataFrame(rows), "unused.png")
    (fig,) = captured
    spans = []
    for ax in fig.axes:
        for c in ax.collections:
            for path in c.get_paths():
                v = path.vertices
                if len(v) and v[:, 0].max() - v[:, 0].min() > 0:
                    spans.append((v[:, 0].min(), v[:, 0].max(), v[:, 1].min(), v[:, 1].max()))
    # one span per scenario drawn (scenario 3 appears in all three panels)
    assert len(spans) == 12 + 2
    for x0, x1, y0, y1 in spans:
        assert (x0, x1) == pytest.approx((40 - figures.BAND_HALF_WIDTH, 40 + figures.BAND_HALF_WIDTH))
        assert y1 == pytest.approx(0.55) and 0.41 <= y0 <= 0.52


def test_bands_at_the_small_levels_are_drawn_per_run_of_control_levels(monkeypatch):
    """Controls at N = 5, 10, 20 and 40 of the levels 5, 10, 20, 30, 40, 50: each
    scenario's band covers 5-20 and a span around 40, never 20-40 across the level without
    controls; the ticks are the levels; the title is the figure's."""
    captured = []
    monkeypatch.setattr(figures, "save_png", lambda fig, path: captured.append(fig))
    levels = (5, 10, 20, 30, 40, 50)
    rows = []
    for s in (1, 2, 5):
        for n in levels:
            row = dict(scenario=s, N=n, auc=0.5, baseline_auc=0.9)
            if n in (5, 10, 20, 40):
                row.update(random_auc=0.6, random_low=0.55, random_high=0.65 + n / 1000)
            rows.append(row)
    df = pd.DataFrame(rows)
    assert [list(r["N"]) for r in figures.band_runs(df[df["scenario"] == 1])] == \
        [[5, 10, 20], [40]]
    figures.plot_inverting(df, "unused.png", title="chosen scenario 1 by the largest AOPC")
    (fig,) = captured
    spans = sorted({(round(v[:, 0].min(), 6), round(v[:, 0].max(), 6))
                    for ax in fig.axes for c in ax.collections for p in c.get_paths()
                    for v in [p.vertices] if len(v)})
    w = figures.BAND_HALF_WIDTH
    assert spans == [(5.0, 20.0), (40 - w, 40 + w)]
    for ax in fig.axes:
        assert list(ax.get_xticks()) == list(levels)
    assert fig._suptitle.get_text() == "chosen scenario 1 by the largest AOPC"


@pytest.mark.parametrize("scenarios, panels", [(range(1, 13), 3), (range(1, 21), 4),
                                                (range(13, 21), 1), ([3, 15], 2)])
def test_fig4_has_a_panel_for_the_scenarios_beyond_the_paper(monkeypatch, scenarios, panels):
    """Panel (d) holds 13-20 (and 3 for comparison); a panel none of whose own scenarios
    was computed is left out (3 alone keeps panel (a) only)."""
    captured = []
    monkeypatch.setattr(figures, "save_png", lambda fig, path: captured.append(fig))
    df = pd.DataFrame([dict(scenario=s, N=n, auc=0.5, baseline_auc=0.9)
                       for s in scenarios for n in QM.LEVELS])
    figures.plot_inverting(df, "unused.png")
    (fig,) = captured
    assert len(fig.axes) == panels
    drawn = {int(line.get_label().split()[-1]) for ax in fig.axes for line in ax.lines
             if line.get_label().startswith("scenario ")}
    assert drawn == set(scenarios)


def test_figures_are_written(tmp_path):
    rng = np.random.default_rng(1)
    df = pd.DataFrame([dict(scenario=s, N=n, auc=rng.random(), baseline_auc=0.88)
                       for s in range(1, 13) for n in QM.LEVELS])
    figures.plot_inverting(df, tmp_path / "fig4.png")
    assert _is_png(tmp_path / "fig4.png")

    edss = np.array([1.0, 2.0, 3.5, 4.0, 6.0, 6.5])
    values = {"qT1": rng.random(6), "MWF": np.full(6, 0.3), "NDI": rng.random(6)}
    stats = {c: correlation.spearman_permutation(v, edss, n_resamples=99)
             for c, v in values.items()}
    figures.plot_correlations(values, edss, tmp_path / "corr.png", stats=stats)
    assert _is_png(tmp_path / "corr.png")
    figures.plot_correlations(values, edss, tmp_path / "corr2.png",
                              stats={c: (0.1, 0.5) for c in values})
    assert _is_png(tmp_path / "corr2.png")

    import matplotlib.pyplot as plt

    open_before = plt.get_fignums()
    heat = nib.Nifti1Image(_peaks_heatmap(), MNI2_AFFINE)
    figures.plot_heatmap(heat, None, tmp_path / "fig6.png", title="top-40 masks", vmax=0.65)
    assert _is_png(tmp_path / "fig6.png")
    assert plt.get_fignums() == open_before          # no pyplot figure left open
    assert not list(tmp_path.glob(".*"))            # no temporary file left behind


# --------------------------------------------------------------------------------------
# Workflow-file helpers: level images, per-session values, AUC from probabilities
# --------------------------------------------------------------------------------------

def test_level_image_round_trip_individual_and_combined():
    rel, brain = _one_to_ten_map()
    levels = [10, 30, 50, 90]
    maps = np.stack([rel, -np.abs(rel), np.where(np.isfinite(rel), rel[::-1], 0)])
    masks = QM.quantile_masks(np.nan_to_num(maps), brain, levels, kind="individual")
    img = QM.level_image(masks, levels, "individual")
    assert img.dtype == np.uint8 and img.shape == maps.shape
    # the value of a voxel of relevance 10 (top-10) is 10; relevance 8 -> 30; 1 -> 0
    flat0 = np.nan_to_num(rel)
    assert img[0][(flat0 == 10) & brain].tolist() == [10]
    assert img[0][(flat0 == 8) & brain].tolist() == [30]
    assert img[0][(flat0 == 1) & brain].tolist() == [0]
    assert not img[1].any()                      # no positive voxel in the brain
    assert np.array_equal(QM.masks_from_levels(img, levels), masks)
    comb = QM.quantile_masks(np.nan_to_num(rel), brain, levels, kind="combined")
    cimg = QM.level_image(comb, levels, "combined")
    assert cimg.shape == rel.shape
    assert np.array_equal(QM.masks_from_levels(cimg, levels), comb[:, 0])


def test_level_image_rejects_non_nested_masks():
    m = np.zeros((2, 1, 2, 2, 2), dtype=bool)
    m[0, 0, 0, 0, 0] = True                      # top-10 voxel missing from top-20
    with pytest.raises(ValueError, match="nested"):
        QM.level_image(m, [10, 20])


def test_session_mask_values():
    images = np.arange(2 * 3 * 4, dtype=np.float32).reshape(1, 2, 3, 4) / 24
    images = np.concatenate([images, 1 - images, images * 0])
    masks = np.zeros((2, 3, 2, 3, 4), dtype=bool)
    masks[0, :, 0, 0, :2] = True                 # values 0, 1 (/24)
    masks[1, :, 0, 0, :3] = True
    masks[1, 2] = False                          # an empty mask -> NaN, 0 voxels
    df = QM.session_mask_values(images, {7: masks}, [10, 20])
    assert len(df) == 6
    r = df.set_index(["N", "contrast"])
    assert r.loc[(10, "qT1"), "value"] == pytest.approx(0.5 / 24)
    assert r.loc[(20, "MWF"), "value"] == pytest.approx(1 - 1 / 24)
    assert r.loc[(20, "qT1"), "n_voxels"] == 3
    assert math.isnan(r.loc[(20, "NDI"), "value"]) and r.loc[(20, "NDI"), "n_voxels"] == 0
    assert (df["scenario"] == 7).all()


def test_auc_table_matches_inverting_auc():
    rng = np.random.default_rng(0)
    images = rng.random((6, 3, 2, 2, 2)).astype(np.float32)
    labels = np.array([0, 1, 0, 1, 1, 0])
    w = rng.normal(size=(3, 2, 2, 2))

    def predict(batch, ages):
        return 1 / (1 + np.exp(-(batch * w).sum(axis=(1, 2, 3, 4)) + ages / 100))

    masks = {2: rng.random((6, 2, 3, 2, 2, 2)) > 0.5, 5: rng.random((6, 2, 2, 2, 2)) > 0.5}
    ages = np.arange(6) * 10.0
    res, probs = inverting.inverting_auc(predict, images, ages, labels, masks, [10, 20],
                                 return_probabilities=True)
    table = inverting.auc_table(probs, dict(enumerate(labels)))
    pd.testing.assert_frame_equal(table, res, check_dtype=False)
    with pytest.raises(ValueError, match="missing"):
        inverting.auc_table(probs.iloc[1:], dict(enumerate(labels)))


def test_auc_within_models_by_hand():
    """Two models on different probability scales: each ranks its own sessions
    perfectly (within-model AUC 1), pooled they rank 3 of 4 pairs right."""
    probs = pd.DataFrame({"session": ["a", "b", "c", "d"] * 2,
                          "scenario": [0] * 4 + [1] * 4, "N": [0] * 4 + [40] * 4,
                          "prob": [0.9, 0.95, 0.1, 0.15, 0.95, 0.9, 0.1, 0.15]})
    labels = {"a": 0, "b": 1, "c": 0, "d": 1}
    models = {"a": "fold 0", "b": "fold 0", "c": "fold 1", "d": "fold 1"}
    row = inverting.auc_table(probs, labels, models).iloc[0]
    assert row["baseline_auc"] == pytest.approx(0.75)
    assert row["baseline_auc_within"] == pytest.approx(1.0)
    # after inverting, fold 0 ranks its pair backwards: within (0 + 1) / 2
    assert row["auc_within"] == pytest.approx(0.5)
    assert row["auc_drop_within"] == pytest.approx(0.5)
    assert row["auc"] == pytest.approx(0.5)      # pairs: b<a, b>c, d<a, d>c
    with pytest.raises(ValueError, match="no model group"):
        inverting.auc_table(probs, labels, {"a": "fold 0"})
