"""The anatomy of the synthetic cohorts (:mod:`gamer_mril.synthetic`) in template space:
tissue fractions from the MNI152 maps shipped with nilearn, a CSF rim, skull and scalp as
shells around the brain, the cerebellum from AAL3, and the planted region whose values
change with EDSS (both corticospinal tracts, or a ball elsewhere)."""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np
from scipy import ndimage

from . import templates

#: Planted region: a tube of this radius (mm) along each corticospinal tract, from the
#: cerebral peduncle through the posterior limb of the internal capsule up into the corona
#: radiata (MNI mm; the right tract mirrors the left), restricted to white matter. Its size
#: (about 34 cm3 of white matter per side at 2 mm) and the effect sizes above were chosen so that the
#: network learns it from the demo's few dozen training sessions at 3.6 mm voxels: with
#: a single 9 mm left tube and 60% of these effects, validation AUC stayed at 0.5-0.75
#: while the network memorised its training set (the effect was in the data: the mean of
#: the region separated the classes). See the README, "The synthetic cohort".
PLANTED_TRACT = ((-16.0, -20.0, -14.0), (-26.0, -20.0, 42.0))
PLANTED_RADIUS_MM = 14.0



@dataclass
class Anatomy:
    """Template-space maps on one grid: tissue fractions and masks."""

    affine: np.ndarray
    maps: dict  # name -> float32 array


def _tube_mask(shape, affine, p0, p1, radius):
    grid = np.indices(shape, dtype=np.float32).reshape(3, -1)
    xyz = affine[:3, :3] @ grid + affine[:3, 3:4]
    p0 = np.asarray(p0, dtype=np.float64)[:, None]
    d = np.asarray(p1, dtype=np.float64)[:, None] - p0
    length2 = (d * d).sum()
    t = np.clip(((xyz - p0) * d).sum(0) / length2, 0, 1) if length2 > 0 else 0.0  # p0 == p1: a ball
    dist = np.linalg.norm(xyz - (p0 + d * t), axis=0)
    return (dist <= radius).reshape(shape)


def balls(sphere) -> list:
    """``sphere`` as a list of ``(x, y, z, radius)`` balls: one 4-tuple or a sequence of
    them (None: none)."""
    if sphere is None:
        return []
    items = list(sphere)
    if len(items) == 4 and all(np.isscalar(v) for v in items):
        items = [items]
    out = []
    for ball in items:
        if len(ball) != 4:
            raise ValueError(f"a ball is (x, y, z, radius) in MNI mm, got {ball}")
        x, y, z, radius = (float(v) for v in ball)
        if radius <= 0:
            raise ValueError(f"the sphere's radius must be positive, got {radius}")
        out.append((x, y, z, radius))
    return out


def planted_region(resolution: int = 2, sphere=None) -> nib.Nifti1Image:
    """The planted region in MNI152, restricted to white matter: both tract tubes, or
    with ``sphere = (x, y, z, radius)`` (MNI mm) one ball there, not mirrored (a focal
    effect elsewhere than the demo's, for benchmarks that must not be tuned to it), or with
    a sequence of such balls their union (a pattern of several regions)."""
    wm = templates.template_tissue("WM", resolution)
    region = np.zeros(wm.shape, dtype=bool)
    if sphere is None:
        for side in (1.0, -1.0):  # left tract, then its mirror image on the right
            p0, p1 = (np.array(p) * [side, 1.0, 1.0] for p in PLANTED_TRACT)
            region |= _tube_mask(wm.shape, wm.affine, p0, p1, PLANTED_RADIUS_MM)
    for x, y, z, radius in balls(sphere):
        region |= _tube_mask(wm.shape, wm.affine, (x, y, z), (x, y, z), radius)
    region &= np.asarray(wm.dataobj) > 0.3
    if not region.any():
        raise ValueError(f"the planted region {sphere} holds no white matter")
    return nib.Nifti1Image(region.astype(np.uint8), wm.affine)


def build_anatomy(resolution: int, sphere=None) -> Anatomy:
    """Tissue fraction maps in template space on a grid padded to hold a whole head."""
    brain_img = templates.template_brain_mask(resolution)
    pad = int(round(40 / resolution))
    base_affine = brain_img.affine.copy()
    affine = base_affine.copy()
    affine[:3, 3] -= pad * resolution

    def padded(a):
        return np.pad(np.asarray(a, dtype=np.float32), pad)

    brain = padded(brain_img.dataobj) > 0.5
    gm = padded(templates.template_tissue("GM", resolution).dataobj) * brain
    wm = padded(templates.template_tissue("WM", resolution).dataobj) * brain
    total = gm + wm
    over = total > 1
    gm[over] /= total[over]
    wm[over] /= total[over]
    csf = np.clip(1.0 - gm - wm, 0, 1) * brain
    dist = ndimage.distance_transform_edt(~brain, sampling=resolution)
    csf = csf + ((dist > 0) & (dist <= 2.5)).astype(np.float32)
    skull = ((dist > 2.5) & (dist <= 8.5)).astype(np.float32)
    scalp = ((dist > 8.5) & (dist <= 14.5)).astype(np.float32)
    cereb = padded(templates.cerebellum_mask(resolution).dataobj)
    planted = padded(planted_region(resolution, sphere).dataobj)
    maps = {
        "GM": gm,
        "WM": wm,
        "CSF": csf,
        "skull": skull,
        "scalp": scalp,
        "brain": brain.astype(np.float32),
        "cerebellum": cereb,
        "planted": planted,
    }
    return Anatomy(affine=affine, maps=maps)


def partial_volume(anat: Anatomy, voxel_mm, resolution: float) -> dict:
    """Maps blurred to the partial volume of a coarser voxel (tissues only)."""
    sig = [np.sqrt(max(v**2 - resolution**2, 0.0)) / 2.355 / resolution for v in voxel_mm]
    out = {}
    for name, arr in anat.maps.items():
        if name in ("GM", "WM", "CSF", "skull", "scalp", "planted") and max(sig) > 0.3:
            out[name] = ndimage.gaussian_filter(arr, sig, mode="constant")
        else:
            out[name] = arr
    return out
