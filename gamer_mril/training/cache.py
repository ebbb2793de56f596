"""The session cache (docs/method.md#5-training): every session's three preprocessed maps
decoded once into one memory-mapped array, read back a batch at a time.

:func:`build_cache` decodes every session's three preprocessed maps (cropped grid, values
in [0, 1]) once into ``images.npy``, a plain ``.npy`` array of shape ``(N, 3, D, H, W)`` in
float16, plus ``index.tsv`` (row, subject, session, age, edss, label). :func:`open_cache`
memory-maps it; :meth:`SessionCache.batch` reads a batch of rows (each distinct row copied
once, in file order, straight to its place in the batch; page-locked memory when the batch
goes to a GPU), converts it to float32 and puts it on the device. On a GPU the float16 rows
travel to the device and are converted there, which halves the transfer. float16 keeps ~3
significant digits, ample for maps in [0, 1] (rounding error at most 2**-11, about 5e-4,
near 1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from numpy.lib.format import open_memmap

from .. import CONTRASTS
from ..io import atomic_path, atomic_write_text
from ..split import severity_label

IMAGES_FILE = "images.npy"
INDEX_FILE = "index.tsv"
INDEX_COLUMNS = ("row", "subject", "session", "age", "edss", "label")

#: Tolerance on the [0, 1] value range of cached images (interpolation overshoot).
_RANGE_TOL = 1e-3


def _records(rows: Sequence[Mapping], contrasts: tuple) -> list:
    """The rows of :func:`build_cache` checked (every key and contrast there, age and EDSS
    finite), with a ``name`` for messages."""
    records = []
    for r in rows:
        missing = [k for k in ("subject", "session", "age", "edss", "paths") if k not in r]
        if missing:
            raise ValueError(f"build_cache: row {dict(r)!r} lacks {missing}")
        name = f"subject {r['subject']} session {r['session']}"
        lacking = [c for c in contrasts if c not in r["paths"]]
        if lacking:
            raise ValueError(f"{name}: no path for contrast(s) {lacking}")
        age, edss = float(r["age"]), float(r["edss"])
        if not math.isfinite(age) or not math.isfinite(edss):
            raise ValueError(f"{name}: age {r['age']!r} and EDSS {r['edss']!r} must be finite")
        records.append(dict(subject=str(r["subject"]), session=str(r["session"]), age=age,
                            edss=edss, name=name, paths=r["paths"]))
    return records


def _load(rec: Mapping, contrast: str):
    """The (lazily read) image of one session's map; ``ValueError`` unless it is 3D."""
    import nibabel as nib

    img = nib.load(str(rec["paths"][contrast]))
    if len(img.shape) != 3:
        raise ValueError(f"{rec['name']}: {contrast} map {rec['paths'][contrast]} is not "
                         f"3D (shape {img.shape})")
    return img


def _checked_map(rec: Mapping, contrast: str, shape: tuple, first: Mapping) -> np.ndarray:
    """One map's values as float32, checked (the cache's shape, finite, in [0, 1] up to
    the tolerance) and clipped to [0, 1]; ``first``: the record the shape came from."""
    img = _load(rec, contrast)
    if tuple(img.shape) != shape:
        raise ValueError(
            f"{rec['name']}: {contrast} map has shape {tuple(img.shape)}, but the "
            f"cache's shape is {shape} (from subject {first['subject']} "
            f"session {first['session']}); all maps must share the "
            f"cropped grid")
    data = np.asarray(img.get_fdata(dtype=np.float32))
    if not np.isfinite(data).all():
        raise ValueError(f"{rec['name']}: {contrast} map has "
                         f"{int((~np.isfinite(data)).sum())} non-finite voxels")
    lo, hi = float(data.min()), float(data.max())
    if lo < -_RANGE_TOL or hi > 1 + _RANGE_TOL:
        raise ValueError(f"{rec['name']}: {contrast} values span [{lo:g}, {hi:g}]; "
                         f"the cache takes preprocessed maps scaled to [0, 1]")
    return np.clip(data, 0.0, 1.0)


