"""Quality control of the preprocessing (docs/method.md#28-quality-control-numbers): the
cohort table with its flags, and the sessions a user leaves out. The per-session figures
(normalized mutual information with NDI, Dice and Jaccard with the template's brain mask)
are measured by the preprocessing steps with :mod:`gamer_mril.similarity` and read here
from the steps' sidecars.

* :func:`qc_table` / :func:`qc_flags` -- one row per session from the steps' sidecars, a
  session flagged (with its reasons) when a figure leaves robust bounds or too much of a
  map lies outside its physical range;
* :func:`exclusions` / :func:`run_analysed_sessions` -- ``qc.exclude``: sessions that stay
  preprocessed and in the QC table but are left out of training and assessment.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
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
#: The scale_map facts behind that share.
_SHARE_FACTS = ("ImpossibleVoxels", "VoxelVolume_ml", "ForegroundVoxels")

_NAME = re.compile(r"sub-(?P<subject>[A-Za-z0-9]+)_ses-(?P<session>[A-Za-z0-9]+)_.*?"
                   r"(?P<suffix>[A-Za-z0-9]+)\.json$")
_LABEL = re.compile(r"^sub-(?P<subject>[A-Za-z0-9]+)_ses-(?P<session>[A-Za-z0-9]+)$")


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
             max_clipped_share: float = MAX_CLIPPED_SHARE) -> pd.DataFrame:
    """One row per session with the QC facts found in the given sidecars, flagged by
    :func:`qc_flags`; written to ``out_tsv`` when given."""
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
        if rule == "scale_map":
            shares.setdefault((m["subject"], m["session"]), {})[m["suffix"]] = facts
    for key, per_map in shares.items():
        for suffix, facts in per_map.items():
            share = impossible_share(facts, rows[key].get("brain_ml"))
            if share is not None:
                rows[key][IMPOSSIBLE_PREFIX + suffix] = share
    table = pd.DataFrame(sorted(rows.values(), key=lambda r: (r["subject"], r["session"])))
    table = qc_flags(table, min_dice=min_dice, mad_limit=mad_limit,
                     max_clipped_share=max_clipped_share)
    if out_tsv is not None:
        atomic_write_text(out_tsv, table.to_csv(sep="\t", index=False))
    return table


def _robust_bounds(values, mad_limit: float):
    """(median, robust sd) of the finite values, or None when fewer than MIN_SESSIONS or
    no spread."""
    from scipy.stats import median_abs_deviation

    finite = values[np.isfinite(values)]
    if finite.size < MIN_SESSIONS:
        return None
    spread = float(median_abs_deviation(finite, scale="normal"))
    return None if spread <= 0 else (float(np.median(finite)), spread)


def qc_flags(table: pd.DataFrame, min_dice: float = MIN_DICE,
             mad_limit: float = MAD_LIMIT,
             max_clipped_share: float = MAX_CLIPPED_SHARE) -> pd.DataFrame:
    """The QC table with ``qc_flag`` (bool) and ``qc_reasons`` (why, ``;``-separated).

    A session is flagged when its Dice with the template brain mask is below
    ``min_dice``; when more than ``max_clipped_share`` of its brain's volume in a map is
    outside the contrast's physical range (``impossible_share_<map>``); when a volume lies
    outside the cohort's median +- ``mad_limit`` robust standard deviations; or when a
    co-registered map's similarity with NDI lies below the median minus ``mad_limit``
    robust standard deviations. Robust bounds need at least five sessions with the
    figure; a figure with no spread flags nothing.
    """
    reasons = [[] for _ in range(len(table))]
    if "dice_template_brain" in table:
        for i, d in enumerate(table["dice_template_brain"].to_numpy(float)):
            if d < min_dice:
                reasons[i].append(f"Dice with the template brain mask {d:.3f} < {min_dice}")
    clipped_share_reasons(table, reasons, max_clipped_share)
    robust = [(c, True) for c in VOLUME_COLUMNS if c in table] + \
        [(c, False) for c in table.columns if c.startswith(SIMILARITY_PREFIX)]
    for column, both_sides in robust:
        values = table[column].to_numpy(float)
        bounds = _robust_bounds(values, mad_limit)
        if bounds is None:
            continue
        median, spread = bounds
        for i, v in enumerate(values):
            if not np.isfinite(v):
                continue
            if both_sides and abs(v - median) > mad_limit * spread:
                reasons[i].append(f"{column} {v:.1f} outside the cohort's {median:.1f} +- "
                                  f"{mad_limit:g} x {spread:.1f}")
            elif not both_sides and v < median - mad_limit * spread:
                reasons[i].append(f"{column} {v:.3f} below the cohort's {median:.3f} - "
                                  f"{mad_limit:g} x {spread:.3f} (co-registration to NDI "
                                  f"suspect)")
    out = table.copy()
    out["qc_flag"] = [bool(r) for r in reasons]
    out["qc_reasons"] = ["; ".join(r) for r in reasons]
    return out


def clipped_share_reasons(table: pd.DataFrame, reasons: list,
                          max_clipped_share: float = MAX_CLIPPED_SHARE) -> None:
    """Add to ``reasons`` (one list per row) each map whose ``impossible_share_<map>``
    exceeds ``max_clipped_share``, with its negative and too-large voxel counts."""
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
            reasons[i].append(
                f"{suffix}: {100 * share:.1f}% of the brain's volume outside the physical "
                f"range ({', '.join(counts) or 'impossible'} voxels, clipped), more than "
                f"qc.max_clipped_share {max_clipped_share:g}; check the map's fit")


# ------------------------------------------------------------------ sessions left out

def exclusions(entries) -> dict:
    """``qc.exclude`` as ``{(subject, session): reason}``: a list of ``sub-X_ses-Y``
    labels (reason: "listed in qc.exclude") or a mapping of label to reason."""
    if not entries:
        return {}
    if isinstance(entries, Mapping):
        items = [(label, str(reason) if reason else "") for label, reason in entries.items()]
    elif isinstance(entries, Sequence) and not isinstance(entries, str):
        items = [(label, "") for label in entries]
    else:
        raise ValueError(f"qc.exclude must be a list of sub-X_ses-Y labels or a mapping of "
                         f"label to reason, not {entries!r}")
    out = {}
    for label, reason in items:
        m = _LABEL.match(str(label))
        if not m:
            raise ValueError(f"qc.exclude: {label!r} is not a session label of the form "
                             f"sub-<subject>_ses-<session>")
        out[(m["subject"], m["session"])] = reason or "listed in qc.exclude"
    return out


def check_exclusions(excluded: Mapping, sessions) -> None:
    """Every excluded session must be one of ``sessions`` ((subject, session) pairs), and
    at least one session must stay."""
    known = {(str(s), str(t)) for s, t in sessions}
    unknown = sorted(set(excluded) - known)
    if unknown:
        raise ValueError("qc.exclude names sessions that are not among the selected ones: "
                         + ", ".join(f"sub-{s}_ses-{t}" for s, t in unknown))
    if known and not known - set(excluded):
        raise ValueError("qc.exclude leaves no session to analyse")


def analysed(table: pd.DataFrame, excluded: Mapping) -> pd.DataFrame:
    """The rows of the participants table that ``excluded`` does not name."""
    keys = list(zip(table["subject"].astype(str), table["session"].astype(str)))
    return table.loc[[k not in excluded for k in keys]].reset_index(drop=True)


# ------------------------------------------------------------------ the rules' jobs

def run_preprocessing_qc(images, out_tsv, *, min_dice: float = MIN_DICE,
                         mad_limit: float = MAD_LIMIT, log_file=None,
                         threads: int = 1,
                         max_clipped_share: float = MAX_CLIPPED_SHARE) -> None:
    """Rule preprocessing_qc: the QC table from the sidecars of the given per-session
    outputs (scaled maps, brain masks, maps in the NDI grid, cerebellum masks, brain
    masks in MNI152)."""
    from .io import sidecar_path
    from .jobs import log, step

    with step("preprocessing_qc", inputs={}, outputs=[out_tsv], log_file=log_file,
              params={"min_dice": min_dice, "mad_limit": mad_limit,
                      "max_clipped_share": max_clipped_share}, threads=threads):
        table = qc_table([sidecar_path(p) for p in images], out_tsv, min_dice=min_dice,
                         mad_limit=mad_limit, max_clipped_share=max_clipped_share)
        for _, row in table[table["qc_flag"]].iterrows():
            log.warning("QC flag: sub-%s ses-%s: %s", row["subject"], row["session"],
                        row["qc_reasons"])
        log.info("%d of %d sessions flagged", int(table["qc_flag"].sum()), len(table))


def run_analysed_sessions(table_path, out, *, exclude, log_file=None,
                          threads: int = 1) -> None:
    """Rule analysed_sessions: the participants table without the sessions of
    ``qc.exclude``; its sidecar names each one left out and why."""
    from .inputs import load_participants, write_participants
    from .jobs import log, step

    excluded = exclusions(exclude)
    with step("analysed_sessions", inputs={"table": table_path},
              params={"exclude": {f"sub-{s}_ses-{t}": r for (s, t), r in excluded.items()}},
              outputs=[out], log_file=log_file, threads=threads) as s:
        table = load_participants(table_path)
        check_exclusions(excluded, zip(table["subject"], table["session"]))
        for (subject, session), reason in excluded.items():
            log.warning("sub-%s ses-%s left out of training and assessment: %s", subject,
                        session, reason)
        kept = analysed(table, excluded)
        write_participants(kept, out)
        s.sidecar(out, {"Excluded": [dict(subject=sub, session=ses, reason=r)
                                     for (sub, ses), r in excluded.items()],
                        "Sessions": len(kept)})
        log.info("%d of %d sessions analysed", len(kept), len(table))
