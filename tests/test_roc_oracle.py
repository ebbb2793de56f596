"""Oracle tests of ``gamer_mril.roc`` (AUCs and DeLong's test of correlated AUCs).

Written from the method alone, not from the module's code:

    DeLong ER, DeLong DM, Clarke-Pearson DL (1988). Comparing the areas under two or
    more correlated receiver operating characteristic curves: a nonparametric approach.
    Biometrics 44:837-845.

For score vector ``r``, with ``X_r,i`` the scores of the ``m`` positives (label 1) and
``Y_r,j`` those of the ``n`` negatives (label 0)::

    psi(x, y)  = 1 if x > y, 1/2 if x == y, 0 otherwise
    V10_r(i)   = mean_j psi(X_r,i, Y_r,j)         (placement of positive i)
    V01_r(j)   = mean_i psi(X_r,i, Y_r,j)         (placement of negative j)
    AUC_r      = mean_i V10_r(i) = mean_j V01_r(j) (Mann-Whitney U / (m n))
    S10, S01   = sample covariance matrices (ddof=1) of the V10 and V01 vectors
    cov        = S10 / m + S01 / n
    z          = (AUC_a - AUC_b) / sqrt(var_a + var_b - 2 cov_ab), p = 2 (1 - Phi(|z|))

What is checked:

* a 3 + 3 case worked out by hand in exact fractions (placements, AUCs, covariance
  matrix, z and p);
* a brute-force implementation written here (explicit loops over all pairs, numpy
  ``cov(ddof=1)``) against the module on random tied data, k = 3, unbalanced classes;
* identities: AUC = scipy's Mann-Whitney U / (m n), single-score variance, swap
  antisymmetry, identical scores, invariance under monotone transforms and case order,
  p = 2 (1 - Phi(|z|));
* the AUC of the published rating data of Hanley & McNeil (1982), Radiology 143:29-36,
  Table 1 (only the printed AUC, 0.893, is compared: the standard error printed there
  comes from their exponential approximation, not from DeLong's variance);
* the ValueError cases of the interface.

All data are tiny: the whole file runs in well under a second.
"""

from __future__ import annotations

import math
from fractions import Fraction as Fr

import numpy as np
import pytest
from scipy import stats

from gamer_mril import roc

TOL = 1e-12


# ----------------------------------------------------------------------------------------
# independent brute force (explicit loops over all positive/negative pairs)
# ----------------------------------------------------------------------------------------
def _psi(x, y):
    if x > y:
        return 1.0
    if x == y:
        return 0.5
    return 0.0


def brute_force(labels, scores):
    """(aucs, cov, V10, V01) by the definitions, one pair at a time."""
    labels = np.asarray(labels)
    scores = np.atleast_2d(np.asarray(scores, dtype=float))
    pos = np.flatnonzero(labels == 1)
    neg = np.flatnonzero(labels == 0)
    m, n = len(pos), len(neg)
    k = scores.shape[0]
    v10 = np.zeros((k, m))
    v01 = np.zeros((k, n))
    for r in range(k):
        for a, i in enumerate(pos):
            for b, j in enumerate(neg):
                p = _psi(scores[r, i], scores[r, j])
                v10[r, a] += p / n
                v01[r, b] += p / m
    aucs = v10.mean(axis=1)
    s10 = np.atleast_2d(np.cov(v10, ddof=1))
    s01 = np.atleast_2d(np.cov(v01, ddof=1))
    return aucs, s10 / m + s01 / n, v10, v01


