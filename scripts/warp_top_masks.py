"""The top-N mask of every scenario of one session, warped to MNI152 (nearest
neighbour) with the session's saved transforms (METHOD.md 7, Fig. 6)."""
import logging

import nibabel as nib
import numpy as np

from gamer_mril import assessment as A
from gamer_mril.io import save_nifti
from gamer_mril.jobs import job

i, o, p = snakemake.input, snakemake.output, snakemake.params
log = logging.getLogger("gamer_mril")
with job(snakemake) as j:
    xfm = {"affine": i.affine, "warp": i.warp, "inverse_warp": i.inverse_warp}
    k = list(p.levels).index(int(p.level))
    for n in p.scenarios:
        img = nib.load(i[f"mask_{n:02d}"])
        lvl = np.asarray(img.dataobj)
        individual = lvl.ndim == 4
        vols = np.moveaxis(lvl, -1, 0) if individual else lvl[None]
        masks = A.masks_from_levels(vols, p.levels)[k]           # (V, D, H, W)
        warped, affine = A.warp_masks_to_template(masks, img.affine, xfm,
                                                  p.template_resolution)
        out = np.moveaxis(warped, 0, -1) if individual else warped[0]
        save_nifti(out.astype(np.uint8), affine, o[f"top_{n:02d}"])
        names = list(A.CONTRASTS) if individual else ["combined"]
        facts = dict(scenario=int(n), level=int(p.level), volumes=names,
                     interpolation="nearestNeighbor",
                     session_voxels={v: int(masks[c].sum()) for c, v in enumerate(names)},
                     template_voxels={v: int(warped[c].sum()) for c, v in enumerate(names)})
        log.info("scenario %2d: %s", n, facts["template_voxels"])
        j.sidecar(o[f"top_{n:02d}"], facts,
                  inputs={"mask": i[f"mask_{n:02d}"], **xfm})
