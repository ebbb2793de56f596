"""Validation of the workflow's inputs: participants table, map files, image contents, units.

Every check raises :class:`gamer_mril.errors.InputError`; the message names the session
(``sub-<subject> ses-<session>``) where it is known, the file, and what is wrong, and says
what to do when that is obvious. Nothing is ever fixed silently: values are not rescaled,
rows are not dropped, files are not skipped.

Choices the paper leaves open (docs/method.md#1-inputs and
docs/method.md#8-decisions-the-paper-leaves-open):

* Subject and session labels are BIDS labels: letters and digits only, read as text so that
  leading zeros survive (``01`` is not ``1``). A leading ``sub-`` / ``ses-`` is removed.
  BIDS column names ``participant_id`` / ``session_id`` are accepted in place of
  ``subject`` / ``session``; column names are matched without regard to case.
* Empty cells and ``n/a`` / ``NA`` / ``nan`` / ``none`` / ``null`` count as missing.
* An EDSS within 1e-6 of a step of 0.5 is snapped to that step (spreadsheet float noise
  such as ``4.4999999999``); anything further from a step is an error.
* All problems found in the participants table are reported together (one line each),
  so a user fixes the table in one pass rather than one error per run.
* Non-finite voxels (NaN, +-inf) in a map are not an error: they are counted, set to 0 and
  the count is returned so that the caller can record it in the provenance sidecar.
* A qT1 map's unit is read from the distribution inside the head, so that an R1 map
  (1/T1) is named as one (:class:`QT1Criteria`); values outside a contrast's physical
  range are counted for the QC table (:func:`range_counts`), not refused.

Longer than 400 lines because every check of a session's inputs (table, files, image
contents, units) is here, in one place, so that every error names the session and the
file the same way.
"""

from __future__ import annotations

import csv
import glob
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from . import CONTRASTS
from .errors import InputError
from .jobs import session_label