def random_case(seed, m, n):
    """Shuffled labels (m positives, n negatives) and 3 score vectors with many ties."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.r_[np.ones(m, int), np.zeros(n, int)])
    latent = rng.normal(size=m + n) + 0.8 * labels
    s0 = np.round(latent, 1)                                         # some ties
    s1 = np.clip(np.round(latent + rng.normal(size=m + n)), -2, 2) + 3   # ratings 1..5
    s2 = np.round(0.5 * latent + rng.normal(size=m + n), 1)         # correlated with s0
    return labels, np.vstack([s0, s1, s2])


CASES = [(0, 7, 19), (1, 25, 4), (2, 12, 13), (3, 3, 30), (4, 40, 9)]


# ----------------------------------------------------------------------------------------
# 1. hand-computed 3 + 3 case
# ----------------------------------------------------------------------------------------
# Cases in label order [1, 0, 1, 0, 1, 0] (positives and negatives interleaved).
HAND_LABELS = np.array([1, 0, 1, 0, 1, 0])
HAND_A = np.array([0.9, 0.5, 0.5, 0.2, 0.3, 0.1])   # X_a = (.9, .5, .3), Y_a = (.5, .2, .1)
HAND_B = np.array([0.4, 0.7, 0.7, 0.1, 0.2, 0.4])   # X_b = (.4, .7, .2), Y_b = (.7, .1, .4)
#
# psi_a (rows: positives .9 .5 .3; columns: negatives .5 .2 .1)
#   .9: 1   1 1        V10_a = (1, 5/6, 2/3)
#   .5: 1/2 1 1        V01_a = (1/2, 1, 1)
#   .3: 0   1 1        AUC_a = 15/18 = 5/6
# psi_b (rows: positives .4 .7 .2; columns: negatives .7 .1 .4)
#   .4: 0   1 1/2      V10_b = (1/2, 5/6, 1/3)
#   .7: 1/2 1 1        V01_b = (1/6, 1, 1/2)
#   .2: 0   1 0        AUC_b = 10/18 = 5/9
#
# deviations from the means:
#   V10_a - 5/6 = (1/6, 0, -1/6)        V10_b - 5/9 = (-1/18, 5/18, -4/18)
#   V01_a - 5/6 = (-1/3, 1/6, 1/6)      V01_b - 5/9 = (-7/18, 8/18, -1/18)
# S10 (divide the sums of products by m - 1 = 2):
#   aa = (1/36 + 1/36) / 2 = 1/36;  bb = (1 + 25 + 16)/324 / 2 = 7/108;
#   ab = (-1/108 + 0 + 4/108) / 2 = 1/72
# S01 (divide by n - 1 = 2):
#   aa = (4/36 + 1/36 + 1/36) / 2 = 1/12;  bb = (49 + 64 + 1)/324 / 2 = 19/108;
#   ab = (7/54 + 8/108 - 1/108) / 2 = 7/72
# cov = S10/3 + S01/3:
#   var_a = (1/36 + 1/12)/3 = 1/27;  var_b = (7/108 + 19/108)/3 = 13/162;
#   cov_ab = (1/72 + 7/72)/3 = 1/27
# difference = 5/6 - 5/9 = 5/18; var(diff) = 1/27 + 13/162 - 2/27 = 7/162
# z = (5/18) / sqrt(7/162) = 5 / sqrt(14); p = 2 (1 - Phi(z)) = erfc(z / sqrt(2))
HAND_V10 = [[Fr(1), Fr(5, 6), Fr(2, 3)], [Fr(1, 2), Fr(5, 6), Fr(1, 3)]]
HAND_V01 = [[Fr(1, 2), Fr(1), Fr(1)], [Fr(1, 6), Fr(1), Fr(1, 2)]]
HAND_AUCS = [Fr(5, 6), Fr(5, 9)]
HAND_COV = [[Fr(1, 27), Fr(1, 27)], [Fr(1, 27), Fr(13, 162)]]
HAND_Z = 5 / math.sqrt(14)
HAND_P = math.erfc(HAND_Z / math.sqrt(2))


def test_hand_case_brute_force_agrees_with_hand_derivation():
    """The test's own oracle reproduces the hand derivation (so it can be trusted below)."""
    aucs, cov, v10, v01 = brute_force(HAND_LABELS, np.vstack([HAND_A, HAND_B]))
    np.testing.assert_allclose(v10, np.array(HAND_V10, float), rtol=0, atol=TOL)
    np.testing.assert_allclose(v01, np.array(HAND_V01, float), rtol=0, atol=TOL)
    np.testing.assert_allclose(aucs, np.array(HAND_AUCS, float), rtol=0, atol=TOL)
    np.testing.assert_allclose(cov, np.array(HAND_COV, float), rtol=0, atol=TOL)


