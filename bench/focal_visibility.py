#!/usr/bin/env python
"""Can a voxel-wise comparison see the planted effect at all, in this grid?

For a synthetic cohort, the network inputs are made from the ground truth
(``bench/truth_cache.py``, in the NDI grid as the workflow makes them, or ``--space
aligned``: the head pose undone), and two things are measured:

* how much the planted region moves between sessions in that grid: the spread (standard
  deviation over sessions, mm) of its centre, and the largest share of sessions whose
  region holds one same voxel;
* what a two-sample t-test per voxel (severe against mild, every session) sees: per
  contrast, the largest |t| inside the region (voxels in the region in at least
  ``--share`` of the sessions) against the largest outside it, and the rank of the first
  region voxel when the cerebrum's voxels are sorted by |t| (0: the strongest voxel of
  the whole cerebrum lies in the region).

A region whose strongest voxels do not stand out from the rest of the cerebrum cannot be
found from the data by any classifier that does not already know where to look. Reads the
generator's ground truth, so a benchmark, never part of the workflow.

    python bench/focal_visibility.py COHORT [--crop 32 32 38] [--space aligned]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage, stats

from truth_cache import SPACES, build_truth_cache, truth_dir  # bench/truth_cache.py

from gamer_mril import CONTRASTS
from gamer_mril.training import open_cache


def region_spread(masks, voxel_mm: float) -> dict:
    """Spread of the region over sessions: sd of its centre along each axis (mm) and the
    largest share of sessions whose mask holds one same voxel."""
    masks = np.asarray(masks, dtype=bool)
    centres = np.array([ndimage.center_of_mass(m) for m in masks])
    return dict(centre_sd_mm=tuple(float(v) for v in centres.std(axis=0) * voxel_mm),
                largest_overlap=float(masks.mean(axis=0).max()))


def voxel_contrast(images, labels, region, cerebrum) -> pd.DataFrame:
    """Per contrast: the largest |t| (severe against mild, two-sample t-test per voxel)
    inside ``region`` and outside it within ``cerebrum``, and the rank of the first
    region voxel among the cerebrum's voxels sorted by |t| (largest first)."""
    images = np.asarray(images, dtype=np.float64)
    labels = np.asarray(labels, dtype=int)
    region, cerebrum = np.asarray(region, bool), np.asarray(cerebrum, bool)
    rows = []
    for c in range(images.shape[1]):
        t, _ = stats.ttest_ind(images[labels == 1, c], images[labels == 0, c], axis=0)
        t = np.nan_to_num(np.abs(t))[cerebrum]
        inside = region[cerebrum]
        order = np.argsort(-t, kind="stable")
        rows.append(dict(contrast=c, max_t_region=float(t[inside].max()),
                         max_t_outside=float(t[~inside].max()),
                         first_region_rank=int(np.argmax(inside[order]))))
    return pd.DataFrame(rows)


def measure(cohort: Path, crop=(32, 32, 38), space="native", share=0.3) -> tuple:
    """(region spread, voxel-contrast table) of ``cohort``'s truth inputs in ``space``."""
    inputs = truth_dir(cohort, space)
    _, planted = build_truth_cache(cohort, inputs, crop, with_planted=True, space=space)
    cache = open_cache(inputs / "cache")
    keys = list(zip(cache.index["subject"], cache.index["session"]))
    masks = np.array([planted[k] for k in keys])
    images = np.asarray(cache.images, dtype=np.float32)
    first = nib.load(next((inputs / "maps").glob("*.nii.gz")))
    voxel_mm = float(np.mean(first.header.get_zooms()[:3]))
    spread = region_spread(masks, voxel_mm)
    cerebrum = (images > 0).any(axis=1).mean(axis=0) >= 0.5
    table = voxel_contrast(images, cache.index["label"], masks.mean(axis=0) >= share,
                           cerebrum)
    table["contrast"] = [CONTRASTS[c] for c in table["contrast"]]
    return spread, table


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cohort", type=Path)
    ap.add_argument("--crop", type=int, nargs=3, default=(32, 32, 38))
    ap.add_argument("--space", choices=SPACES, default="native")
    ap.add_argument("--share", type=float, default=0.3)
    a = ap.parse_args(argv)
    spread, table = measure(a.cohort, tuple(a.crop), a.space, a.share)
    print(f"{a.space}: region centre sd (mm) "
          + " / ".join(f"{v:.1f}" for v in spread["centre_sd_mm"])
          + f"; largest share of sessions on one voxel {spread['largest_overlap']:.2f}")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.1f}"))


if __name__ == "__main__":
    main()
