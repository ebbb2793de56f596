"""Whether two maps of a session can be co-registered at all (docs/method.md#23-co-registration-to-ndi):
checked before ANTs runs, so that maps that do not overlap in scanner space, or whose
centres lie further apart than a head could move, stop with a message that names the
session, both files and the distance, rather than with an error deep in ITK.

The check reads each map's foreground (finite voxels above 0: the scaled maps' tissue)
in world (scanner) coordinates, through each file's own voxel-to-world matrix: its
bounding box and its centre of mass. Two maps of one session, scanned in one visit,
overlap and have centres a few centimetres apart at most; a box apart or a centre
hundreds of millimetres away is a header (origin, qform/sform) or a file of another
session.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path

import nibabel as nib
import numpy as np

from .errors import InputError, ants_error, from_ants
from .io import sidecar_path

log = logging.getLogger("gamer_mril")

#: Default of ``preprocessing.max_centre_distance_mm``: the largest distance between the
#: foreground centres of mass of a map and NDI that the co-registration starts from.
MAX_CENTRE_DISTANCE_MM = 50.0


def foreground(data) -> np.ndarray:
    """The voxels that are not background: finite and above 0."""
    values = np.asarray(data)
    return np.isfinite(values) & (values > 0)


def world_box(mask, affine):
    """``(lo, hi)``, the axis-aligned box (mm, scanner coordinates) around the voxels of
    ``mask`` (their outer faces), or None when the mask is empty."""
    idx = np.argwhere(mask)
    if idx.size == 0:
        return None
    lo, hi = idx.min(0) - 0.5, idx.max(0) + 0.5
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1])
                        for z in (lo[2], hi[2])])
    world = corners @ np.asarray(affine)[:3, :3].T + np.asarray(affine)[:3, 3]
    return world.min(0), world.max(0)


def centre_of_mass(mask, affine) -> np.ndarray:
    """The centre (mm, scanner coordinates) of the voxels of ``mask``."""
    centre = np.argwhere(mask).mean(0)
    return np.asarray(affine)[:3, :3] @ centre + np.asarray(affine)[:3, 3]


def alignment(fixed, fixed_affine, moving, moving_affine) -> dict:
    """How two maps lie in scanner space: ``{"boxes_overlap", "centre_distance_mm",
    "fixed_box", "moving_box"}`` (an empty map: None for its box and the distance)."""
    a, b = foreground(fixed), foreground(moving)
    box_a, box_b = world_box(a, fixed_affine), world_box(b, moving_affine)
    if box_a is None or box_b is None:
        return {"boxes_overlap": False, "centre_distance_mm": None, "fixed_box": box_a,
                "moving_box": box_b}
    overlap = bool(np.all(box_a[0] <= box_b[1]) and np.all(box_b[0] <= box_a[1]))
    distance = float(np.linalg.norm(centre_of_mass(a, fixed_affine)
                                    - centre_of_mass(b, moving_affine)))
    return {"boxes_overlap": overlap, "centre_distance_mm": distance, "fixed_box": box_a,
            "moving_box": box_b}


def source_map(path) -> str:
    """The raw map a scaled map was made from (its sidecar's ``image`` input), else the
    path itself: the file whose header a user would fix."""
    try:
        doc = json.loads(Path(sidecar_path(path)).read_text())
        return str(doc["Inputs"]["image"][0]["path"])
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return str(path)


def _box(box) -> str:
    lo, hi = box
    return ", ".join(f"{'xyz'[i]} {lo[i]:.0f}..{hi[i]:.0f}" for i in range(3))


def check_alignment(fixed_path, moving_path, contrast: str, session: str,
                    max_distance_mm: float = MAX_CENTRE_DISTANCE_MM) -> dict:
    """Raise InputError unless the map ``moving_path`` (contrast ``contrast``) and the NDI
    map ``fixed_path`` overlap in scanner space and their foreground centres of mass lie
    within ``max_distance_mm``; return :func:`alignment`'s figures (boxes left out)."""
    fixed_img, moving_img = nib.load(str(fixed_path)), nib.load(str(moving_path))
    found = alignment(np.asarray(fixed_img.dataobj), fixed_img.affine,
                      np.asarray(moving_img.dataobj), moving_img.affine)
    ndi, other = source_map(fixed_path), source_map(moving_path)
    files = f"the {contrast} map {other} and the NDI map {ndi}"
    advice = (f"Check both files' headers: the origin (qoffset_x/y/z) and the qform and "
              f"sform matrices with their codes (e.g. `fslhd FILE`, or nibabel's "
              f"img.get_qform(coded=True) and img.get_sform(coded=True)), and that both "
              f"files belong to {session}")
    distance = found["centre_distance_mm"]
    if distance is None:
        empty = other if found["moving_box"] is None else ndi
        raise InputError(f"{session}: of {files}, {empty} has no voxel above 0 after "
                         f"scaling, so there is nothing to co-register; check the file.")
    if not found["boxes_overlap"]:
        raise InputError(
            f"{session}: {files} do not overlap in scanner space: the {contrast} map's "
            f"foreground lies at {_box(found['moving_box'])} mm, NDI's at "
            f"{_box(found['fixed_box'])} mm, their centres of mass {distance:.1f} mm "
            f"apart; co-registration cannot start from there. {advice}.")
    if distance > max_distance_mm:
        raise InputError(
            f"{session}: the centres of mass of {files} are {distance:.1f} mm apart in "
            f"scanner space, more than preprocessing.max_centre_distance_mm "
            f"({max_distance_mm:g} mm) that co-registration starts from. {advice}; if "
            f"the head really moved that far between the scans, raise "
            f"preprocessing.max_centre_distance_mm.")
    log.info("%s and NDI: foregrounds overlap, centres of mass %.1f mm apart", contrast,
             distance)
    return {"BoxesOverlap": True, "CentreDistance_mm": round(distance, 3)}


@contextlib.contextmanager
def ants_errors(what: str, session: str, files: Mapping):
    """Re-raise an error of ANTs (or ITK) inside the block as a
    :class:`gamer_mril.errors.RegistrationError` whose first line names the session,
    ``what`` (the step) and ``files`` ({role: path}), ANTs' message below it."""
    try:
        yield
    except InputError:
        raise
    except Exception as err:
        if not from_ants(err):
            raise
        raise ants_error(err, what, session, files) from None