def build_cache(rows: Sequence[Mapping], out_dir, contrasts: Sequence[str] = CONTRASTS) -> None:
    """Decode the sessions' maps once into ``out_dir/images.npy`` and ``out_dir/index.tsv``.

    ``rows``: one mapping per session with ``subject``, ``session``, ``age`` (years),
    ``edss`` and ``paths`` = {contrast: path of the preprocessed map in the cropped grid}.
    Row order is kept. Every map must be 3D, finite and in [0, 1] (a tolerance of 1e-3
    for interpolation overshoot, clipped away), and all maps of all sessions must share
    one shape; otherwise ``ValueError`` naming the session. Both files are written under
    temporary names and renamed when complete.
    """
    rows = list(rows)
    if not rows:
        raise ValueError("build_cache: no sessions given")
    contrasts = tuple(contrasts)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = _records(rows, contrasts)

    shape = tuple(_load(records[0], contrasts[0]).shape)
    with atomic_path(out_dir / IMAGES_FILE, suffix=".npy") as tmp:
        images = open_memmap(tmp, mode="w+", dtype=np.float16,
                             shape=(len(records), len(contrasts)) + shape)
        for i, rec in enumerate(records):
            for c, contrast in enumerate(contrasts):
                images[i, c] = _checked_map(rec, contrast, shape, records[0])
        images.flush()
        del images

    index = pd.DataFrame({
        "row": np.arange(len(records)),
        "subject": [r["subject"] for r in records],
        "session": [r["session"] for r in records],
        "age": [r["age"] for r in records],
        "edss": [r["edss"] for r in records],
    })
    index["label"] = severity_label(index["edss"])
    dup = index.duplicated(["subject", "session"])
    if dup.any():
        (out_dir / IMAGES_FILE).unlink()
        row = index[dup].iloc[0]
        raise ValueError(f"subject {row['subject']} session {row['session']} is given twice")
    atomic_write_text(out_dir / INDEX_FILE, index.to_csv(sep="\t", index=False))


@dataclass
class SessionCache:
    """A memory-mapped session cache; see :func:`open_cache`."""

    images: np.memmap          # (N, 3, D, H, W) float16, read-only
    index: pd.DataFrame        # row, subject, session, age, edss, label
    path: Path

    @property
    def shape(self) -> tuple:
        """(N, contrasts, D, H, W)."""
        return tuple(self.images.shape)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def rows_for(self, pairs) -> np.ndarray:
        """Row indices of (subject, session) pairs, in the order given.

        ``pairs``: an iterable of (subject, session) or a DataFrame with those columns
        (e.g. a slice of the split table). ``ValueError`` naming a session not cached.
        """
        if isinstance(pairs, pd.DataFrame):
            pairs = zip(pairs["subject"], pairs["session"])
        lookup = {(s, t): i for s, t, i in zip(self.index["subject"], self.index["session"],
                                                self.index["row"])}
        out, missing = [], []
        for subject, session in pairs:
            key = (str(subject), str(session))
            if key in lookup:
                out.append(lookup[key])
            else:
                missing.append(key)
        if missing:
            raise ValueError(f"{len(missing)} session(s) not in the cache {self.path}, e.g. "
                             f"subject {missing[0][0]} session {missing[0][1]}")
        return np.asarray(out, dtype=np.int64)

    def read(self, indices, pin_memory: bool = False) -> torch.Tensor:
        """float16 CPU tensor (B, 3, D, H, W) of the given rows, in the given order.

        Each distinct row is copied once from the memory map, straight into its place in
        the output, in increasing row order (sequential in the file); a repeated row is
        copied from its first copy. ``pin_memory`` puts the output in page-locked memory
        (for a fast copy to a GPU).
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"row index out of range [0, {len(self)})")
        out = torch.empty((idx.size,) + self.shape[1:], dtype=torch.float16,
                          pin_memory=pin_memory)
        dest = out.numpy()
        first = {}
        for j in np.argsort(idx, kind="stable"):
            row = int(idx[j])
            if row in first:
                dest[j] = dest[first[row]]
            else:
                first[row] = j
                dest[j] = self.images[row]
        return out

    def batch(self, indices, device="cpu"):
        """(x float32 (B, 3, D, H, W), age, label, edss), all float32 tensors on ``device``."""
        device = torch.device(device)
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        # float16 travels to the device and is converted there (half the transfer)
        x = self.read(idx, pin_memory=device.type == "cuda").to(device).to(torch.float32)
        meta = self.index.iloc[idx]
        age, label, edss = (torch.as_tensor(meta[col].to_numpy(np.float32), device=device)
                            for col in ("age", "label", "edss"))
        return x, age, label, edss


def open_cache(out_dir) -> SessionCache:
    """Memory-map a cache written by :func:`build_cache` (read-only)."""
    out_dir = Path(out_dir)
    images = np.load(out_dir / IMAGES_FILE, mmap_mode="r")
    index = pd.read_csv(out_dir / INDEX_FILE, sep="\t",
                        dtype={"subject": str, "session": str}, keep_default_na=False)
    missing = [c for c in INDEX_COLUMNS if c not in index.columns]
    if missing:
        raise ValueError(f"{out_dir / INDEX_FILE} lacks columns {missing}")
    if images.ndim != 5 or images.dtype != np.float16:
        raise ValueError(f"{out_dir / IMAGES_FILE}: expected a float16 array (N, C, D, H, W), "
                         f"got {images.dtype} {images.shape}")
    if len(index) != images.shape[0] or not np.array_equal(index["row"], np.arange(len(index))):
        raise ValueError(f"{out_dir}: index.tsv ({len(index)} rows) does not match "
                         f"images.npy ({images.shape[0]} sessions)")
    index = index.astype({"age": float, "edss": float, "label": int, "row": int})
    return SessionCache(images=images, index=index, path=out_dir)
