"""The values of a map: its declared unit against its values, and the counts of values
outside the physical and the method's ranges (docs/method.md#21-range-checks-and-scaling).

Every check raises :class:`gamer_mril.errors.InputError`; the message names the session
(``sub-<subject> ses-<session>``), the file, and what is wrong, and says what to do when
that is obvious. Nothing is ever fixed silently: values are not rescaled.

Choices the paper leaves open (docs/method.md#1-inputs and
docs/method.md#8-decisions-the-paper-leaves-open):

* A qT1 map's unit is read from the distribution inside the head, so that an R1 map
  (1/T1) is named as one (:class:`QT1Criteria`); values outside a contrast's physical
  range are counted for the QC table (:func:`range_counts`), not refused.
* MWF and NDI are told fraction from percent by a high percentile (the threshold notes
  below).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError
from .mapfiles import who

__all__ = [
    "UNITS",
    "CANONICAL_UNIT",
    "check_units",
    "QT1_CRITERIA",
    "PHYSICAL_RANGE",
    "qt1_evidence",
    "map_cores",
    "range_counts",
]

#: Units that may be declared in ``config.yaml`` (``units: <contrast>: <unit>``) per contrast;
#: the first one is the canonical unit that every later stage works in.
UNITS = {"qT1": ("ms", "s"), "MWF": ("fraction", "percent"), "NDI": ("fraction",)}

#: Canonical unit of each contrast.
CANONICAL_UNIT = {contrast: units[0] for contrast, units in UNITS.items()}

#: Factor that converts a value in the declared unit to the canonical unit.
_FACTORS = {"ms": 1.0, "s": 1000.0, "fraction": 1.0, "percent": 0.01}

# MWF and NDI: range checks on the 99th percentile (p99) of the strictly positive finite
# voxels. A robust high percentile ignores a few hot voxels or fit failures but is
# dominated by tissue, so it separates fraction from percent by a wide margin:
#
# * MWF: the myelin water fraction is below about 0.4 even in the densest white matter
#   and is bounded by 1 by construction; as a percentage, white matter alone is 10-30, so
#   the p99 of a brain map is well above 1.5. A threshold of 1.5 leaves room for fit noise
#   slightly above 1 in a fraction map and is far below any percentage map of a brain.
# * NDI (NODDI ICVF): a volume fraction in [0, 1] by definition; 1.5 again allows noise.
#
# qT1 is checked on the distribution inside the head (QT1_CRITERIA below), because a
# high percentile cannot tell a T1 map in seconds from an R1 map in 1/s.
FRACTION_PERCENT_THRESHOLD = 1.5
UNIT_CHECK_PERCENTILE = 99.0


@dataclass(frozen=True)
class QT1Criteria:
    """What tells a T1 map in ms or s from an R1 map (1/T1) in 1/s or 1/ms
    (docs/method.md#21-range-checks-and-scaling). Every figure is physics, not a cohort:

    * Background is what lies below ``background_fraction`` of the 95th percentile of
      the positive voxels (zero, noise, a smoothed noise floor); tissue's lowest values
      (fat in a T1 map, CSF in an R1 map) are 10% of it or more.
    * The statistics are taken on *cores* of the map: its non-background voxels
      more than each depth of ``core_depth_mm`` from the nearest background
      voxel or the grid's edge. The deep core leaves out a noisy background (isolated
      positive voxels) and the outer shell of a head (scalp fat, skull), whose short T1
      would look like the CSF of an R1 map; the whole (depth 0) keeps a brain-masked map's
      sulcal CSF, which the deep core loses. A core of fewer than ``min_core_voxels`` is
      not used.
    * The median of the deep core gives the scale: brain T1 is 600-2000 ms in tissue and
      about 4000 ms in CSF, so a median of at least ``ms_min_median`` is milliseconds; T1
      in s and R1 in 1/s have medians of 0.5-2 and 0.5-1.7; R1 in 1/ms 0.0005-0.0017,
      below ``per_ms_max_median`` (and above ``per_ms_min_median``: smaller is no map of
      a head).
    * On the seconds scale CSF decides, because its T1 is 3-4.5 s at every field
      strength (free water at body temperature) and every map of a brain has some
      (ventricles, sulci; long-T1 lesions and fit failures at a T1 bound add to it). In a
      T1 map in s it lies in ``t1_csf_window``; in an R1 map in 1/s in the reciprocal
      window ``r1_csf_window``, where a T1 map in s has only fat and partial volume. A
      core says R1 when at least ``min_csf_share`` of it lies in the R1 window, at least
      ``csf_ratio`` times its share in the T1 window, and its median is at most
      ``r1_max_median`` (1/s); it says T1 in s in the mirror case, with a median of at
      least ``t1_min_median_s`` (s). The map is what the cores that say anything agree
      on; undecided when none does (a map without CSF) or they disagree.
    """

    background_fraction: float = 0.04
    core_depth_mm: tuple = (15.0, 5.0, 0.0)
    min_core_voxels: int = 500
    ms_min_median: float = 30.0
    per_ms_max_median: float = 0.02
    per_ms_min_median: float = 5e-5
    t1_csf_window: tuple = (2.5, 6.0)
    r1_csf_window: tuple = (1.0 / 6.0, 0.4)
    min_csf_share: float = 0.01
    csf_ratio: float = 2.0
    r1_max_median: float = 2.5
    t1_min_median_s: float = 0.4


QT1_CRITERIA = QT1Criteria()

#: The kinds of map :func:`qt1_evidence` tells apart.
QT1_KINDS = ("T1 ms", "T1 s", "R1 1/s", "R1 1/ms", "seconds scale", "too small")

#: Physical range of each contrast in canonical units: outside it a value is impossible
#: (a negative relaxation time or fraction; a T1 longer than free water's, about 4.5 s,
#: with a margin; a fraction above 1), as opposed to the method's narrower range that
#: every map is clipped to (preprocessing.RANGES, where qT1's CSF is clipped by design).
PHYSICAL_RANGE = {"qT1": (0.0, 6000.0), "MWF": (0.0, 1.0), "NDI": (0.0, 1.0)}


# ---------------------------------------------------------------------------------------
# Units
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class QT1Evidence:
    """What the values of a qT1 map say (:func:`qt1_evidence`): its ``kind`` (one of
    :data:`QT1_KINDS`), the median of its core, the shares of the core in the T1 (s) and
    R1 (1/s) CSF windows (0 off the seconds scale), the core's size and depth (mm)."""

    kind: str
    median: float
    t1_csf_share: float
    r1_csf_share: float
    voxels: int
    depth_mm: float

    def describe(self) -> str:
        text = f"median {self.median:.4g} of the {self.voxels} voxels of its core"
        if self.kind in ("T1 s", "R1 1/s", "seconds scale"):
            lo, hi = QT1_CRITERIA.t1_csf_window
            rlo, rhi = QT1_CRITERIA.r1_csf_window
            text += (f"; {100 * self.t1_csf_share:.1f}% at {lo:g}-{hi:g} (CSF of a T1 map "
                     f"in s), {100 * self.r1_csf_share:.1f}% at {rlo:.2g}-{rhi:g} (CSF of an "
                     f"R1 map in 1/s)")
        return text


