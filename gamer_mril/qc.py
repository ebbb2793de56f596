"""Quality control of the preprocessing (docs/method.md#28-quality-control-numbers): the
cohort table with its flags, and the sessions a user leaves out. The per-session figures
(normalized mutual information with NDI, Dice and Jaccard with the template's brain mask)
are measured by the preprocessing steps with :mod:`gamer_mril.similarity` and read here
from the steps' sidecars.

* :func:`qc_table` / :func:`qc_flags` -- one row per session from the steps' sidecars, a
  session flagged (with its reasons and their kinds, :data:`FLAG_KINDS`) when a figure
  leaves robust bounds (an absolute floor for the similarity below five sessions), too
  much of a map lies outside its physical range, the crop cut too much of the brain or a
  map is much coarser than NDI;
* the sessions left out of training and assessment (``qc.exclude``, and by the kinds of
  their flags ``qc.exclude_flagged``): :mod:`gamer_mril.exclusion`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

#: Facts gathered into the QC table: (rule, fact) -> column (``{suffix}``: the map's).
QC_FACTS = {
    ("make_brain_mask", "BrainVolume_ml"): "brain_ml",
    ("scale_map", "NonFiniteVoxels"): "nonfinite_{suffix}",
    # every voxel the clipping changed, negatives too (ClippedAbove: sidecars written
    # before ClippedVoxels was recorded, read when ClippedVoxels is absent)
    ("scale_map", "ClippedAbove"): "clipped_{suffix}",
    ("scale_map", "ClippedVoxels"): "clipped_{suffix}",
    ("scale_map", "NegativeVoxels"): "negative_{suffix}",
    ("scale_map", "AbovePhysicalRange"): "above_physical_{suffix}",
    ("resample_to_ndi", "NormalizedMutualInformationWithNDI"): "nmi_ndi_{suffix}",
    ("remove_cerebellum", "CerebellumVolume_ml"): "cerebellum_ml",
    ("warp_brain_mask_to_template", "DiceWithTemplateBrainMask"): "dice_template_brain",
    ("warp_brain_mask_to_template", "JaccardWithTemplateBrainMask"): "jaccard_template_brain",
    ("crop_to_brain", "BrainCutShare"): "crop_cut_share",
}
#: Facts of the grids gathered as ``a x b x c`` text: (rule, fact) -> column.
QC_SHAPES = {
    ("crop_to_brain", "FullShape"): "ndi_matrix",
    ("crop_to_brain", "BrainBoundingBox_vox"): "brain_bbox_vox",
    ("crop_to_brain", "CropShapeNeeded"): "crop_shape_needed",
    ("crop_to_brain", "BrainAtGridEdge"): "brain_at_grid_edge",
}

#: A session whose warped brain mask overlaps the template's less than this (Dice) is
#: flagged: its registration to MNI152 (or its brain mask) is suspect.
MIN_DICE = 0.9
#: Robust bounds: the cohort median +- MAD_LIMIT robust standard deviations (the median
#: absolute deviation scaled by 1.4826, the sd of a normal), from at least MIN_SESSIONS.
MAD_LIMIT = 3.0
MIN_SESSIONS = 5
#: Volumes flagged on either side of the bounds.
VOLUME_COLUMNS = ("brain_ml", "cerebellum_ml")
#: Similarities flagged below the bounds only (a co-registration cannot be too good).
SIMILARITY_PREFIX = "nmi_ndi_"
#: A session is flagged when more than this share of its brain's volume, in any map, lies
#: outside the contrast's physical range (negative, or above its physical maximum:
#: gamer_mril.valueranges.PHYSICAL_RANGE), values the scaling clips
#: (``qc.max_clipped_share``).
MAX_CLIPPED_SHARE = 0.01
#: Column of that share per map: impossible voxels x voxel volume / brain volume (the
#: map's non-zero voxels when the brain volume is not known).
IMPOSSIBLE_PREFIX = "impossible_share_"
#: A session is flagged when the crop of step 5 cuts more than this share of its brain's
#: voxels (``qc.max_crop_cut_share``); the crop job stops above
#: ``preprocessing.max_crop_cut_share_stop`` (gamer_mril.geometry).
MAX_CROP_CUT_SHARE = 0.02
#: With fewer than MIN_SESSIONS sessions (or no spread) a similarity with NDI is judged
#: against this floor instead of robust bounds: maps co-registered right show 0.33-0.35,
#: another subject's map about 0.05 (docs/method.md#28-quality-control-numbers).
NMI_FLOOR = 0.15
#: A map is flagged when its voxel (the cube root of its volume, mm) is more than this
#: many times the NDI map's: resampled to the NDI grid, it has far less detail than NDI.
MAX_VOXEL_RATIO = 2.0
#: Column of a map's voxel edge (cube root of the voxel volume, mm), from scale_map.
VOXEL_PREFIX = "voxel_mm_"
#: The kinds of flag, one per reason in ``qc_flag_kinds``: Dice with the template brain
#: mask below qc.min_dice; a co-registered map's similarity with NDI below the robust
#: bound or the absolute floor; a map's impossible share above qc.max_clipped_share; the
#: crop's cut above qc.max_crop_cut_share; coarse voxels; a volume outside robust bounds.
FLAG_KINDS = ("dice", "coregistration", "clipped", "crop", "voxel", "volume")
#: The scale_map facts behind that share.
_SHARE_FACTS = ("ImpossibleVoxels", "VoxelVolume_ml", "ForegroundVoxels")

_NAME = re.compile(r"sub-(?P<subject>[A-Za-z0-9]+)_ses-(?P<session>[A-Za-z0-9]+)_.*?"
                   r"(?P<suffix>[A-Za-z0-9]+)\.json$")


# ------------------------------------------------------------------------ the table

def impossible_share(facts: Mapping, brain_ml=None):
    """The share of the brain's volume (``brain_ml``) that a map's impossible voxels fill
    (``facts``: its scale_map facts); of the map's non-zero voxels without a brain
    volume; None when the sidecar predates these facts."""
    if any(k not in facts for k in _SHARE_FACTS):
        return None
    if brain_ml is not None and np.isfinite(brain_ml) and brain_ml > 0:
        return float(facts["ImpossibleVoxels"] * facts["VoxelVolume_ml"] / brain_ml)
    return float(facts["ImpossibleVoxels"] / max(facts["ForegroundVoxels"], 1))


def qc_table(sidecars, out_tsv=None, *, min_dice: float = MIN_DICE,
             mad_limit: float = MAD_LIMIT,
             max_clipped_share: float = MAX_CLIPPED_SHARE,
             max_crop_cut_share: float = MAX_CROP_CUT_SHARE,
             notes: list | None = None) -> pd.DataFrame:
    """One row per session with the QC facts found in the given sidecars, flagged by
    :func:`qc_flags` (``notes``: as there); written to ``out_tsv`` when given."""
    import pandas as pd

    from .io import atomic_write_text

    rows: dict = {}
    shares: dict = {}
    for path in sidecars:
        m = _NAME.search(Path(path).name)
        if not m:
            continue
        doc = json.loads(Path(path).read_text())
        rule = doc.get("GeneratedBy", {}).get("Rule")
        facts = doc.get("Facts", {})
        row = rows.setdefault((m["subject"], m["session"]),
                              {"subject": m["subject"], "session": m["session"]})
        for (r, fact), column in QC_FACTS.items():
            if r == rule and fact in facts:
                row[column.format(suffix=m["suffix"])] = facts[fact]
        for (r, fact), column in QC_SHAPES.items():
            if r == rule and fact in facts:
                row[column] = "x".join(str(int(n)) for n in facts[fact])
        if rule == "crop_to_brain" and "CropBox" in facts:
            row["crop_shape"] = "x".join(str(int(n)) for n in facts["CropBox"]["shape"])
        if rule == "scale_map" and "VoxelSize_mm" in facts:
            row[VOXEL_PREFIX + m["suffix"]] = float(np.prod(facts["VoxelSize_mm"]) ** (1 / 3))
        if rule == "scale_map":
            shares.setdefault((m["subject"], m["session"]), {})[m["suffix"]] = facts
    for key, per_map in shares.items():
        for suffix, facts in per_map.items():
            share = impossible_share(facts, rows[key].get("brain_ml"))
            if share is not None:
                rows[key][IMPOSSIBLE_PREFIX + suffix] = share
    table = pd.DataFrame(sorted(rows.values(), key=lambda r: (r["subject"], r["session"])))
    table = qc_flags(table, min_dice=min_dice, mad_limit=mad_limit,
                     max_clipped_share=max_clipped_share,
                     max_crop_cut_share=max_crop_cut_share, notes=notes)
    if out_tsv is not None:
        atomic_write_text(out_tsv, table.to_csv(sep="\t", index=False))
    return table


def _robust_bounds(values, mad_limit: float):
    """(median, robust sd) of the finite values, or why there are none (a str): fewer
    than MIN_SESSIONS, or no spread."""
    from scipy.stats import median_abs_deviation

    finite = values[np.isfinite(values)]
    if finite.size < MIN_SESSIONS:
        return (f"{finite.size} session(s) with the figure, robust bounds (median +- "
                f"qc.mad_limit robust sd) need at least {MIN_SESSIONS}")
    spread = float(median_abs_deviation(finite, scale="normal"))
    if spread <= 0:
        return "no spread among the sessions (MAD 0), no robust bounds"
    return float(np.median(finite)), spread


def qc_flags(table: pd.DataFrame, min_dice: float = MIN_DICE,
             mad_limit: float = MAD_LIMIT,
             max_clipped_share: float = MAX_CLIPPED_SHARE,
             max_crop_cut_share: float = MAX_CROP_CUT_SHARE,
             notes: list | None = None) -> pd.DataFrame:
    """The QC table with ``qc_flag`` (bool), ``qc_reasons`` (why, ``; ``-separated) and
    ``qc_flag_kinds`` (one of :data:`FLAG_KINDS` per reason, in their order,
    ``;``-separated).

    A session is flagged when its Dice with the template brain mask is below
    ``min_dice``; when more than ``max_clipped_share`` of its brain's volume in a map is
    outside the contrast's physical range (``impossible_share_<map>``); when a volume lies
    outside the cohort's median +- ``mad_limit`` robust standard deviations; or when a
    co-registered map's similarity with NDI lies below the median minus ``mad_limit``
    robust standard deviations. Robust bounds need at least five sessions with the
    figure and some spread; without them a volume is not judged and a similarity is
    judged against :data:`NMI_FLOOR`, and ``notes`` (a list, when given) gets a line
    saying so per figure. Geometry (:func:`geometry_reasons`): the crop's cut of the
    brain above ``max_crop_cut_share``, coarse voxels.
    """
    reasons = [[] for _ in range(len(table))]
    if "dice_template_brain" in table:
        for i, d in enumerate(table["dice_template_brain"].to_numpy(float)):
            if d < min_dice:
                reasons[i].append(("dice", f"Dice with the template brain mask {d:.3f} < "
                                           f"{min_dice}"))
    clipped_share_reasons(table, reasons, max_clipped_share)
    geometry_reasons(table, reasons, max_crop_cut_share)
    robust = [(c, True) for c in VOLUME_COLUMNS if c in table] + \
        [(c, False) for c in table.columns if c.startswith(SIMILARITY_PREFIX)]
    for column, both_sides in robust:
        values = table[column].to_numpy(float)
        bounds = _robust_bounds(values, mad_limit)
        if isinstance(bounds, str):
            if both_sides:
                why = f"{column}: {bounds}; not judged"
            else:
                why = (f"{column}: {bounds}; judged against the absolute floor {NMI_FLOOR} "
                       f"instead (Dice against qc.min_dice {min_dice} as always)")
                for i, v in enumerate(values):
                    if v < NMI_FLOOR:
                        reasons[i].append((
                            "coregistration",
                            f"{column} {v:.3f} below the absolute floor {NMI_FLOOR} "
                            f"(co-registration to NDI suspect; {bounds})"))
            if notes is not None:
                notes.append(why)
            continue
        median, spread = bounds
        for i, v in enumerate(values):
            if not np.isfinite(v):
                continue
            if both_sides and abs(v - median) > mad_limit * spread:
                reasons[i].append(("volume", f"{column} {v:.1f} outside the cohort's "
                                             f"{median:.1f} +- {mad_limit:g} x {spread:.1f}"))
            elif not both_sides and v < median - mad_limit * spread:
                reasons[i].append(("coregistration",
                                   f"{column} {v:.3f} below the cohort's {median:.3f} - "
                                   f"{mad_limit:g} x {spread:.3f} (co-registration to NDI "
                                   f"suspect)"))
    out = table.copy()
    out["qc_flag"] = [bool(r) for r in reasons]
    out["qc_reasons"] = ["; ".join(text for _, text in r) for r in reasons]
    out["qc_flag_kinds"] = [";".join(kind for kind, _ in r) for r in reasons]
    return out


def clipped_share_reasons(table: pd.DataFrame, reasons: list,
                          max_clipped_share: float = MAX_CLIPPED_SHARE) -> None:
    """Add to ``reasons`` (one list of (kind, text) per row) each map whose
    ``impossible_share_<map>`` exceeds ``max_clipped_share``, with its negative and
    too-large voxel counts."""
    for column in [c for c in table.columns if c.startswith(IMPOSSIBLE_PREFIX)]:
        suffix = column[len(IMPOSSIBLE_PREFIX):]
        for i, share in enumerate(table[column].to_numpy(float)):
            if not share > max_clipped_share:
                continue
            row = table.iloc[i]
            counts = [f"{int(row[c])} {what}" for c, what in
                      ((f"negative_{suffix}", "negative"),
                       (f"above_physical_{suffix}", "above the physical maximum"))
                      if c in table and np.isfinite(row[c]) and row[c] > 0]
            reasons[i].append((
                "clipped",
                f"{suffix}: {100 * share:.1f}% of the brain's volume outside the physical "
                f"range ({', '.join(counts) or 'impossible'} voxels, clipped), more than "
                f"qc.max_clipped_share {max_clipped_share:g}; check the map's fit"))


def _shape(text):
    return [int(n) for n in str(text).split("x")]


def geometry_reasons(table: pd.DataFrame, reasons: list,
                     max_crop_cut_share: float = MAX_CROP_CUT_SHARE) -> None:
    """Add to ``reasons`` (one list of (kind, text) per row): the crop's cut of the brain
    (``crop_cut_share``) above ``max_crop_cut_share``, with the crop shape needed; a map
    whose voxel (``voxel_mm_<map>``) is more than :data:`MAX_VOXEL_RATIO` times the NDI
    map's. The NDI matrix (``ndi_matrix``), the crop (``crop_shape``) and whether the
    brain reaches the grid's edge (``brain_at_grid_edge``) are in the table but flag
    nothing: the paper's 96 NDI slices are padded to 112 in every session, and the brain
    mask reaches the first or last slice in most sessions
    (docs/method.md#28-quality-control-numbers)."""
    def text(row, column):
        value = row.get(column)
        return value if isinstance(value, str) else None

    for i in range(len(table)):
        row = table.iloc[i]
        share = float(row.get("crop_cut_share", np.nan))
        if share > max_crop_cut_share:
            needed = text(row, "crop_shape_needed")
            reasons[i].append((
                "crop",
                f"crop_to_brain cut {100 * share:.1f}% of the brain (qc.max_crop_cut_share "
                f"{max_crop_cut_share:g})" + (f"; enlarge preprocessing.crop_shape to at "
                                               f"least {_shape(needed)}" if needed else "")))
        ndi = float(row.get(VOXEL_PREFIX + "NDImap", np.nan))
        for column in [c for c in table.columns if c.startswith(VOXEL_PREFIX)]:
            voxel = float(row[column])
            if np.isfinite(ndi) and voxel > MAX_VOXEL_RATIO * ndi:
                reasons[i].append((
                    "voxel",
                    f"{column[len(VOXEL_PREFIX):]}: voxels of {voxel:.2f} mm (cube root of "
                    f"the voxel volume), more than {MAX_VOXEL_RATIO:g} x NDI's {ndi:.2f} mm; "
                    f"the map is much coarser than the NDI grid it is resampled to"))


# ------------------------------------------------------------------ the rules' jobs

def run_preprocessing_qc(images, out_tsv, *, min_dice: float = MIN_DICE,
                         mad_limit: float = MAD_LIMIT, log_file=None,
                         threads: int = 1,
                         max_clipped_share: float = MAX_CLIPPED_SHARE,
                         max_crop_cut_share: float = MAX_CROP_CUT_SHARE) -> None:
    """Rule preprocessing_qc: the QC table from the sidecars of the given per-session
    outputs (scaled maps, brain masks, maps in the NDI grid, cerebellum masks, brain
    masks in MNI152)."""
    from .io import sidecar_path
    from .jobs import log, step

    with step("preprocessing_qc", inputs={}, outputs=[out_tsv], log_file=log_file,
              params={"min_dice": min_dice, "mad_limit": mad_limit,
                      "max_clipped_share": max_clipped_share,
                      "max_crop_cut_share": max_crop_cut_share}, threads=threads):
        notes: list = []
        table = qc_table([sidecar_path(p) for p in images], out_tsv, min_dice=min_dice,
                         mad_limit=mad_limit, max_clipped_share=max_clipped_share,
                         max_crop_cut_share=max_crop_cut_share, notes=notes)
        for note in notes:
            log.warning("QC bounds: %s", note)
        for _, row in table[table["qc_flag"]].iterrows():
            log.warning("QC flag: sub-%s ses-%s: %s", row["subject"], row["session"],
                        row["qc_reasons"])
        log.info("%d of %d sessions flagged", int(table["qc_flag"].sum()), len(table))