__all__ = [
    "UNITS",
    "CANONICAL_UNIT",
    "load_participants",
    "find_maps",
    "check_session_files",
    "Selection",
    "select_sessions",
    "write_participants",
    "run_select_participants",
    "load_map",
    "check_units",
    "QT1_CRITERIA",
    "PHYSICAL_RANGE",
    "qt1_evidence",
    "range_counts",
    "dangling_links",
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

_LABEL_RE = re.compile(r"[A-Za-z0-9]+")
_MISSING = {"", "n/a", "na", "nan", "none", "null"}
_COLUMN_ALIASES = {"participant_id": "subject", "session_id": "session"}
_REQUIRED = ("subject", "session", "age", "edss")
_PLACEHOLDER_RE = re.compile(r"\{([^{}]*)\}")
_PLACEHOLDERS = ("subject", "session")

#: What to do with data of one session per subject: the workflow needs a session label
#: in the table and in every path (docs/method.md#1-inputs).
SINGLE_SESSION_HINT = (
    "Data with one session per subject still need a session label: give every row of "
    "the participants table the same session (e.g. 1) and put the label in the files' "
    "paths, e.g. sub-01/ses-1/anat/sub-01_ses-1_T1map.nii.gz (a symbolic link to the "
    "original file will do), with the pattern "
    "sub-{subject}/ses-{session}/anat/sub-{subject}_ses-{session}_T1map.nii.gz.")


def _strip_prefix(value, prefix: str) -> str:
    value = str(value).strip()
    return value[len(prefix):] if value.startswith(prefix) else value


def _who(session) -> str:
    """Session label for messages: accepts a label string or a (subject, session) pair."""
    if session is None:
        return "unknown session"
    if isinstance(session, (tuple, list)) and len(session) == 2:
        return session_label(*session)
    return str(session)


# ---------------------------------------------------------------------------------------
# Participants table
# ---------------------------------------------------------------------------------------

def _is_missing(value: str) -> bool:
    return value.strip().lower() in _MISSING


def _parse_number(value: str):
    """Return a finite float, or None when ``value`` is not a finite number."""
    try:
        x = float(value)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def _number_hint(value: str) -> str:
    return " (use a decimal point, not a comma)" if "," in value else ""


def load_participants(path) -> pd.DataFrame:
    """Read and validate the participants table (one row per session).

    ``path`` is a tab-separated file, or comma-separated when its name ends in ``.csv``.
    Required columns: ``subject``, ``session``, ``age`` (years), ``edss``; optional ``sex``,
    ``phenotype``; other columns are kept as text. Returns the table sorted by subject then
    session, with ``subject``/``session`` as text, ``age``/``edss`` as float and
    ``label = int(edss >= 5)`` (1 = severe). Raises InputError on any invalid row.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"The participants table {path} does not exist; check the "
                         f"'participants' entry of the config.")
    sep = "," if path.name.lower().endswith(".csv") else "\t"
    kind = "comma" if sep == "," else "tab"
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            if sep == "\t":
                reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            else:
                reader = csv.reader(f, delimiter=",")
            rows = []
            for fields in reader:
                if not any(x.strip() for x in fields):
                    continue  # blank line
                rows.append((reader.line_num, [x.strip() for x in fields]))
    except UnicodeDecodeError as exc:
        raise InputError(f"The participants table {path} is not a UTF-8 text file; save it "
                         f"as {kind}-separated UTF-8 text.") from exc
    except (OSError, csv.Error) as exc:
        raise InputError(f"The participants table {path} could not be read ({exc}).") from exc

    if not rows:
        raise InputError(f"The participants table {path} is empty; it needs a header line "
                         f"with the columns {', '.join(_REQUIRED)} and one row per session.")
    header_line, header = rows[0]
    columns = [h.lower() for h in header]
    for alias, name in _COLUMN_ALIASES.items():
        if name not in columns and alias in columns:
            columns[columns.index(alias)] = name
    dupes = sorted({c for c in columns if columns.count(c) > 1 and c})
    if dupes:
        raise InputError(f"The participants table {path} has the column(s) {', '.join(dupes)} "
                         f"more than once in its header (line {header_line}).")
    missing_cols = [c for c in _REQUIRED if c not in columns]
    if missing_cols:
        hint = ""
        if len(header) == 1 and ("," in header[0] or "\t" in header[0]):
            other = "comma" if sep == "\t" else "tab"
            hint = (f" The file looks {other}-separated but its name says {kind}-separated; "
                    f"rename it to .{'csv' if other == 'comma' else 'tsv'}.")
        raise InputError(
            f"The participants table {path} has no column "
            f"{' and no column '.join(repr(c) for c in missing_cols)} (columns found: "
            f"{', '.join(repr(h) for h in header) or 'none'}); the required columns are "
            f"{', '.join(_REQUIRED)}.{hint}")
    if len(rows) == 1:
        raise InputError(f"The participants table {path} has a header but no sessions.")

    problems: list[str] = []
    records = []
    seen: dict[tuple[str, str], int] = {}
    for line, fields in rows[1:]:
        where = f"participants table {path}, line {line}"
        if len(fields) > len(columns):
            problems.append(f"In the {where}: the row has {len(fields)} {kind}-separated "
                            f"fields but the header has {len(columns)}.")
            continue
        fields = fields + [""] * (len(columns) - len(fields))  # trailing empty cells
        row = dict(zip(columns, fields))

        subject = _strip_prefix(row["subject"], "sub-")
        session = _strip_prefix(row["session"], "ses-")
        bad_label = False
        for name, value in (("subject", subject), ("session", session)):
            if _is_missing(value):
                problems.append(f"In the {where}: the {name} is missing.")
                bad_label = True
            elif not _LABEL_RE.fullmatch(value):
                problems.append(f"In the {where}: the {name} label {value!r} may contain "
                                f"only letters and digits (a BIDS label).")
                bad_label = True
        who = "" if bad_label else f" ({session_label(subject, session)})"
        if not bad_label:
            key = (subject, session)
            if key in seen:
                problems.append(f"{session_label(subject, session)} is listed twice in the "
                                f"participants table {path}, on lines {seen[key]} and "
                                f"{line}; keep one row per session.")
            else:
                seen[key] = line

        raw_edss = row["edss"]
        edss = None
        if _is_missing(raw_edss):
            problems.append(f"In the {where}{who}: the EDSS is missing; every session needs "
                            f"an EDSS value.")
        else:
            edss = _parse_number(raw_edss)
            if edss is None:
                problems.append(f"In the {where}{who}: the EDSS {raw_edss!r} is not a "
                                f"number{_number_hint(raw_edss)}.")
            elif not 0.0 <= edss <= 10.0:
                problems.append(f"In the {where}{who}: the EDSS {raw_edss!r} is outside the "
                                f"scale 0 to 10.")
                edss = None
            elif abs(edss * 2 - round(edss * 2)) > 1e-6:
                problems.append(f"In the {where}{who}: the EDSS {raw_edss!r} is not a step "
                                f"of the scale (EDSS goes 0, 1, 1.5, 2, ... 10 in steps of "
                                f"0.5).")
                edss = None
            else:
                # Snap float noise from spreadsheet exports (4.4999999999 -> 4.5) so that
                # the label edss >= 5 cannot flip on a rounding error.
                edss = round(edss * 2) / 2

        raw_age = row["age"]
        age = None
        if _is_missing(raw_age):
            problems.append(f"In the {where}{who}: the age is missing.")
        else:
            age = _parse_number(raw_age)
            if age is None:
                problems.append(f"In the {where}{who}: the age {raw_age!r} is not a "
                                f"number of years{_number_hint(raw_age)}.")
            elif not 0.0 < age < 120.0:
                problems.append(f"In the {where}{who}: the age {raw_age!r} is not a "
                                f"plausible age in years (expected between 0 and 120).")
                age = None

        record = {c: (None if _is_missing(v) else v) for c, v in row.items() if c}
        record.update(subject=subject, session=session, age=age, edss=edss)
        records.append(record)

    if problems:
        if len(problems) == 1:
            raise InputError(problems[0])
        raise InputError(f"The participants table {path} has {len(problems)} problems:\n"
                         + "\n".join(f"  - {p}" for p in problems))

    table = pd.DataFrame.from_records(records)
    table["subject"] = table["subject"].astype(str)
    table["session"] = table["session"].astype(str)
    table["age"] = table["age"].astype(np.float64)
    table["edss"] = table["edss"].astype(np.float64)
    table["label"] = (table["edss"] >= 5.0).astype(np.int64)
    front = ["subject", "session", "age", "edss"] + [c for c in ("sex", "phenotype")
                                                      if c in table.columns]
    rest = [c for c in table.columns if c not in front and c != "label"]
    table = table[front + rest + ["label"]]
    return table.sort_values(["subject", "session"], kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------------------------------
# Finding map files
# ---------------------------------------------------------------------------------------

def _split_pattern(pattern: str, what: str):
    """Split a path pattern into literal text and placeholder names; validate the names."""
    parts = []
    pos = 0
    for m in _PLACEHOLDER_RE.finditer(pattern):
        parts.append(("text", pattern[pos:m.start()]))
        name = m.group(1)
        if name not in _PLACEHOLDERS:
            raise InputError(f"The input path pattern for {what} ({pattern}) contains the "
                             f"placeholder {{{name}}}; only {{subject}} and {{session}} are "
                             f"allowed.")
        parts.append(("field", name))
        pos = m.end()
    parts.append(("text", pattern[pos:]))
    names = {v for k, v in parts if k == "field"}
    for name in _PLACEHOLDERS:
        if name not in names:
            raise InputError(f"The input path pattern for {what} ({pattern}) has no "
                             f"{{{name}}} placeholder, so files cannot be matched to "
                             f"sessions; add it to the pattern in the config."
                             + (f" {SINGLE_SESSION_HINT}" if name == "session" else ""))
    return parts


def _pattern_regexes(parts):
    """A strict regex (a placeholder takes one value everywhere) and a loose one."""
    strict, loose = [], []
    used = set()
    for i, (kind, value) in enumerate(parts):
        if kind == "text":
            strict.append(re.escape(value))
            loose.append(re.escape(value))
            continue
        loose.append(f"(?P<{value}_{i}>{_LABEL_RE.pattern})")
        if value in used:
            strict.append(f"(?P={value})")
        else:
            strict.append(f"(?P<{value}>{_LABEL_RE.pattern})")
            used.add(value)
    return re.compile("".join(strict)), re.compile("".join(loose))


def _find_one(pattern: str, what: str) -> dict:
    """Existing files for one pattern: {(subject, session): path}."""
    pattern = os.path.expanduser(str(pattern))
    parts = _split_pattern(pattern, what)
    strict, loose = _pattern_regexes(parts)
    globbed = "".join(glob.escape(v) if k == "text" else "*" for k, v in parts)
    found = {}
    for hit in sorted(glob.glob(globbed)):
        m = strict.fullmatch(hit)
        if m:
            found[(m.group("subject"), m.group("session"))] = hit
            continue
        m = loose.fullmatch(hit)
        if m:  # right shape, but a placeholder takes two different values
            values = {}
            for key, value in m.groupdict().items():
                values.setdefault(key.rsplit("_", 1)[0], set()).add(value)
            clash = "; ".join(f"{name} {' vs '.join(sorted(v))}"
                              for name, v in values.items() if len(v) > 1)
            raise InputError(f"The {what} file {hit} names different sessions in different "
                             f"parts of its path ({clash}); rename or move it so that the "
                             f"folder and file names agree.")
        # Otherwise the file only matched the loose glob (e.g. an extra BIDS entity such
        # as _acq-x_ inside a placeholder position); it is not one of our inputs.
    return found


def find_maps(patterns: dict) -> dict:
    """Find the existing files that match each contrast's path pattern.

    ``patterns`` maps a contrast (or any name, e.g. ``"mask"``) to a path with
    ``{subject}`` and ``{session}`` placeholders, each possibly used several times; a
    placeholder matches a BIDS label (letters and digits) and must take the same value
    everywhere in one path. Returns ``{(subject, session): {contrast: path}}``, sorted by
    session; a session appears when at least one of its files exists.
    """
    out: dict = {}
    for contrast, pattern in patterns.items():
        for key, path in _find_one(pattern, str(contrast)).items():
            out.setdefault(key, {})[contrast] = path
    return {key: out[key] for key in sorted(out)}


def _expected_path(pattern: str, subject: str, session: str) -> str:
    return os.path.expanduser(str(pattern)).replace("{subject}", subject).replace(
        "{session}", session)


def _other_extension(path: str):
    """The same path with the other NIfTI extension (.nii <-> .nii.gz), or None."""
    if path.endswith(".nii.gz"):
        return path[: -len(".gz")]
    if path.endswith(".nii"):
        return path + ".gz"
    return None


def _missing_map(what: str, expected: str) -> str:
    """Why a listed session's file is missing; names a twin with the other extension."""
    twin = _other_extension(expected)
    if twin and os.path.exists(twin):
        want, have = (".nii.gz", ".nii") if expected.endswith(".gz") else (".nii", ".nii.gz")
        return (f"{what} {expected} does not exist, but {twin} does: the config's pattern "
                f"says {want} and the file is {have}; change the pattern's extension in "
                f"the config (or {'compress' if want == '.nii.gz' else 'decompress'} the "
                f"file).")
    return f"{what} {expected} does not exist."


def broken_link(path):
    """The target of ``path`` when it is a symbolic link to nothing, else None."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        return os.readlink(path)
    return None


def dangling_links(found: dict, masks: dict, listed) -> list:
    """One problem line per file of a listed session that is a symbolic link to a file
    that does not exist (``found``: :func:`find_maps`' result, ``masks``: {session:
    mask}); Snakemake would only say that the input is missing."""
    problems = []
    for key in sorted(k for k in {*found, *masks} if k in listed):
        files = {**found.get(key, {}), **({"brain mask": masks[key]} if key in masks else {})}
        for contrast, path in files.items():
            target = broken_link(path)
            if target is not None:
                what = contrast if contrast == "brain mask" else f"{contrast} map"
                problems.append(
                    f"{session_label(*key)}: the {what} {path} is a symbolic link to "
                    f"{target} that does not exist; copy the file there, or point the link "
                    f"(or the config's pattern) at the real file.")
    return problems


def check_session_files(table, patterns: dict, mask_pattern=None, selection=None) -> int:
    """Check that the selected table rows and the map files correspond one to one.

    Every session in ``table`` (from :func:`load_participants`, already narrowed by
    :func:`select_sessions`) must have its three maps (``patterns`` maps each of ``qT1``,
    ``MWF``, ``NDI`` to a path pattern), and every map on disk of a selected session must
    have a table row. Files of sessions that ``selection`` leaves out are ignored; their
    sessions are counted and the count returned. A mask (``mask_pattern``) is optional per
    session, but a mask of a selected session that is not in the table is an error. All
    problems are reported in one InputError, one line each.
    """
    selection = selection if selection is not None else Selection()
    absent = [c for c in CONTRASTS if c not in patterns]
    unknown = [str(c) for c in patterns if c not in CONTRASTS]
    if absent or unknown:
        raise InputError(
            "The config's input patterns must name exactly the contrasts "
            f"{', '.join(CONTRASTS)}"
            + (f"; missing: {', '.join(absent)}" if absent else "")
            + (f"; unknown: {', '.join(unknown)}" if unknown else "") + ".")
    listed = [(str(s), str(t)) for s, t in zip(table["subject"], table["session"])]
    listed_set = set(listed)
    found = find_maps({c: patterns[c] for c in CONTRASTS})
    masks = _find_one(mask_pattern, "brain mask") if mask_pattern is not None else {}
    ignored = {key for key in (*found, *masks) if key not in selection}

    problems = dangling_links(found, masks, listed_set)
    for subject, session in listed:
        have = found.get((subject, session), {})
        for contrast in CONTRASTS:
            if contrast not in have:
                expected = _expected_path(patterns[contrast], subject, session)
                problems.append(_missing_map(
                    f"{session_label(subject, session)} is listed in the participants "
                    f"table but its {contrast} map", expected))
    for (subject, session), files in found.items():
        if (subject, session) not in listed_set and (subject, session) not in ignored:
            for contrast, path in files.items():
                problems.append(f"The {contrast} map {path} belongs to "
                                f"{session_label(subject, session)}, which has no row in "
                                f"the participants table; add the row, move the file out "
                                f"of the input folder, or leave the session out with the "
                                f"config's participant/session labels.")
    for (subject, session), path in masks.items():
        if (subject, session) not in listed_set and (subject, session) not in ignored:
            problems.append(f"The brain mask {path} belongs to "
                            f"{session_label(subject, session)}, which has no row in "
                            f"the participants table; add the row or move the file "
                            f"out of the input folder.")
    if problems:
        if len(problems) == 1:
            raise InputError(problems[0])
        raise InputError(f"The input files and the participants table do not match "
                         f"({len(problems)} problems):\n"
                         + "\n".join(f"  - {p}" for p in problems))
    return len(ignored)


# ---------------------------------------------------------------------------------------
# Subsets of a dataset
# ---------------------------------------------------------------------------------------

def _labels(values, prefix: str, key: str) -> tuple:
    out = []
    for value in values or ():
        label = _strip_prefix(value, prefix)
        if not _LABEL_RE.fullmatch(label):
            raise InputError(f"The config's inputs: {key} holds {value!r}, which is not a "
                             f"BIDS label (letters and digits, optionally with '{prefix}').")
        out.append(label)
    return tuple(out)


@dataclass(frozen=True)
class Selection:
    """Which sessions of a dataset a run uses, as BIDS apps select them.

    Empty include lists select everything; a session is selected when its subject is
    included and not excluded and its session label is included and not excluded. Labels
    may carry their ``sub-`` / ``ses-`` prefix.
    """

    participant_label: tuple = ()
    exclude_participant_label: tuple = ()
    session_label: tuple = ()
    exclude_session_label: tuple = ()

    KEYS = ("participant_label", "exclude_participant_label", "session_label",
            "exclude_session_label")

    @classmethod
    def from_config(cls, inputs: dict) -> "Selection":
        """The selection named by the config's ``inputs`` section (missing keys: all)."""
        prefix = {"participant_label": "sub-", "exclude_participant_label": "sub-",
                  "session_label": "ses-", "exclude_session_label": "ses-"}
        return cls(**{k: _labels(inputs.get(k), prefix[k], k) for k in cls.KEYS})

    @property
    def active(self) -> bool:
        """Whether the selection leaves anything out at all."""
        return any(getattr(self, k) for k in self.KEYS)

    def as_dict(self) -> dict:
        return {k: list(getattr(self, k)) for k in self.KEYS}

    def __contains__(self, key) -> bool:
        subject, session = (str(x) for x in key)
        return ((not self.participant_label or subject in self.participant_label)
                and subject not in self.exclude_participant_label
                and (not self.session_label or session in self.session_label)
                and session not in self.exclude_session_label)


