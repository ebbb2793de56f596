"""The geometry of a session's grids (docs/method.md#25-crop, #28-quality-control-numbers):
how much of the brain the crop of step 5 cuts, and the size it would need to keep it
whole. The crop job records these facts and stops on a large cut
(``preprocessing.max_crop_cut_share_stop``); :mod:`gamer_mril.qc` flags a smaller one
(``qc.max_crop_cut_share``) and coarse voxels.
"""

from __future__ import annotations

import numpy as np

from .errors import InputError
from .spaces import CropBox, apply_crop, bounding_box

#: The crop job stops when it would cut more than this share of the brain's voxels
#: (``preprocessing.max_crop_cut_share_stop``).
MAX_CROP_CUT_SHARE_STOP = 0.10


def shape_text(shape) -> str:
    """``[a, b, c]``, as config.yaml writes a shape."""
    return "[" + ", ".join(str(int(n)) for n in shape) + "]"


def crop_cut(mask, box: CropBox) -> dict:
    """The facts of the crop's cut of the brain ``mask`` (boolean, full grid) by ``box``:
    the brain's voxels, those outside the box and their share, the brain's bounding box
    in voxels, the smallest crop shape that keeps it whole (the bounding box, or the
    box's shape where that is larger), and per axis whether the brain reaches the grid's
    edge (1) or not (0)."""
    mask = np.asarray(mask, dtype=bool)
    brain = int(mask.sum())
    kept = int(apply_crop(mask, box).sum())
    lo, hi = bounding_box(mask)
    extent = [int(h - low) for low, h in zip(lo, hi)]
    return {"BrainVoxels": brain, "BrainVoxelsOutsideCrop": brain - kept,
            "BrainCutShare": float((brain - kept) / max(brain, 1)),
            "BrainBoundingBox_vox": extent,
            "CropShapeNeeded": [max(e, int(s)) for e, s in zip(extent, box.shape)],
            "BrainAtGridEdge": [int(low == 0 or h == n)
                                for low, h, n in zip(lo, hi, mask.shape)]}


def check_crop_cut(facts: dict, crop_shape, session: str, mask_path,
                   max_crop_cut_share_stop: float = MAX_CROP_CUT_SHARE_STOP) -> None:
    """:class:`InputError` naming the session, the brain mask, ``crop_shape`` and the size
    needed when the crop would cut more than ``max_crop_cut_share_stop`` of the brain
    (``facts``: :func:`crop_cut`)."""
    share = facts["BrainCutShare"]
    if share <= max_crop_cut_share_stop:
        return
    raise InputError(
        f"{session}: crop_to_brain would cut {100 * share:.1f}% of the brain "
        f"({facts['BrainVoxelsOutsideCrop']} of {facts['BrainVoxels']} voxels of the brain "
        f"mask {mask_path}), more than preprocessing.max_crop_cut_share_stop "
        f"{max_crop_cut_share_stop:g}: the brain's bounding box is "
        f"{shape_text(facts['BrainBoundingBox_vox'])} voxels, preprocessing.crop_shape "
        f"{shape_text(crop_shape)}; set preprocessing.crop_shape to at least "
        f"{shape_text(facts['CropShapeNeeded'])} (or check the brain mask)")