def map_cores(data, voxel_mm=None, criteria: QT1Criteria = QT1_CRITERIA):
    """``[(mask, depth_mm)]``: for each depth of ``criteria.core_depth_mm``, the
    non-background voxels (finite, above ``criteria.background_fraction`` of the 95th
    percentile of the positive voxels) more than that depth from the background or
    the grid's edge (zero voxels the map encloses, such as fit failures set to 0, are not
    background); a depth whose core holds fewer than ``criteria.min_core_voxels`` voxels
    is left out (depth 0, every non-background voxel, never)."""
    from scipy import ndimage   # deferred: 0.2 s of start-up the planning never needs

    values = np.asarray(data)
    fg = np.isfinite(values) & (values > 0)
    if fg.any():
        floor = criteria.background_fraction * float(np.percentile(values[fg], 95))
        fg &= values > floor
    sampling = [1.0, 1.0, 1.0] if voxel_mm is None else [float(v) for v in voxel_mm][:3]
    out = []
    dist = None
    for depth in criteria.core_depth_mm:
        if depth <= 0 or fg.ndim != 3:
            out.append((fg, 0.0))
            continue
        if dist is None:
            # zero voxels enclosed by the map (fit failures set to 0) are no background
            solid = ndimage.binary_fill_holes(fg)
            dist = ndimage.distance_transform_edt(np.pad(solid, 1), sampling=sampling)
            dist = dist[1:-1, 1:-1, 1:-1]
        core = fg & (dist > depth)
        if int(core.sum()) >= criteria.min_core_voxels:
            out.append((core, float(depth)))
    return out or [(fg, 0.0)]


