"""One orientation for every map (docs/method.md#21-range-checks-and-scaling): each map is
stored RAS (nibabel's closest canonical orientation: its voxel axes permuted and flipped
so that they run left-to-right, posterior-to-anterior, inferior-to-superior), whatever
orientation its file had. A permutation and flips move no value, so a map stored LAS or
LPS becomes exactly the map stored RAS; the world position of every voxel is unchanged.

A grid whose voxel axes are oblique to the scanner's (a tilted slab) stays oblique after
that. For the NDI map, whose grid becomes the network's (steps 4-5 resample qT1 and MWF
into it and crop it), an oblique grid is resampled (linear) onto an axis-aligned grid of
the same voxel size covering the same field of view, so that the network reads every
session in the same axes: a session stored oblique reaches the network as its RAS copy
would, to interpolation. qT1 and MWF are registered to NDI and resampled once, in step 4;
they are only reordered here.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np

#: Voxel axes more than this many degrees off the world axes make a grid oblique.
OBLIQUE_DEG = 1.0


def axis_codes(affine) -> str:
    """The orientation of a grid as three letters, e.g. ``"LAS"``."""
    return "".join(nib.aff2axcodes(np.asarray(affine, dtype=np.float64)))


def obliquity_deg(affine) -> float:
    """The largest angle, in degrees, between a voxel axis and its nearest world axis."""
    return float(np.degrees(np.max(nib.affines.obliquity(np.asarray(affine, float)))))


def axis_aligned_grid(shape, affine):
    """``(shape, affine)`` of the axis-aligned RAS grid with the voxel size of ``affine``
    that holds every corner of the grid ``(shape, affine)``."""
    affine = np.asarray(affine, dtype=np.float64)
    voxel = nib.affines.voxel_sizes(affine)
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in shape[:3]], indexing="ij"))
    world = nib.affines.apply_affine(affine, corners.reshape(3, -1).T)
    low, high = world.min(0), world.max(0)
    new_shape = tuple(int(n) for n in np.ceil((high - low) / voxel - 1e-6).astype(int) + 1)
    new_affine = np.diag([*voxel, 1.0])
    new_affine[:3, 3] = low
    return new_shape, new_affine


def to_ras(data, affine, *, resample_oblique: bool = False) -> tuple:
    """``(data, affine, facts)``: the map in its closest canonical (RAS) orientation and,
    with ``resample_oblique``, an oblique grid resampled (linear, 0 outside) onto the
    axis-aligned grid of :func:`axis_aligned_grid`. ``facts`` records the stored
    orientation, its obliquity and what was done (for the step's sidecar)."""
    data = np.asarray(data, dtype=np.float32)
    affine = np.asarray(affine, dtype=np.float64)
    stored = axis_codes(affine)
    oblique = obliquity_deg(affine)
    img = nib.as_closest_canonical(nib.Nifti1Image(data, affine))
    out, out_affine = np.asarray(img.dataobj, dtype=np.float32), img.affine
    resampled = bool(resample_oblique and oblique > OBLIQUE_DEG)
    if resampled:
        from nibabel.processing import resample_from_to

        target = axis_aligned_grid(out.shape, out_affine)
        img = resample_from_to(nib.Nifti1Image(out, out_affine), target, order=1,
                               mode="constant", cval=0.0)
        out, out_affine = np.asarray(img.dataobj, dtype=np.float32), img.affine
    facts = {"StoredOrientation": stored, "Orientation": axis_codes(out_affine),
             "StoredObliquity_deg": round(oblique, 3),
             "ResampledToAxisAligned": resampled}
    return out, out_affine, facts
