"""Grids and spaces the stages share (docs/method.md#25-crop, #26-registration-to-mni152).

The crop box of a session's NDI grid, cropping and its exact inverse, the cropped grid's
affine, and the ANTs transform lists between a session's grids and MNI152. Preprocessing
writes these boxes and transforms; training, relevance, the baselines and the assessment
read them back, so they live here, below every stage, and every stage imports them from
here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CropBox:
    """A box in a voxel grid: ``start`` may be negative or run past the grid (padding)."""

    start: tuple
    shape: tuple

    def to_dict(self) -> dict:
        return {"start": [int(v) for v in self.start], "shape": [int(v) for v in self.shape]}

    @classmethod
    def from_dict(cls, d: dict) -> "CropBox":
        return cls(tuple(int(v) for v in d["start"]), tuple(int(v) for v in d["shape"]))


def bounding_box(mask):
    """``(lo, hi)`` of the True voxels, lo inclusive and hi exclusive, per axis."""
    idx = np.argwhere(np.asarray(mask, dtype=bool))
    if idx.size == 0:
        raise ValueError("cannot compute a bounding box of an empty mask")
    return idx.min(axis=0), idx.max(axis=0) + 1


def crop_box(mask, shape) -> CropBox:
    """A box of the given shape centred on the bounding box of ``mask``.

    ``start = lo + floor((hi - lo - shape) / 2)``: the leftover (or the padding) is split
    evenly, the odd voxel going to the high side for cropping and to the low side for
    padding.
    """
    lo, hi = bounding_box(mask)
    shape = tuple(int(s) for s in shape)
    start = tuple(int(lo[i] + (hi[i] - lo[i] - shape[i]) // 2) for i in range(3))
    return CropBox(start, shape)


def _overlap(box: CropBox, full_shape):
    """Slices of the full grid and of the box that overlap."""
    src, dst = [], []
    for s, n, size in zip(box.start, box.shape, full_shape):
        a, b = max(s, 0), min(s + n, size)
        if b <= a:
            return None
        src.append(slice(a, b))
        dst.append(slice(a - s, b - s))
    return tuple(src), tuple(dst)


def apply_crop(data, box: CropBox, fill=0):
    """The part of ``data`` inside ``box``; voxels of the box outside the grid get ``fill``.

    Axes after the first three (e.g. the volumes of a 4D image) are kept whole.
    """
    data = np.asarray(data)
    out = np.full(tuple(box.shape) + data.shape[3:], fill, dtype=data.dtype)
    ov = _overlap(box, data.shape[:3])
    if ov is not None:
        src, dst = ov
        out[dst] = data[src]
    return out


def uncrop(cropped, box: CropBox, full_shape, fill=0):
    """Put a cropped array back in its full grid (the exact inverse of :func:`apply_crop`)."""
    cropped = np.asarray(cropped)
    if tuple(cropped.shape[:3]) != tuple(box.shape):
        raise ValueError(f"array of shape {cropped.shape} does not match crop box {box.shape}")
    out = np.full(tuple(full_shape), fill, dtype=cropped.dtype)
    ov = _overlap(box, full_shape)
    if ov is not None:
        src, dst = ov
        out[src] = cropped[dst]
    return out


def crop_affine(affine, box: CropBox):
    """Affine of the cropped grid: cropped voxel v maps where full voxel start + v does."""
    shift = np.eye(4)
    shift[:3, 3] = box.start
    return np.asarray(affine, dtype=np.float64) @ shift


def to_template_transforms(xfm: dict):
    """Transform list (and inversion flags) taking session images to the template grid.

    ``xfm``: the template registration of step 2b (``affine``, and ``inverse_warp``
    unless it was affine only), which relates MNI152 to the qT1 grid, and ``coreg``, the
    qT1 -> NDI co-registration of step 3, for images of the NDI or cropped grid (without
    it, images of the qT1 grid). For a template point the list reads: undo the affine,
    the inverse warp, then undo the co-registration (ANTs applies a list's first transform
    to the reference grid's points first).
    """
    tlist, inv = [xfm["affine"]], [True]
    if "inverse_warp" in xfm:
        tlist, inv = tlist + [xfm["inverse_warp"]], inv + [False]
    if "coreg" in xfm:
        tlist, inv = tlist + [xfm["coreg"]], inv + [True]
    return tlist, inv


def from_template_transforms(xfm: dict):
    """Transform list (and inversion flags) taking template images into the session grid
    (``xfm`` as in :func:`to_template_transforms`, with ``warp`` unless affine only): a
    session point goes through the co-registration to the qT1 grid, then the warp and the
    affine to MNI152."""
    tlist = ([xfm["coreg"]] if "coreg" in xfm else []) + \
        ([xfm["warp"]] if "warp" in xfm else []) + [xfm["affine"]]
    return tlist, [False] * len(tlist)