def _judge(values, depth: float, criteria: QT1Criteria) -> QT1Evidence:
    """The kind of map the values of one core say."""
    median = float(np.median(values))
    t1_share = r1_share = 0.0
    if median >= criteria.ms_min_median:
        kind = "T1 ms"
    elif median < criteria.per_ms_max_median:
        kind = "R1 1/ms" if median >= criteria.per_ms_min_median else "too small"
    else:
        lo, hi = criteria.t1_csf_window
        rlo, rhi = criteria.r1_csf_window
        t1_share = float(np.mean((values >= lo) & (values <= hi)))
        r1_share = float(np.mean((values >= rlo) & (values <= rhi)))
        if (r1_share >= criteria.min_csf_share and r1_share >= criteria.csf_ratio * t1_share
                and median <= criteria.r1_max_median):
            kind = "R1 1/s"
        elif (t1_share >= criteria.min_csf_share and t1_share >= criteria.csf_ratio * r1_share
              and median >= criteria.t1_min_median_s):
            kind = "T1 s"
        else:
            kind = "seconds scale"
    return QT1Evidence(kind, median, t1_share, r1_share, int(values.size), depth)


def qt1_evidence(data, voxel_mm=None, criteria: QT1Criteria = QT1_CRITERIA) -> QT1Evidence:
    """Which kind of map a qT1 map's values are (``criteria``: :class:`QT1Criteria`).

    The cores of :func:`map_cores` are judged deepest first; the scale is the deepest
    core's. On the seconds scale the first core that says T1 in s or R1 decides; the map
    is undecided when none does."""
    values = np.asarray(data)
    judged = [_judge(values[core].astype(np.float64), depth, criteria)
              for core, depth in map_cores(values, voxel_mm, criteria)]
    first = judged[0]
    if first.kind not in ("T1 s", "R1 1/s", "seconds scale"):
        return first
    for e in judged:
        if e.kind in ("T1 s", "R1 1/s"):
            return e
    return first


#: How to turn an R1 map into the T1 map in ms the workflow reads.
_INVERT = {
    "R1 1/s": ("1/s", "T1 [ms] = 1000 / R1", "fslmaths R1.nii.gz -recip -mul 1000 T1.nii.gz",
               "np.where(r1 > 0, 1000 / r1, 0)"),
    "R1 1/ms": ("1/ms", "T1 [ms] = 1 / R1", "fslmaths R1.nii.gz -recip T1.nii.gz",
                "np.where(r1 > 0, 1 / r1, 0)"),
}


def _check_qt1(data, declared: str, what: str, voxel_mm) -> None:
    """The qT1 half of :func:`check_units`: raise InputError when the values contradict
    the declared unit or are no T1 map at all."""
    ev = qt1_evidence(data, voxel_mm)
    facts = ev.describe()
    if ev.kind in _INVERT:
        unit, formula, fsl, numpy_ = _INVERT[ev.kind]
        raise InputError(
            f"{what} looks like an R1 map (relaxation rate 1/T1, in {unit}), not a T1 map "
            f"({facts}); the workflow needs T1: invert it, {formula} (e.g. `{fsl}`, or "
            f"with nibabel: t1 = {numpy_}), and point 'inputs: maps: qT1:' at the T1 map "
            f"(units: qT1: ms).")
    if ev.kind == "too small":
        raise InputError(f"{what} has values far too small for a T1 map in ms or s and for "
                         f"an R1 map ({facts}); check that the file is the T1 map.")
    key = "units: qT1:"
    if declared == "ms" and ev.kind == "T1 s":
        raise InputError(f"{what} is declared in milliseconds but its values look like "
                         f"seconds ({facts}; brain T1 is about 800-4500 ms); set '{key} s' "
                         f"in the config.")
    if declared == "ms" and ev.kind == "seconds scale":
        raise InputError(
            f"{what} is declared in milliseconds but its values are on the scale of seconds "
            f"({facts}; brain T1 is about 800-4500 ms), and its CSF does not say whether it "
            f"is a T1 map in seconds or an R1 map (1/T1) in 1/s. A T1 map is darkest in "
            f"white matter and brightest in CSF (3-4.5 s): then set '{key} s'. An R1 map "
            f"is the reverse (CSF about 0.25): then invert it, T1 [ms] = 1000 / R1 (e.g. "
            f"`fslmaths R1.nii.gz -recip -mul 1000 T1.nii.gz`).")
    if declared == "s" and ev.kind == "T1 ms":
        raise InputError(f"{what} is declared in seconds but its values look like "
                         f"milliseconds ({facts}; brain T1 is about 0.8-4.5 s); set "
                         f"'{key} ms' in the config.")
    if declared == "s" and ev.kind == "seconds scale":
        import logging

        logging.getLogger("gamer_mril").warning(
            "%s is declared in seconds; its CSF does not tell a T1 map in s from an R1 map "
            "in 1/s (%s); check that it is T1 (brightest in CSF)", what, facts)


