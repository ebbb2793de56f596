"""Quantile masks of the relevance maps and the values inside them
(docs/method.md#72-quantile-masks; the rule quantile_masks).

Decisions (docs/method.md#8-decisions-the-paper-leaves-open):

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
* **Level images** (:func:`level_image`). A session's quantile masks of one scenario are
  stored as one uint8 image: the masks are nested (a larger N has a lower threshold), so
  a voxel's value is the smallest N whose top-N mask holds it, 0 for none; the top-N mask
  is ``(level > 0) & (level <= N)``. Individual maps give one volume per contrast,
  combined maps one volume.
* **Mean normalized value** (:func:`mean_in_mask`). The mean of a contrast's
  preprocessed map (desc-preproc, the network input before clipping) over that
  contrast's mask, summed in float64; NaN for an empty mask (Tables III and IV).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence

import nibabel as nib
import numpy as np
import pandas as pd

from .. import CONTRASTS
from ..explain import load_session_images
from ..io import atomic_path
from ..jobs import step
from ..scenario_stack import load_stack, save_stack, volume_names

log = logging.getLogger("gamer_mril.assessment")


#: The top-N quantile levels of the paper (N = 10, 20, ..., 90).
LEVELS = tuple(range(10, 100, 10))


KINDS = ("individual", "combined")


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


def contrast_first(array):
    """A scenario's array with its contrast volumes first: (L, D, H, W) for an
    individual map's (D, H, W, L); a combined map's (D, H, W) unchanged."""
    array = np.asarray(array)
    return np.moveaxis(array, -1, 0) if array.ndim == 4 else array


def read_level_images(path) -> tuple:
    """``({scenario: level image, contrast volumes first}, affine)`` of a quantile mask
    stack."""

    arrays, affine, _ = load_stack(path)
    return {n: contrast_first(a) for n, a in arrays.items()}, affine


def _maps(maps: Sequence) -> dict:
    """{role: path} of the session's network inputs, given in CONTRASTS order."""
    return dict(zip(CONTRASTS, maps))


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


def run_quantile_masks(maps: Sequence, cerebrum, relmaps, out, out_values,
                       *, levels: Sequence, subject, session, log_file=None,
                       threads: int = 1) -> None:
    """Rule quantile_masks. ``maps``: the session's network inputs (CONTRASTS order);
    ``relmaps`` / ``out``: the scenario stacks of the relevance maps (cropped grid) / of
    the level images."""

    levels = [int(n) for n in levels]
    inputs = {**_maps(maps), "cerebrum": cerebrum, "relmaps": relmaps}
    with step("quantile_masks", inputs=inputs, params={"levels": levels},
              outputs=[out, out_values], log_file=log_file, threads=threads,
              subject=subject, session=session) as s:
        images, affine = load_session_images(list(maps))
        brain = np.asarray(nib.load(cerebrum).dataobj) > 0
        relevance, rel_affine, _ = load_stack(relmaps, dtype=np.float32)
        if not np.allclose(rel_affine, affine, atol=1e-4):
            raise ValueError(f"{relmaps}: grid differs from the session's maps")
        scenarios = sorted(relevance)
        s.params["scenarios"] = scenarios
        masks, level_images, facts = {}, {}, {}
        for n in scenarios:
            rel = relevance[n]
            kind = "individual" if rel.ndim == 4 else "combined"
            m = quantile_masks(np.moveaxis(rel, -1, 0) if kind == "individual" else rel,
                                 brain, levels, kind=kind)
            masks[n] = m
            lvl = level_image(m, levels, kind)
            if kind == "individual":
                lvl = np.moveaxis(lvl, 0, -1)                 # (L, D, H, W) -> (D, H, W, L)
            level_images[n] = lvl
            counts = m.reshape(m.shape[:2] + (-1,)).sum(axis=-1)
            vols = volume_names(rel)
            voxels = {v: {int(lv): int(counts[k, c]) for k, lv in enumerate(levels)}
                      for c, v in enumerate(vols)}
            empty = [v for v in vols if voxels[v][int(levels[-1])] == 0]
            log.info("scenario %2d (%s): top-%d mask %s voxels", n, kind, levels[-1],
                     {v: voxels[v][int(levels[-1])] for v in vols})
            facts[n] = dict(kind=kind, volumes=vols, mask_voxels=voxels,
                            empty_volumes=empty)
        table = save_stack(level_images, affine, out)
        s.sidecar(out, dict(levels=list(levels), volumes=table,
                            encoding="value = smallest N whose top-N mask holds the voxel, "
                                     "0 = in no mask; top-N mask = (value > 0) & "
                                     "(value <= N)",
                            brain_voxels=int(brain.sum()), scenarios=facts),
                  inputs={"relmaps": relmaps, "cerebrum": cerebrum})
        df = session_mask_values(images, masks, levels)
        df.insert(0, "session", session)
        df.insert(0, "subject", subject)
        with atomic_path(out_values) as tmp:
            df.to_csv(tmp, sep="\t", index=False, na_rep="n/a")
