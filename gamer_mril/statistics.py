"""The statistics every stage shares: the ROC AUC, Benjamini-Hochberg adjustment and the
subject-grouped bootstrap (docs/method.md#51-table-ii-and-its-intervals,
docs/method.md#74-controls-and-uncertainty-of-voxel-inverting,
docs/method.md#75-correlation-with-edss).

**AUC** (:func:`auc`, :func:`auc_columns`): the Mann-Whitney statistic from midranks,
``(sum of the positives' ranks - m (m + 1) / 2) / (m n)`` for ``m`` positives and ``n``
negatives, so a tie between a positive and a negative counts one half. Labels are 0/1
(1 = the positive class, severe); an AUC is NaN when one class is missing or a score is
not finite. It is the only AUC of the package: Table II, the validation AUC of training,
voxel inverting and its intervals all call it. (DeLong's test, :mod:`gamer_mril.roc`,
computes the same number as the mean of its placement values.)

**Benjamini-Hochberg** (:func:`bh_adjust`): statsmodels' ``multipletests`` (``fdr_bh``)
over the finite p-values only; a NaN p stays NaN and is not part of the family.

**Subject-grouped bootstrap** (:func:`grouped_bootstrap`): sessions of one subject are
not independent, so intervals resample *subjects* with replacement and keep each drawn
subject's sessions together (a subject drawn twice brings all its sessions twice). The
interval is the percentile interval of the statistic over the resamples. A resample
where a metric is undefined (an AUC drawn from one class only, say) is left out of that
metric's interval and counted, so a reader sees how many resamples an interval rests on.
Statistics that need only a few columns name them (``columns=``) and then receive a
mapping of numpy arrays instead of a resampled data frame, which is many times faster.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd

#: Resamples of every bootstrap interval unless a caller says otherwise.
N_RESAMPLES = 2000


def _labels(labels) -> np.ndarray:
    y = np.asarray(labels).reshape(-1)
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    return y.astype(bool)


def auc_columns(labels, scores) -> np.ndarray:
    """The ROC AUC of every column of ``scores`` (n, p) (a 1-D array is one column)
    against ``labels`` (n,) 0/1: midranks, ties count one half; NaN for every column when
    a class is missing, and for a column with a non-finite score."""
    from scipy.stats import rankdata

    y = _labels(labels)
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 1:
        s = s[:, None]
    if s.ndim != 2 or s.shape[0] != y.size:
        raise ValueError(f"{y.size} labels but scores of shape {np.shape(scores)}")
    m = int(y.sum())
    n = y.size - m
    out = np.full(s.shape[1], np.nan)
    finite = np.isfinite(s).all(axis=0)
    if m == 0 or n == 0 or not finite.any():
        return out
    ranks = rankdata(s[:, finite], axis=0)
    out[finite] = (ranks[y].sum(axis=0) - m * (m + 1) / 2) / (m * n)
    return out


def auc(labels, scores) -> float:
    """The ROC AUC of one score vector (:func:`auc_columns`' convention)."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    return float(auc_columns(labels, s)[0])


def bh_adjust(pvalues) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (statsmodels ``multipletests``,
    ``method="fdr_bh"``) over the finite entries; NaN entries stay NaN and do not count in
    the family. Same shape as the input."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ((p[ok] < 0) | (p[ok] > 1)).any():
        raise ValueError("p-values must lie in [0, 1]")
    if ok.any():
        out[ok] = multipletests(p[ok], method="fdr_bh")[1]
    return out


def grouped_bootstrap(frame: pd.DataFrame, statistic: Callable[[pd.DataFrame], Mapping],
                      group: str = "subject", n_resamples: int = N_RESAMPLES, seed: int = 0,
                      confidence: float = 0.95, columns=None) -> dict:
    """``{metric: (low, high, n_valid)}``: percentile intervals of ``statistic`` over
    subject-grouped resamples of ``frame``.

    ``statistic(frame) -> {metric: value}`` (a NaN value means undefined for that
    resample); ``group``: the column naming the unit that is resampled. ``n_valid``: the
    resamples where the metric was defined; with none the interval is (NaN, NaN).
    ``columns``: when given, ``statistic`` receives ``{column: numpy array}`` of these
    columns of the resample (the same rows, in the same order) instead of a data frame.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    frame = frame.reset_index(drop=True)
    codes, uniques = pd.factorize(frame[group], sort=True)
    rows_of = [np.flatnonzero(codes == k) for k in range(len(uniques))]
    arrays = None if columns is None else {c: frame[c].to_numpy() for c in columns}
    rng = np.random.default_rng(seed)
    draws: dict[str, list] = {}
    for _ in range(int(n_resamples)):
        picked = rng.integers(0, len(rows_of), size=len(rows_of))
        rows = np.concatenate([rows_of[k] for k in picked])
        sample = (frame.iloc[rows] if arrays is None
                  else {c: a[rows] for c, a in arrays.items()})
        for name, value in statistic(sample).items():
            draws.setdefault(name, []).append(float(value))
    alpha = (1 - confidence) / 2
    out = {}
    for name, values in draws.items():
        v = np.asarray(values)
        v = v[np.isfinite(v)]
        if v.size:
            low, high = np.quantile(v, [alpha, 1 - alpha])
            out[name] = (float(low), float(high), int(v.size))
        else:
            out[name] = (float("nan"), float("nan"), 0)
    return out
