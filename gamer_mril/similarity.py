"""Similarity and overlap measures of images and masks, used by the preprocessing steps
that record quality-control figures (docs/method.md#28-quality-control-numbers):

* :func:`normalized_mutual_information` -- how well a co-registered map matches the NDI
  map it was registered to (recorded by step 4, resampling);
* :func:`overlap` -- Dice and Jaccard of two mask files, by nipype's ``Overlap`` (recorded
  by the warp of the brain mask to MNI152).

The QC stage (:mod:`gamer_mril.qc`) reads these figures from the sidecars; it does not
compute them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def normalized_mutual_information(a, b, mask, bins: int = 32) -> float:
    """Normalized mutual information, MI / mean(H(a), H(b)) (scikit-learn's
    ``normalized_mutual_info_score``), of two images' intensities inside ``mask``, each
    cut into ``bins`` equally populated bins: 1 when one image's bins determine the
    other's, near 0 when they are independent. Insensitive to the maps' units and
    contrast direction (qT1 is bright where NDI is dark)."""
    # deferred: scikit-learn takes about a second to import; only the resampling job needs it
    from sklearn.metrics import normalized_mutual_info_score

    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        raise ValueError("the mask is empty")

    def binned(x):
        x = np.asarray(x, dtype=np.float64)[mask]
        edges = np.unique(np.quantile(x, np.linspace(0, 1, int(bins) + 1)[1:-1]))
        return np.searchsorted(edges, x, side="right")

    return float(normalized_mutual_info_score(binned(a), binned(b)))


def overlap(mask, reference, workdir) -> dict:
    """Dice and Jaccard of two binary mask files on one grid, by nipype's
    ``nipype.algorithms.metrics.Overlap`` (run in ``workdir``, which receives its
    difference image). Returns ``{"dice": ..., "jaccard": ...}``."""
    os.environ.setdefault("NIPYPE_NO_ET", "1")    # no version check over the network
    from nipype.algorithms.metrics import Overlap   # deferred: 0.5 s, one QC job needs it

    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    # absolute paths: nipype runs in workdir
    node = Overlap(volume1=str(Path(mask).resolve()), volume2=str(Path(reference).resolve()),
                   out_file=str(workdir / "overlap_diff.nii.gz"))
    cwd = os.getcwd()
    try:
        os.chdir(workdir)                       # nipype writes its own files here
        result = node.run()
    finally:
        os.chdir(cwd)
    # the per-label indices: the averaged ones are rounded to 5 decimals; binary masks
    # have the one label 1
    dice, jaccard = result.outputs.roi_di, result.outputs.roi_ji
    if len(dice) != 1:
        raise ValueError(f"{mask} and {reference} must be binary masks (labels 0 and 1)")
    return {"dice": float(dice[0]), "jaccard": float(jaccard[0])}