def test_hand_case_covariance():
    aucs, cov = roc.delong_covariance(HAND_LABELS, np.vstack([HAND_A, HAND_B]))
    assert np.shape(aucs) == (2,) and np.shape(cov) == (2, 2)
    np.testing.assert_allclose(aucs, np.array(HAND_AUCS, float), rtol=0, atol=TOL)
    np.testing.assert_allclose(cov, np.array(HAND_COV, float), rtol=0, atol=TOL)


def test_hand_case_delong_test():
    res = roc.delong_test(HAND_LABELS, HAND_A, HAND_B)
    assert res.auc_a == pytest.approx(5 / 6, abs=TOL)
    assert res.auc_b == pytest.approx(5 / 9, abs=TOL)
    assert res.difference == pytest.approx(5 / 18, abs=TOL)
    assert res.se == pytest.approx(math.sqrt(7 / 162), abs=TOL)
    assert res.z == pytest.approx(HAND_Z, abs=TOL)
    assert res.p_value == pytest.approx(HAND_P, abs=TOL)


# ----------------------------------------------------------------------------------------
# 2. brute force on random tied data, k = 3, unbalanced classes
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed,m,n", CASES)
def test_covariance_matches_brute_force(seed, m, n):
    labels, scores = random_case(seed, m, n)
    aucs, cov = roc.delong_covariance(labels, scores)
    want_aucs, want_cov, _, _ = brute_force(labels, scores)
    assert np.shape(aucs) == (3,) and np.shape(cov) == (3, 3)
    np.testing.assert_allclose(aucs, want_aucs, rtol=0, atol=TOL)
    np.testing.assert_allclose(cov, want_cov, rtol=0, atol=TOL)


@pytest.mark.parametrize("seed,m,n", CASES)
def test_delong_test_matches_brute_force(seed, m, n):
    labels, scores = random_case(seed, m, n)
    want_aucs, want_cov, _, _ = brute_force(labels, scores)
    for a, b in [(0, 1), (0, 2), (1, 2)]:
        res = roc.delong_test(labels, scores[a], scores[b])
        diff = want_aucs[a] - want_aucs[b]
        se = math.sqrt(want_cov[a, a] + want_cov[b, b] - 2 * want_cov[a, b])
        z = diff / se
        assert res.auc_a == pytest.approx(want_aucs[a], abs=TOL)
        assert res.auc_b == pytest.approx(want_aucs[b], abs=TOL)
        assert res.difference == pytest.approx(diff, abs=TOL)
        assert res.se == pytest.approx(se, abs=TOL)
        assert res.z == pytest.approx(z, rel=1e-9, abs=TOL)
        assert res.p_value == pytest.approx(math.erfc(abs(z) / math.sqrt(2)), abs=TOL)


# ----------------------------------------------------------------------------------------
# 3. identities
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed,m,n", CASES)
def test_auc_is_mann_whitney_u_over_mn(seed, m, n):
    labels, scores = random_case(seed, m, n)
    aucs, _ = roc.delong_covariance(labels, scores)
    for r in range(3):
        u = stats.mannwhitneyu(scores[r, labels == 1], scores[r, labels == 0],
                               alternative="two-sided", method="asymptotic").statistic
        assert aucs[r] == pytest.approx(u / (m * n), abs=TOL)


@pytest.mark.parametrize("seed,m,n", CASES[:3])
def test_single_score_vector(seed, m, n):
    """A 1-D score is k = 1; its variance is the brute-force one and the k = 3 diagonal."""
    labels, scores = random_case(seed, m, n)
    _, cov3 = roc.delong_covariance(labels, scores)
    for r in range(3):
        auc, var = roc.delong_covariance(labels, scores[r])
        want_auc, want_var, _, _ = brute_force(labels, scores[r])
        assert np.shape(auc) == (1,) and np.shape(var) == (1, 1)
        assert auc[0] == pytest.approx(want_auc[0], abs=TOL)
        assert var[0, 0] == pytest.approx(want_var[0, 0], abs=TOL)
        assert var[0, 0] == pytest.approx(cov3[r, r], abs=TOL)


