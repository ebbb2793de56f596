"""Subject-grouped bootstrap confidence intervals.

Sessions of one subject are not independent, so intervals resample *subjects* with
replacement and keep each drawn subject's sessions together (a subject drawn twice brings
all its sessions twice). The interval is the percentile interval of the statistic over
the resamples. A resample where a metric is undefined (an AUC drawn from one class only,
say) is left out of that metric's interval and counted, so a reader sees how many
resamples an interval rests on.

:func:`grouped_bootstrap` takes any statistic of a table (one or several named metrics),
so Table II, the voxel-inverting AUCs and the correlations can all use it. Statistics
that need only a few columns name them (``columns=``) and then receive a mapping of
numpy arrays instead of a resampled data frame, which is many times faster.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd

#: Resamples of every interval unless a caller says otherwise.
N_RESAMPLES = 2000


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