def select_sessions(table: pd.DataFrame, selection: Selection, source="the participants "
                    "table") -> pd.DataFrame:
    """The rows of ``table`` that ``selection`` keeps.

    A label in any of the four lists that no row of the table carries is an error (a typo
    would otherwise silently run or keep the wrong sessions), and so is a selection that
    keeps no session at all.
    """
    subjects = set(table["subject"].astype(str))
    sessions = set(table["session"].astype(str))
    problems = []
    for key in Selection.KEYS:
        known = subjects if "participant" in key else sessions
        unknown = [x for x in getattr(selection, key) if x not in known]
        if unknown:
            what = "subject" if "participant" in key else "session"
            problems.append(f"inputs: {key} names the {what} label(s) "
                            f"{', '.join(unknown)}, which {source} does not have.")
    if problems:
        raise InputError(" ".join(problems) + " Check the labels (without typos; "
                                              "quote labels such as '01' in YAML).")
    keep = [(s, t) in selection for s, t in zip(table["subject"].astype(str),
                                                table["session"].astype(str))]
    selected = table.loc[keep].reset_index(drop=True)
    if selected.empty:
        raise InputError(f"The config's participant and session labels select no session "
                         f"of {source} ({selection.as_dict()}).")
    return selected


def write_participants(table: pd.DataFrame, path) -> None:
    """Write a participants table (one row per session) as tab-separated text, atomically;
    missing values as ``n/a``. :func:`load_participants` reads it back unchanged."""
    from .io import atomic_path

    columns = [c for c in table.columns if c != "label"]
    with atomic_path(path) as tmp:
        table[columns].to_csv(tmp, sep="\t", index=False, na_rep="n/a",
                              float_format="%.10g")