def test_covariance_matrix_symmetric_psd():
    labels, scores = random_case(5, 11, 17)
    _, cov = roc.delong_covariance(labels, scores)
    np.testing.assert_allclose(cov, cov.T, rtol=0, atol=TOL)
    assert np.linalg.eigvalsh(cov).min() > -TOL


def test_perfect_separation_has_zero_variance():
    """All psi = 1: every placement is 1, so AUC = 1 and both S10, S01 vanish."""
    labels = np.array([0, 1, 0, 1, 1, 0, 1])
    score = np.where(labels == 1, 2.0, 1.0) + 0.01 * np.arange(7)
    auc, var = roc.delong_covariance(labels, score)
    assert auc[0] == pytest.approx(1.0, abs=TOL)
    assert var[0, 0] == pytest.approx(0.0, abs=TOL)


@pytest.mark.parametrize("seed,m,n", CASES[:3])
def test_swap_flips_sign_keeps_p(seed, m, n):
    labels, scores = random_case(seed, m, n)
    ab = roc.delong_test(labels, scores[0], scores[2])
    ba = roc.delong_test(labels, scores[2], scores[0])
    assert ba.auc_a == pytest.approx(ab.auc_b, abs=TOL)
    assert ba.auc_b == pytest.approx(ab.auc_a, abs=TOL)
    assert ba.difference == pytest.approx(-ab.difference, abs=TOL)
    assert ba.z == pytest.approx(-ab.z, rel=1e-9, abs=TOL)
    assert ba.se == pytest.approx(ab.se, abs=TOL)
    assert ba.p_value == pytest.approx(ab.p_value, abs=TOL)


def test_identical_scores_give_p_one():
    labels, scores = random_case(6, 9, 14)
    res = roc.delong_test(labels, scores[0], scores[0].copy())
    assert res.difference == 0.0
    assert res.se == 0.0
    assert math.isnan(res.z)
    assert res.p_value == 1.0


def _increasing(s):
    """A strictly increasing transform (keeps equal scores equal)."""
    return np.exp(s) ** 3 - 7.0


@pytest.mark.parametrize("seed,m,n", CASES[:3])
def test_monotone_transform_changes_nothing(seed, m, n):
    labels, scores = random_case(seed, m, n)
    aucs, cov = roc.delong_covariance(labels, scores)
    t_scores = scores.copy()
    t_scores[1] = _increasing(scores[1])
    t_aucs, t_cov = roc.delong_covariance(labels, t_scores)
    np.testing.assert_allclose(t_aucs, aucs, rtol=0, atol=TOL)
    np.testing.assert_allclose(t_cov, cov, rtol=0, atol=TOL)

    res = roc.delong_test(labels, scores[0], scores[1])
    t_res = roc.delong_test(labels, scores[0], _increasing(scores[1]))
    for name in ("auc_a", "auc_b", "difference", "se", "z", "p_value"):
        assert getattr(t_res, name) == pytest.approx(getattr(res, name), rel=1e-9, abs=TOL)

    # a score against its own transform: same placements, so no difference at all
    own = roc.delong_test(labels, scores[1], _increasing(scores[1]))
    assert own.difference == pytest.approx(0.0, abs=TOL)
    assert own.p_value == pytest.approx(1.0, abs=TOL)


def test_case_order_changes_nothing():
    labels, scores = random_case(7, 10, 15)
    perm = np.random.default_rng(70).permutation(len(labels))
    aucs, cov = roc.delong_covariance(labels, scores)
    p_aucs, p_cov = roc.delong_covariance(labels[perm], scores[:, perm])
    np.testing.assert_allclose(p_aucs, aucs, rtol=0, atol=TOL)
    np.testing.assert_allclose(p_cov, cov, rtol=0, atol=TOL)


