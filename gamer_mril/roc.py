"""Correlated ROC curves: DeLong's covariance of AUCs and the paired test.

DeLong, DeLong & Clarke-Pearson (1988), Biometrics 44:837-845: for k score vectors of the
same m positive and n negative cases, each AUC is the mean of the placement values

    V10_r(i) = mean over negatives j of psi(X_ri, Y_rj)     (i over the positives)
    V01_r(j) = mean over positives i of psi(X_ri, Y_rj)     (j over the negatives)

with psi(x, y) = 1 if x > y, 1/2 if x == y, 0 otherwise, and the AUCs' covariance is
``S10 / m + S01 / n`` (S10, S01: the sample covariance matrices, ddof 1, of the V10 and
V01 vectors). The placements come from midranks (Sun & Xu 2014, IEEE Signal Processing
Letters 21:1389-1393): ``V10 = (rank among all - rank among positives) / n``. Two AUCs of
the same cases are compared by ``z = (AUC_a - AUC_b) / sqrt(var_a + var_b - 2 cov_ab)``,
two-sided against the standard normal.

scipy and statsmodels have no DeLong test, so it is written here (tests:
tests/test_roc_oracle.py, from the definition).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def _check(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {y.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    y = y.astype(bool)
    if y.all() or not y.any():
        raise ValueError("labels hold one class only: an AUC needs both")
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 1:
        s = s[None]
    if s.ndim != 2 or s.shape[1] != y.size:
        raise ValueError(f"scores of shape {np.shape(scores)} do not match {y.size} labels")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    return y, s


def delong_covariance(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """``(aucs, cov)``: the AUC of each row of ``scores`` (k, n) (a 1-D array is one row)
    against ``labels`` (0/1; ties count 1/2) and their DeLong covariance matrix (k, k)."""
    from scipy.stats import rankdata

    y, s = _check(labels, scores)
    pos, neg = s[:, y], s[:, ~y]
    m, n = pos.shape[1], neg.shape[1]
    rank_all = rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    v10 = (rank_all[:, :m] - rankdata(pos, axis=1)) / n
    v01 = 1.0 - (rank_all[:, m:] - rankdata(neg, axis=1)) / m
    aucs = v10.mean(axis=1)
    cov = np.atleast_2d(np.cov(v10, ddof=1)) / m + np.atleast_2d(np.cov(v01, ddof=1)) / n
    return aucs, cov


@dataclass(frozen=True)
class DeLongResult:
    """DeLong's paired test of two AUCs of the same cases (two-sided)."""

    auc_a: float
    auc_b: float
    difference: float
    se: float
    z: float
    p_value: float


def delong_test(labels, score_a, score_b) -> DeLongResult:
    """DeLong's test of ``AUC(score_a) == AUC(score_b)`` on the same cases. When the
    difference has no variance (identical rankings) and is 0, ``z`` is NaN and ``p`` 1."""
    a = np.asarray(score_a, dtype=np.float64).reshape(-1)
    b = np.asarray(score_b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"score_a has {a.size} values, score_b {b.size}")
    aucs, cov = delong_covariance(labels, np.stack([a, b]))
    diff = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    scale = max(float(cov[0, 0] + cov[1, 1]), 1e-300)
    se = math.sqrt(var) if var > 1e-12 * scale else 0.0
    if se == 0.0:
        if abs(diff) <= 1e-15:
            return DeLongResult(float(aucs[0]), float(aucs[1]), 0.0, 0.0, float("nan"), 1.0)
        z = math.copysign(math.inf, diff)
        return DeLongResult(float(aucs[0]), float(aucs[1]), diff, 0.0, z, 0.0)
    z = diff / se
    p = math.erfc(abs(z) / math.sqrt(2.0))
    return DeLongResult(float(aucs[0]), float(aucs[1]), diff, se, z, p)