def run_select_participants(table_path, out, *, selection: dict, maps: dict,
                            brain_mask=None, log_file=None) -> None:
    """Rule select_participants: the validated rows of the sessions this run uses."""
    from .jobs import log, step

    chosen = Selection.from_config(selection)
    with step("select_participants", inputs={"table": table_path},
              params={"selection": chosen.as_dict()}, outputs=[out],
              log_file=log_file) as s:
        table = load_participants(table_path)
        selected = select_sessions(table, chosen, f"the participants table {table_path}")
        ignored = check_session_files(selected, maps, brain_mask, chosen)
        log.info("%d of %d sessions selected; files of %d sessions on disk ignored",
                   len(selected), len(table), ignored)
        write_participants(selected, out)
        s.sidecar(out, {"sessions_in_table": int(len(table)),
                        "sessions_selected": int(len(selected)),
                        "sessions_on_disk_ignored": int(ignored)})


# ---------------------------------------------------------------------------------------
# Loading one map
# ---------------------------------------------------------------------------------------

def load_map(path, session, contrast):
    """Load one quantitative map as a 3D float32 array.

    ``session`` is the session's label (``sub-01 ses-01``) or a ``(subject, session)``
    pair; it only serves the error messages. Returns ``(data, affine, n_nonfinite)``:
    ``data`` is 3D float32 with NaN/inf voxels set to 0, ``affine`` the 4x4 voxel-to-world
    matrix, and ``n_nonfinite`` the number of voxels that were NaN or inf. A 4D image with
    a single volume is squeezed to 3D. Raises InputError on a missing, unreadable or
    truncated file, on a multi-volume image and on an image that is not a 3D volume.
    """
    who = _who(session)
    path = Path(path)
    what = f"{who}: the {contrast} map {path}"
    if not path.is_file():
        target = broken_link(path)
        raise InputError(f"{what} does not exist." if target is None else
                         f"{what} is a symbolic link to {target} that does not exist.")
    try:
        # mmap=False reads the whole file now, so a truncated file fails here and not in
        # some later stage. Any exception while decoding (gzip, zlib, EOF, header parsing,
        # array reshaping, ...) means the file is damaged or not an image, whatever the
        # class that nibabel, gzip or zlib chose to raise.
        img = nib.load(str(path), mmap=False)
        affine = np.array(img.affine, dtype=np.float64) if img.affine is not None else None
        shape = tuple(int(n) for n in img.shape)
        data = np.asarray(img.get_fdata(dtype=np.float32), dtype=np.float32)
    except Exception as exc:  # noqa: BLE001 - see comment above
        cause = " ".join(str(exc).split())  # on one line, whatever the library wrote
        raise InputError(f"{what} could not be read as a NIfTI image, it is probably "
                         f"truncated or corrupt ({type(exc).__name__}: {cause}); copy or "
                         f"export it again.") from exc

    if affine is None or affine.shape != (4, 4):
        raise InputError(f"{what} has no voxel-to-world orientation (affine); save it as a "
                         f"NIfTI file with its orientation.")
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise InputError(f"{what} has an invalid voxel-to-world matrix (affine) in its header "
                         f"(not finite or zero voxel size); the header is damaged.")
    if len(shape) < 3:
        raise InputError(f"{what} has {len(shape)} dimension(s) {shape}, but a 3D volume is "
                         f"needed.")
    if len(shape) > 3:
        extra = shape[3:]
        if any(n != 1 for n in extra):
            raise InputError(f"{what} is a {len(shape)}D image of shape {shape} with "
                             f"{int(np.prod(extra))} volumes, but a single 3D map is needed; "
                             f"point the config at the one volume to use.")
        data = data.reshape(shape[:3])
    if any(n < 2 for n in shape[:3]):
        raise InputError(f"{what} has shape {shape[:3]}, a single slice rather than a 3D "
                         f"volume.")

    bad = ~np.isfinite(data)
    n_nonfinite = int(np.count_nonzero(bad))
    if n_nonfinite:
        data = np.array(data, dtype=np.float32, copy=True)
        data[bad] = 0.0
    return np.ascontiguousarray(data, dtype=np.float32), affine, n_nonfinite


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
    who = _who(session)
    what = f"{who}: the {contrast} map {path}"
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