@pytest.mark.parametrize("seed,m,n", CASES)
def test_p_value_is_two_sided_normal(seed, m, n):
    labels, scores = random_case(seed, m, n)
    for a, b in [(0, 1), (0, 2), (1, 2)]:
        res = roc.delong_test(labels, scores[a], scores[b])
        assert 0.0 <= res.p_value <= 1.0
        assert res.z == pytest.approx(res.difference / res.se, rel=1e-12, abs=TOL)
        want = 2.0 * (1.0 - stats.norm.cdf(abs(res.z)))
        assert res.p_value == pytest.approx(want, abs=TOL)


# ----------------------------------------------------------------------------------------
# 4. published example: Hanley & McNeil (1982), Radiology 143:29-36, Table 1
# ----------------------------------------------------------------------------------------
def test_hanley_mcneil_1982_ct_ratings_auc():
    """109 CT images rated 1 (definitely normal) .. 5 (definitely abnormal).

    Table 1: 58 normals rated (33, 6, 6, 11, 2), 51 abnormals rated (3, 2, 2, 11, 33);
    the printed Wilcoxon area is 0.893. Heavy ties: ties count 1/2.
    """
    neg_counts, pos_counts = [33, 6, 6, 11, 2], [3, 2, 2, 11, 33]
    ratings = np.r_[np.repeat(np.arange(1, 6), neg_counts), np.repeat(np.arange(1, 6), pos_counts)]
    labels = np.r_[np.zeros(58, int), np.ones(51, int)]
    auc, var = roc.delong_covariance(labels, ratings.astype(float))
    assert round(float(auc[0]), 3) == 0.893
    # and the variance is DeLong's one (the brute force here), not the paper's
    # exponential approximation
    want_auc, want_var, _, _ = brute_force(labels, ratings)
    assert auc[0] == pytest.approx(want_auc[0], abs=TOL)
    assert var[0, 0] == pytest.approx(want_var[0, 0], abs=TOL)


# ----------------------------------------------------------------------------------------
# 5. errors
# ----------------------------------------------------------------------------------------
GOOD_LABELS = np.array([1, 0, 1, 0, 0])
GOOD_SCORE = np.array([0.3, 0.1, 0.7, 0.3, 0.2])


@pytest.mark.parametrize("labels", [np.zeros(5, int), np.ones(5, int)], ids=["all0", "all1"])
def test_one_class_raises(labels):
    with pytest.raises(ValueError):
        roc.delong_covariance(labels, GOOD_SCORE)
    with pytest.raises(ValueError):
        roc.delong_test(labels, GOOD_SCORE, GOOD_SCORE[::-1])


def test_length_mismatch_raises():
    with pytest.raises(ValueError):
        roc.delong_covariance(GOOD_LABELS, np.r_[GOOD_SCORE, 0.5])
    with pytest.raises(ValueError):
        roc.delong_covariance(GOOD_LABELS, np.vstack([GOOD_SCORE[:4], GOOD_SCORE[1:]]))
    with pytest.raises(ValueError):
        roc.delong_test(GOOD_LABELS[:4], GOOD_SCORE, GOOD_SCORE)
    with pytest.raises(ValueError):
        roc.delong_test(GOOD_LABELS, GOOD_SCORE, GOOD_SCORE[:4])
    with pytest.raises(ValueError):
        roc.delong_test(GOOD_LABELS, GOOD_SCORE[:4], GOOD_SCORE)


@pytest.mark.parametrize(
    "labels",
    [np.array([1, 0, 2, 0, 1]), np.array([1, -1, 1, -1, -1]), np.array([1, 2, 1, 2, 2]),
     np.array([1.0, 0.0, 0.5, 0.0, 1.0])],
    ids=["has-2", "plus-minus-1", "one-two", "has-0.5"],
)
def test_non_binary_labels_raise(labels):
    with pytest.raises(ValueError):
        roc.delong_covariance(labels, GOOD_SCORE)
    with pytest.raises(ValueError):
        roc.delong_test(labels, GOOD_SCORE, GOOD_SCORE[::-1])
