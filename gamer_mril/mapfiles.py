"""The map files: finding them by their path patterns, matching them to the participants
table, and reading one (docs/method.md#1-inputs).

Every check raises :class:`gamer_mril.errors.InputError`; the message names the session
(``sub-<subject> ses-<session>``) where it is known, the file, and what is wrong, and says
what to do when that is obvious. Nothing is ever fixed silently: files are not skipped.

Choices the paper leaves open (docs/method.md#1-inputs and
docs/method.md#8-decisions-the-paper-leaves-open):

* A path pattern has ``{subject}`` and ``{session}`` placeholders; each matches a BIDS
  label (letters and digits) and takes one value everywhere in the path.
* All problems found in matching the files to the table are reported together (one line
  each), a symbolic link to nothing named as one.
* Non-finite voxels (NaN, +-inf) in a map are not an error: they are counted, set to 0 and
  the count is returned so that the caller can record it in the provenance sidecar.
"""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path

import nibabel as nib
import numpy as np

from . import CONTRASTS
from .errors import InputError
from .jobs import session_label

__all__ = [
    "LABEL_RE",
    "find_maps",
    "check_session_files",
    "dangling_links",
    "broken_link",
    "load_map",
]

#: A BIDS label: letters and digits only (a subject or session label, a placeholder's value).
LABEL_RE = re.compile(r"[A-Za-z0-9]+")
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


def who(session) -> str:
    """Session label for messages: accepts a label string or a (subject, session) pair."""
    if session is None:
        return "unknown session"
    if isinstance(session, (tuple, list)) and len(session) == 2:
        return session_label(*session)
    return str(session)


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
        loose.append(f"(?P<{value}_{i}>{LABEL_RE.pattern})")
        if value in used:
            strict.append(f"(?P={value})")
        else:
            strict.append(f"(?P<{value}>{LABEL_RE.pattern})")
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

    Every session in ``table`` (from :func:`gamer_mril.inputs.load_participants`, already
    narrowed by :func:`gamer_mril.inputs.select_sessions`) must have its three maps
    (``patterns`` maps each of ``qT1``, ``MWF``, ``NDI`` to a path pattern), and every map
    on disk of a selected session must have a table row. Files of sessions that ``selection`` leaves out are ignored; their
    sessions are counted and the count returned (``selection``: a
    :class:`gamer_mril.inputs.Selection`, or anything that answers ``(subject, session) in
    selection``; None keeps every session). A mask (``mask_pattern``) is optional per
    session, but a mask of a selected session that is not in the table is an error. All
    problems are reported in one InputError, one line each.
    """
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
    ignored = {key for key in (*found, *masks)
               if selection is not None and key not in selection}

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
    path = Path(path)
    what = f"{who(session)}: the {contrast} map {path}"
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