def range_counts(canonical, contrast: str, method_range, affine) -> dict:
    """How many voxels of a map in canonical units the clipping to ``method_range``
    changes, and how many lie outside the contrast's :data:`PHYSICAL_RANGE` (negative,
    or above its physical maximum): the facts of the scale_map sidecar that the QC table
    counts and flags (docs/method.md#28-quality-control-numbers)."""
    values = np.asarray(canonical)
    low, high = method_range
    plow, phigh = PHYSICAL_RANGE[contrast]
    below = int(np.count_nonzero(values < low))
    above = int(np.count_nonzero(values > high))
    return {
        "ClippedBelow": below,
        "ClippedVoxels": below + above,
        "NegativeVoxels": int(np.count_nonzero(values < 0)),
        "PhysicalRange": [plow, phigh],
        "AbovePhysicalRange": int(np.count_nonzero(values > phigh)),
        "ImpossibleVoxels": int(np.count_nonzero((values < plow) | (values > phigh))),
        "ForegroundVoxels": int(np.count_nonzero(values)),
        "VoxelVolume_ml": float(abs(np.linalg.det(np.asarray(affine)[:3, :3])) / 1000.0),
    }


def check_units(data, contrast, unit, session, path, voxel_mm=None) -> float:
    """Check a declared unit against the map's values; return the factor to canonical units.

    The factor converts the declared unit to the canonical one (``ms`` for qT1,
    ``fraction`` for MWF and NDI): ms -> 1, s -> 1000, fraction -> 1, percent -> 0.01. The
    caller multiplies by it; this function never rescales anything itself. qT1 is judged
    by :func:`qt1_evidence` (``voxel_mm``: the voxel size, for the depth of the map's
    core; 1 mm when not given), which also names an R1 map given as qT1; MWF and NDI by
    the 99th percentile (p99) of the strictly positive finite voxels (the threshold notes
    at the top of this module).
    """
    what = f"{who(session)}: the {contrast} map {path}"
    if contrast not in UNITS:
        raise InputError(f"{what}: unknown contrast {contrast!r}; expected one of "
                         f"{', '.join(UNITS)}.")
    allowed = UNITS[contrast]
    declared = str(unit).strip().lower() if unit is not None else ""
    if declared not in allowed:
        raise InputError(f"{what} is declared in the unit {unit!r}, which is not known for "
                         f"{contrast}; set 'units: {contrast}:' in the config to one of "
                         f"{', '.join(allowed)}.")
    factor = _FACTORS[declared]

    values = np.asarray(data)
    positive = values[np.isfinite(values) & (values > 0)]
    if positive.size == 0:
        raise InputError(f"{what} is empty: it has no positive values, so it cannot be a "
                         f"{contrast} map of a brain.")
    if contrast == "qT1":
        _check_qt1(values, declared, what, voxel_mm)
        return factor
    p99 = float(np.percentile(positive.astype(np.float64), UNIT_CHECK_PERCENTILE))
    key = f"units: {contrast}:"
    if contrast == "MWF":
        if declared == "fraction" and p99 > FRACTION_PERCENT_THRESHOLD:
            raise InputError(f"{what} is declared as a fraction but its values look like a "
                             f"percentage (99th percentile {p99:.4g}, while a myelin water "
                             f"fraction is at most about 0.4); set '{key} percent' in the "
                             f"config.")
        if declared == "percent" and p99 <= FRACTION_PERCENT_THRESHOLD:
            raise InputError(f"{what} is declared as a percentage but its values look like "
                             f"a fraction (99th percentile {p99:.4g}, while white matter MWF "
                             f"is 10-30 percent); set '{key} fraction' in the config.")
    elif contrast == "NDI":
        if p99 > FRACTION_PERCENT_THRESHOLD:
            raise InputError(f"{what} has values too large for a neurite density index "
                             f"(99th percentile {p99:.4g}), which must be a fraction between "
                             f"0 and 1; check that the file is the NODDI ICVF/NDI map and "
                             f"convert it to a fraction.")
    return factor
